//! The conformance harness: tolerances, seeded cases, and suites any backend can be run through.
//!
//! - [`tolerance`]: per-dtype [`Tolerance`](tolerance::Tolerance)s and `assert_close`.
//! - [`cases`]: the seeded [`CaseRng`](cases::CaseRng) and the shape matrices.
//! - [`dense`], [`moe`], [`mla`]: one suite function per operator, generic over the backend
//!   ([`crate::backend`]) and the element type, comparing the backend with the CPU reference (the
//!   top-p sampling suite is written in [`sampling`] and the fused MLA cache write's in
//!   [`mla_cache_write`]; `dense` and `mla` re-export them).
//! - [`observe`], [`runner`]: the suites run as a program (`dsnpu verify`) instead of as tests,
//!   reporting per operator and dtype instead of panicking.
//!
//! To check a new backend, implement the family traits of [`crate::backend`] for it and, in an
//! integration test, write `dsnpu_ops::conformance_suite!(MyBackend::new());`: it generates one `#[test]`
//! per operator and dtype (modules `dense_f32`, `moe_bf16`, ...).
pub mod cases;
pub mod dense;
pub mod mla;
pub mod mla_cache_write;
pub mod mla_prefill;
pub mod moe;
pub mod observe;
pub mod runner;
pub mod sampling;
pub mod tolerance;

/// Every conformance suite (dense, MoE, MLA) for `$backend`, as `#[test]` functions. See the module docs.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::dense_conformance!($backend);
        $crate::moe_conformance!($backend);
        $crate::mla_conformance!($backend);
    };
}
