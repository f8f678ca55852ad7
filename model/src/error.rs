//! The one error type of `dsnpu-model`.

use std::path::PathBuf;

/// Loading a checkpoint or running the model failed. Every variant names what was wrong: the file, the
/// configuration field, the tensor, or the sequence.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path that must be a regular file (after following symlinks) is something else: a directory, a FIFO,
    /// a device, a socket, or a symbolic link whose target does not exist or that loops. Checked before opening, so a FIFO
    /// never blocks the loader.
    #[error("{path}: expected a regular file, found {found}")]
    NotAFile { path: PathBuf, found: String },
    /// A JSON file (config.json, the shard index) is not valid JSON of the expected form.
    #[error("{path}: {reason}")]
    Json { path: PathBuf, reason: String },
    /// config.json is well-formed JSON but describes no model this crate can build.
    #[error("config: field `{field}`: {reason}")]
    Config { field: String, reason: String },
    /// `model_type` is not `deepseek_v3` or `deepseek_v2`.
    #[error("config: unsupported model_type `{0}` (expected `deepseek_v3` or `deepseek_v2`)")]
    UnknownModelType(String),
    /// A safetensors file's header is corrupt or inconsistent with the file.
    #[error("{path}: corrupt safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    /// The checkpoint directory holds no weights, or its shard index is inconsistent.
    #[error("{dir}: {reason}")]
    Checkpoint { dir: PathBuf, reason: String },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("checkpoint has no tensor `{0}`")]
    MissingTensor(String),
    /// A tensor has a shape other than the configuration implies.
    #[error("tensor `{name}` has shape {}, expected {}", fmt_index(.got), fmt_index(.expected))]
    TensorShape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A tensor is stored in an element type this crate does not read, or in an inconsistent one.
    #[error("tensor `{name}`: {reason}")]
    TensorDType { name: String, reason: String },
    /// A stored weight holds NaN or an infinity (found while converting it to f32).
    #[error("tensor `{name}` holds {what} at index {}", fmt_index(.index))]
    NonFiniteWeight {
        name: String,
        /// The first bad element, one index per dimension.
        index: Vec<usize>,
        /// The bad value, and for FP8 the stored byte and scale.
        what: String,
    },
    /// An operator produced NaN or an infinity from finite inputs (overflow): the first such output of a
    /// forward step, so no non-finite logits are ever returned.
    #[error("{op} produced {value} at index {} (the first non-finite output of this step)", fmt_index(.index))]
    NonFiniteOutput {
        /// The operator and where it ran, e.g. `layer 2 mlp (shared experts + routed experts)`.
        op: String,
        index: Vec<usize>,
        value: f32,
    },
    /// An operator rejected its input or failed.
    #[error(transparent)]
    Ops(#[from] dsnpu_ops::OpsError),
    /// A request to the model or the cache is invalid (token id out of range, unknown sequence, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The paged cache has too few free blocks for the request.
    #[error("KV cache out of blocks: need {needed}, {free} free")]
    OutOfBlocks { needed: usize, free: usize },
    /// The weights do not fit in device memory: the first tensor that could not be placed, the bytes
    /// all the weights need (at most `u64::MAX`: a sum that does not fit is printed as that) and the bytes
    /// the device had free before loading. Nothing stays allocated.
    #[error("device memory: tensor `{tensor}` does not fit: the weights need {needed} bytes in all, {free} bytes were free")]
    DeviceMemory {
        tensor: String,
        needed: u64,
        free: u64,
    },
    /// The paged cache the options ask for does not fit in the device memory the weights left: its
    /// slots (`num_blocks × block_size`), the bytes it needs over all layers and the bytes that were free.
    #[error("device memory: the paged cache of {slots} slots needs {needed} bytes over all layers, {free} bytes were free after the weights (lower num_blocks or block_size)")]
    CacheMemory {
        slots: usize,
        needed: u64,
        free: u64,
    },
    /// A device runtime call failed.
    #[error("device: {0}")]
    Device(#[from] dsnpu_runtime::RuntimeError),
    /// A kernel launch was refused or failed.
    #[error("kernel: {0}")]
    Kernel(#[from] dsnpu_kernels::KernelError),
    /// `step()` was called with no live sequence.
    #[error("a step needs at least one live sequence")]
    NoLiveSequences,
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// Whether the caller's input caused the error — a checkpoint, a prompt, an option, a request the
    /// cache or the device memory cannot hold — rather than the device or the library failing: what
    /// the C and Python entry points report as an invalid argument (`ValueError`), except that both
    /// ask [`is_out_of_memory`](Self::is_out_of_memory) first (weights or a cache that do not fit are
    /// `DSNPU_STATUS_OUT_OF_MEMORY` and `dsnpu.OutOfMemoryError` there).
    pub fn is_caller_error(&self) -> bool {
        match self {
            ModelError::Device(_) | ModelError::Kernel(_) | ModelError::NonFiniteOutput { .. } => {
                false
            }
            ModelError::Ops(e) => matches!(
                e,
                dsnpu_ops::OpsError::Shape { .. }
                    | dsnpu_ops::OpsError::IndexOutOfRange { .. }
                    | dsnpu_ops::OpsError::InvalidArgument { .. }
            ),
            _ => true,
        }
    }

    /// Whether device memory ran out: the weights or the paged cache not fitting
    /// ([`DeviceMemory`](Self::DeviceMemory), [`CacheMemory`](Self::CacheMemory)), or a runtime
    /// out-of-memory anywhere along the cause chain (a device call's, a kernel's, an operator's). The
    /// entry points report all of these as one kind of failure.
    pub fn is_out_of_memory(&self) -> bool {
        out_of_memory_in_chain(self)
    }
}

/// Whether device memory ran out anywhere along `e`'s cause chain (`e` included): a
/// [`RuntimeError`](dsnpu_runtime::RuntimeError) for which
/// [`is_out_of_memory`](dsnpu_runtime::RuntimeError::is_out_of_memory) holds, or a [`ModelError`] whose
/// weights or cache did not fit. Found by type, not by message, so that any wrapping (an operator's
/// boxed source, a kernel's shared cause, another crate's error) is seen through: the one definition
/// the model's, the C API's and the Python extension's errors share.
pub fn out_of_memory_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        if let Some(r) = e.downcast_ref::<dsnpu_runtime::RuntimeError>() {
            return r.is_out_of_memory();
        }
        matches!(
            e.downcast_ref::<ModelError>(),
            Some(ModelError::DeviceMemory { .. } | ModelError::CacheMemory { .. })
        )
    })
}

/// `[3, 5]`: an element index as the messages print it.
pub fn fmt_index(index: &[usize]) -> String {
    let parts: Vec<String> = index.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

pub(crate) fn config_err(field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Config {
        field: field.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn invalid_input(reason: impl Into<String>) -> ModelError {
    ModelError::InvalidInput(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsnpu_kernels::launch::device_error;
    use dsnpu_kernels::KernelError;
    use dsnpu_ops::OpsError;
    use dsnpu_runtime::RuntimeError;

    fn oom() -> RuntimeError {
        RuntimeError::OutOfMemory {
            device: 0,
            requested: 1 << 30,
            free: 1 << 20,
            cached: 0,
            allocated: 0,
        }
    }

    /// A runtime failure that is not memory running out.
    fn other() -> RuntimeError {
        RuntimeError::InvalidArgument("stream of another device".into())
    }

    /// `e` failing operator `op` on the device backend, boxed as the backend boxes it.
    fn backend(e: impl std::error::Error + Send + Sync + 'static) -> OpsError {
        OpsError::Backend {
            op: "linear",
            backend: "sim:0".into(),
            source: Box::new(e),
        }
    }

    #[test]
    fn device_memory_running_out_is_found_however_it_is_wrapped() {
        let cases = [
            ModelError::DeviceMemory {
                tensor: "w".into(),
                needed: 2,
                free: 1,
            },
            ModelError::CacheMemory {
                slots: 1,
                needed: 2,
                free: 1,
            },
            ModelError::Device(oom()),
            // The runtime's own wrapping of a kernel's failure.
            ModelError::Device(RuntimeError::Kernel {
                kernel: "k".into(),
                source: Box::new(oom()),
            }),
            ModelError::Kernel(device_error("k", oom())),
            ModelError::Ops(backend(oom())),
            ModelError::Ops(backend(device_error("k", oom()))),
            // An operator failing with a model error (a backend over the engine) is seen through too.
            ModelError::Ops(backend(ModelError::CacheMemory {
                slots: 1,
                needed: 2,
                free: 1,
            })),
        ];
        for e in cases {
            assert!(e.is_out_of_memory(), "{e}");
            // The cause chain is seen from outside too, by the same test.
            let outer = backend(e);
            assert!(out_of_memory_in_chain(&outer), "{outer}");
        }
    }

    #[test]
    fn other_failures_are_not_out_of_memory() {
        let no_cause = KernelError::Device {
            kernel: "k".into(),
            code: Some(507015),
            message: "aicore exception".into(),
            source: None,
        };
        let cases = [
            ModelError::Device(other()),
            ModelError::Device(RuntimeError::Kernel {
                kernel: "k".into(),
                source: Box::new(other()),
            }),
            ModelError::Kernel(device_error("k", other())),
            ModelError::Kernel(no_cause),
            ModelError::Kernel(KernelError::DoesNotFit {
                kernel: "k",
                needed: 2,
                available: 1,
            }),
            ModelError::Ops(backend(other())),
            // Only the type counts: a message that talks of memory is not memory running out.
            ModelError::Ops(OpsError::Backend {
                op: "linear",
                backend: "sim:0".into(),
                source: "out of memory".into(),
            }),
            ModelError::Ops(OpsError::InvalidArgument {
                op: "linear",
                arg: "x",
                reason: "out of memory".into(),
            }),
            ModelError::OutOfBlocks { needed: 2, free: 1 },
            ModelError::InvalidInput("out of device memory".into()),
            ModelError::NoLiveSequences,
        ];
        for e in cases {
            assert!(!e.is_out_of_memory(), "{e}");
        }
    }
}
