//! dsnpu: DeepSeek-V3/R1 inference on Huawei Ascend NPUs.
pub use dsnpu_ffi as ffi;
pub use dsnpu_model as model;
pub use dsnpu_ops as ops;
pub use dsnpu_runtime as runtime;
