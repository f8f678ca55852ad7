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
    /// the C and Python entry points report as an invalid argument (`ValueError`).
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
