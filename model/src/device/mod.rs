//! The device-resident model: [`Tensor`]s that know where they live, weights uploaded once
//! ([`weights`]), the paged latent cache in device memory, and [`Engine`], a step-by-step API over them
//! in which every operator of a step runs on the device (see [`engine`] for the contract), and [`ep`], the
//! engine as one rank of an expert-parallel group over HCCL.

pub mod engine;
pub mod ep;
mod ops;
mod prefix;
pub mod tensor;
pub mod weights;

pub use engine::{Engine, EngineOptions, EngineStats, PhaseStats};
pub use ep::{EpEngine, EpGroup, HcclBytes};
pub use tensor::{DType, Tensor};

/// The kernels' name for a rope layout.
pub(crate) fn kernel_layout(layout: dsnpu_ops::rope::RopeLayout) -> dsnpu_kernels::RopeLayout {
    match layout {
        dsnpu_ops::rope::RopeLayout::Interleaved => dsnpu_kernels::RopeLayout::Interleaved,
        dsnpu_ops::rope::RopeLayout::HalfSplit => dsnpu_kernels::RopeLayout::HalfSplit,
    }
}

// Engines move between threads (the Python extension drops and calls them on any thread): a field
// that is not `Send` fails the build here rather than in a user. That is sound because the runtime
// binds the device's context on the calling thread before every AscendCL call, drops included. The
// models are `Sync` too, as pyo3's classes must be (the Python classes still call them one at a time).
const _: fn() = || {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
    send::<EpEngine>();
    send_sync::<crate::DeepseekV3>();
};
