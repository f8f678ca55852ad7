//! Backends the conformance suites run through. [`Cpu`] is the reference and is always available.
pub mod dense;
pub mod mla;
pub mod moe;

/// The CPU reference backend: calls the functions of this crate directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

/// What every backend can say about itself.
pub trait Backend: Send + Sync {
    fn name(&self) -> String;
}

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }
}
