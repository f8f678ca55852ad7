//! Every conformance suite (dense, MoE, MLA × f32, f16, bf16) run on the CPU reference backend.
//!
//! The CPU backend is the reference itself, so value comparisons pass by construction; what this checks
//! is that the reference accepts every case of the shape matrices (degenerate and ragged ones included),
//! rejects the malformed inputs each suite probes, and satisfies the reference-independent invariants
//! the suites assert (softmax rows sum to one, argmax picks a first maximum, ...). It is also the
//! template for a device backend: replace `Cpu` with the backend's constructor.

dsnpu_ops::conformance_suite!(dsnpu_ops::backend::Cpu);
