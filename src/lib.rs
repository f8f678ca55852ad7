//! dsnpu: DeepSeek-V3/R1 inference on Huawei Ascend NPUs.
//!
//! This root crate re-exports the workspace's layers and holds the CLI's commands:
//! [`ffi`] (generated AscendCL/HCCL bindings, loaded at run time), [`runtime`] (safe devices, streams,
//! memory and kernel launches), [`ops`] (operator contracts and CPU references), [`model`]
//! (DeepSeek-V3 from Hugging Face checkpoints).
pub use dsnpu_ffi as ffi;
pub use dsnpu_model as model;
pub use dsnpu_ops as ops;
pub use dsnpu_runtime as runtime;

pub mod bench;
pub mod commands;
pub mod error;
