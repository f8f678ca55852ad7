//! The crate's error type.

use std::sync::Arc;

use dsnpu_runtime::RuntimeError;

/// Why a tiling could not be computed or a launch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A shape the kernel cannot take (empty, odd rotary dimension, too large for its index types, ...).
    #[error("{kernel}: invalid shape: {reason}")]
    InvalidShape {
        kernel: &'static str,
        reason: String,
    },
    /// Even the smallest tile does not fit in the core's Unified Buffer.
    #[error("{kernel}: the smallest tile needs {needed} bytes of Unified Buffer, the core has {available}")]
    DoesNotFit {
        kernel: &'static str,
        needed: u64,
        available: u64,
    },
    /// A cube tiling whose blocks do not fit one of the cube core's buffers (L0A, L0B, L0C, L1).
    #[error(
        "{kernel}: the cube tiling needs {needed} bytes of {buffer}, the cube core has {available}"
    )]
    CubeBufferOverflow {
        kernel: &'static str,
        buffer: &'static str,
        needed: u64,
        available: u64,
    },
    /// A hardware description with no cores or no Unified Buffer, or with more cores than the device
    /// runs at once; or no description to be had from the device.
    #[error("invalid hardware description: {0}")]
    InvalidHardware(String),
    /// A device buffer passed to a launcher does not hold what the shape needs.
    #[error("{kernel}: argument `{arg}` has {actual} elements, the shape needs {expected}")]
    BufferLength {
        kernel: &'static str,
        arg: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The runtime failed to allocate, load, look up or launch a kernel, or the launch faulted.
    /// `message` is the runtime error's full text (for a fault it names the kernel, block and
    /// operation); `code` its AscendCL error code, if it has one (`ACL_ERROR_RT_AICORE_EXCEPTION` =
    /// 507015 for a fault); `source` the runtime error itself when there is one, so that callers can
    /// tell its kind (e.g. [`RuntimeError::is_out_of_memory`]) by type rather than by text.
    #[error("{kernel}: {message}")]
    Device {
        kernel: String,
        code: Option<i32>,
        message: String,
        #[source]
        source: Option<RuntimeCause>,
    },
}

/// The [`RuntimeError`] behind a [`KernelError::Device`], shared so that [`KernelError`] stays `Clone`.
/// Its [`source`](std::error::Error::source) is that runtime error; two are equal when they are the
/// same error (clones of one another).
#[derive(Debug, Clone)]
pub struct RuntimeCause(Arc<RuntimeError>);

impl RuntimeCause {
    pub fn new(e: RuntimeError) -> Self {
        RuntimeCause(Arc::new(e))
    }

    /// The runtime error.
    pub fn get(&self) -> &RuntimeError {
        &self.0
    }
}

impl PartialEq for RuntimeCause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RuntimeCause {}

impl std::fmt::Display for RuntimeCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RuntimeCause {
    // The runtime error itself, not its source: a cause chain reaches the typed `RuntimeError`.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.get())
    }
}

/// Result with [`KernelError`].
pub type Result<T> = std::result::Result<T, KernelError>;
