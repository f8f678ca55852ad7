//! Every conformance suite (dense, MoE, MLA × f32, f16, bf16) run on the device backend, [`Npu`] on
//! device 0: the simulator here (the test binary finds `libdsnpu_sim.so` next to itself), an NPU where
//! one and the AI Core build exist.
//!
//! The suites must pass, under the harness's default tolerances, for every operator that has a kernel:
//! rms_norm, add_rms_norm, rope, linear, batched_matmul (through the linear kernel), silu_mul, embedding
//! (`gather_rows_<t>`), argmax, softmax, sample_top_p (`sample_top_p_<t>`, ids equal to the CPU
//! sampler's), every MoE operator, mla_cache_write_fused (`mla_cache_write_<t>`), mla_decode and
//! mla_prefill; the trait's unfused mla_cache_write prints skips until it has a kernel.

mod npu_backend;
use npu_backend::npu;

dsnpu_ops::conformance_suite!(npu());
