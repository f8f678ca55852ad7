//! Backends the conformance suites run through. [`Cpu`] is the reference and is always available;
//! `Npu` (feature `npu`, on by default) runs dsnpu's kernels on a device or the simulator.
//!
//! A backend is a value implementing [`Backend`] plus one trait per operator family:
//! [`dense::DenseOps`], [`moe::MoeOps`], [`mla::MlaOps`]. The family methods take host arrays and return
//! host arrays with exactly the signatures of the free reference functions, so a suite can run any
//! backend and compare it with the reference. A device backend uploads, launches and downloads inside
//! each method; how it does so is its own business.
//!
//! Contract for implementors: validate like the reference does (the same input must be rejected, with
//! an [`OpsError`](crate::OpsError) naming the same operator), return
//! [`OpsError::Unsupported`](crate::OpsError::Unsupported) for an operator or dtype not implemented yet
//! (the suites report that as a skip, not a pass), and never panic.
//!
//! The family traits have generic methods, so they are used through generics (`B: DenseOps`), not as
//! trait objects.
pub mod dense;
pub mod fallback;
mod family;
pub mod mla;
pub mod moe;
#[cfg(feature = "npu")]
pub mod npu;

pub use dense::DenseOps;
pub use fallback::{Fallback, FallbackCounts, FallbackReport, Op, OpCount, OpTransfers};
pub use mla::MlaOps;
pub use moe::MoeOps;
#[cfg(feature = "npu")]
pub use npu::Npu;

/// The CPU reference backend: calls the functions of this crate directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

/// What every backend can say about itself.
pub trait Backend: Send + Sync {
    /// A short name for reports (`"cpu"`, `"sim"`, `"npu:0"`).
    fn name(&self) -> String;

    /// Whether `op` (an operator name, as in [`OpsError::Unsupported`](crate::OpsError)) runs on a
    /// kernel of this backend. The conformance harness fails, rather than skips, a case where such an
    /// op answers `Unsupported`.
    fn has_kernel(&self, op: &str) -> bool {
        let _ = op;
        false
    }
}

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }
}
