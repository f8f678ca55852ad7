//! The crate's error type.

/// Why a tiling could not be computed.
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
    /// A hardware description with no cores or no Unified Buffer.
    #[error("invalid hardware description: {0}")]
    InvalidHardware(String),
}

/// Result with [`KernelError`].
pub type Result<T> = std::result::Result<T, KernelError>;
