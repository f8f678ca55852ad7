//! The crate's error type.

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
    /// The runtime failed to load, look up or launch a kernel, or the launch faulted. `message` is the
    /// runtime error's full text (for a fault it names the kernel, block and operation); `code` its
    /// AscendCL error code, if it has one (`ACL_ERROR_RT_AICORE_EXCEPTION` = 507015 for a fault).
    #[error("{kernel}: {message}")]
    Device {
        kernel: String,
        code: Option<i32>,
        message: String,
    },
}

/// Result with [`KernelError`].
pub type Result<T> = std::result::Result<T, KernelError>;
