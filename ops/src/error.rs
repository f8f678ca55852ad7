//! The one error type of `dsnpu-ops`, and small constructors the operators share.
//!
//! Every variant names the operator (`op`, e.g. `"rms_norm"`) and the offending argument (`arg`, the
//! parameter name in the operator's signature), so a caller can tell exactly what was rejected.

/// An operator rejected its input, or a backend failed to run it.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// An argument has the wrong rank or extent.
    #[error("{op}: argument `{arg}` has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        arg: &'static str,
        got: Vec<usize>,
        expected: String,
    },
    /// An index stored in an argument points outside the range it indexes.
    #[error(
        "{op}: argument `{arg}` holds index {index} at position {position}, outside [0, {bound})"
    )]
    IndexOutOfRange {
        op: &'static str,
        arg: &'static str,
        index: i64,
        position: usize,
        bound: i64,
    },
    /// An argument's value is not acceptable (a configuration, a scalar, an inconsistent list).
    #[error("{op}: argument `{arg}` is invalid: {reason}")]
    InvalidArgument {
        op: &'static str,
        arg: &'static str,
        reason: String,
    },
    /// The backend does not implement this operator or dtype.
    #[error("{op}: not supported by backend `{backend}`: {reason}")]
    Unsupported {
        op: &'static str,
        backend: String,
        reason: String,
    },
    /// The backend failed while running the operator (device error, launch failure).
    #[error("{op}: backend `{backend}` failed: {source}")]
    Backend {
        op: &'static str,
        backend: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

pub type Result<T, E = OpsError> = std::result::Result<T, E>;

/// Check that `got` equals `expected` exactly; the error names `op` and `arg`.
pub fn expect_shape(
    op: &'static str,
    arg: &'static str,
    got: &[usize],
    expected: &[usize],
) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(OpsError::Shape {
            op,
            arg,
            got: got.to_vec(),
            expected: format!("{expected:?}"),
        })
    }
}

/// Build an [`OpsError::Shape`] whose expectation is described in words or with wildcards
/// (e.g. `"[_, 7168]"`).
pub fn shape_error(
    op: &'static str,
    arg: &'static str,
    got: &[usize],
    expected: impl Into<String>,
) -> OpsError {
    OpsError::Shape {
        op,
        arg,
        got: got.to_vec(),
        expected: expected.into(),
    }
}

/// Build an [`OpsError::InvalidArgument`].
pub fn invalid(op: &'static str, arg: &'static str, reason: impl Into<String>) -> OpsError {
    OpsError::InvalidArgument {
        op,
        arg,
        reason: reason.into(),
    }
}
