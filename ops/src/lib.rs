//! Operator contracts for DeepSeek-V3/R1 inference and their CPU reference implementations.
//!
//! # Contract of this crate
//! - Every operator validates shapes, dtypes and index ranges and returns [`OpsError`] naming the
//!   operator and the offending argument. No operator panics on bad input.
//! - Element types are [`Float`] (`f32`, `f16`, `bf16`); all accumulation happens in `f32` and results are
//!   rounded once, on store, to the output type.
//! - The CPU references are written for clarity, not speed: they are the oracle every device backend is
//!   checked against by the suites in [`conformance`].
//! - Semantics follow the Ascend operator library (aclnn / torch_npu names) where one exists; each module
//!   documents the exact convention it follows.
//! - `half` and `ndarray` are re-exported so callers (and the conformance macros) name exactly the
//!   versions this crate's signatures use.

pub mod activation;
pub mod backend;
pub mod conformance;
pub mod dtype;
pub mod error;
pub mod linear;
pub mod mla;
pub mod moe;
pub mod norm;
pub mod rope;
pub mod sampling;

pub use dtype::{DType, Float};

// Re-exported so the conformance macros (and users) name the same versions this crate uses.
pub use error::{OpsError, Result};
pub use half;
pub use ndarray;
