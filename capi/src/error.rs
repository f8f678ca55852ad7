//! Errors, status codes and the thread-local last-error message.
//!
//! Every entry point runs its body through [`guard`]: an `Err` becomes its status code and its message
//! is stored for [`dsnpu_last_error`]; a panic becomes `DSNPU_STATUS_INTERNAL`. Success clears the
//! message.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use dsnpu_kernels::KernelError;
use dsnpu_model::ModelError;
use dsnpu_runtime::RuntimeError;

use crate::{
    DSNPU_STATUS_DEVICE, DSNPU_STATUS_INTERNAL, DSNPU_STATUS_INVALID_ARGUMENT, DSNPU_STATUS_OK,
    DSNPU_STATUS_OUT_OF_BLOCKS, DSNPU_STATUS_UNSUPPORTED,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    #[error("{func}: argument `{arg}` is a null pointer")]
    Null {
        func: &'static str,
        arg: &'static str,
    },
    #[error("{func}: {reason}")]
    Invalid { func: &'static str, reason: String },
    #[error("{func}: argument `{arg}` ({addr:#x}) is not aligned to {align} bytes")]
    Misaligned {
        func: &'static str,
        arg: &'static str,
        addr: usize,
        align: usize,
    },
    #[error("{func}: unknown {what} code {code}")]
    UnknownCode {
        func: &'static str,
        what: &'static str,
        code: i32,
    },
    #[error("{func}: output `{output}` overlaps argument `{other}`")]
    Overlap {
        func: &'static str,
        output: &'static str,
        other: &'static str,
    },
    #[error("{func}: {source}")]
    Kernel {
        func: &'static str,
        #[source]
        source: KernelError,
    },
    #[error("{func}: {source}")]
    Runtime {
        func: &'static str,
        #[source]
        source: RuntimeError,
    },
    #[error("{func}: {source}")]
    Model {
        func: &'static str,
        #[source]
        source: ModelError,
    },
}

impl CapiError {
    fn status(&self) -> i32 {
        match self {
            CapiError::Null { .. }
            | CapiError::Misaligned { .. }
            | CapiError::Invalid { .. }
            | CapiError::UnknownCode { .. }
            | CapiError::Overlap { .. } => DSNPU_STATUS_INVALID_ARGUMENT,
            CapiError::Kernel { source, .. } => match source {
                KernelError::InvalidShape { .. } | KernelError::BufferLength { .. } => {
                    DSNPU_STATUS_INVALID_ARGUMENT
                }
                KernelError::DoesNotFit { .. } | KernelError::CubeBufferOverflow { .. } => {
                    DSNPU_STATUS_UNSUPPORTED
                }
                KernelError::InvalidHardware(_) | KernelError::Device { .. } => DSNPU_STATUS_DEVICE,
            },
            CapiError::Runtime { source, .. } => match source {
                RuntimeError::InvalidArgument(_) => DSNPU_STATUS_INVALID_ARGUMENT,
                _ => DSNPU_STATUS_DEVICE,
            },
            CapiError::Model { source, .. } => match source {
                ModelError::OutOfBlocks { .. } => DSNPU_STATUS_OUT_OF_BLOCKS,
                ModelError::DeviceMemory { .. } | ModelError::CacheMemory { .. } => {
                    DSNPU_STATUS_UNSUPPORTED
                }
                e if e.is_caller_error() => DSNPU_STATUS_INVALID_ARGUMENT,
                _ => DSNPU_STATUS_DEVICE,
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, CapiError>;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: String) {
    // Interior NULs cannot be represented in a C string; replace them.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// Runs `body`, turning its outcome into a status code (see the module docs).
pub fn guard(func: &'static str, body: impl FnOnce() -> Result<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            LAST_ERROR.with(|e| *e.borrow_mut() = None);
            DSNPU_STATUS_OK
        }
        Ok(Err(e)) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                // Kernel and runtime errors already carry their cause's text; add only what is new.
                let text = cause.to_string();
                if !message.contains(&text) {
                    message += &format!(": {text}");
                }
                source = cause.source();
            }
            set_last_error(message);
            e.status()
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            set_last_error(format!("{func}: internal error (a bug in dsnpu): {what}"));
            DSNPU_STATUS_INTERNAL
        }
    }
}

/// The message of the last failed call on this thread, or NULL if the last call succeeded (or none
/// was made). The string is owned by the library and valid until the next call on this thread.
#[no_mangle]
pub extern "C" fn dsnpu_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

/// A static name for a status code (`"DSNPU_STATUS_OK"`, ...; `"unknown status"` otherwise).
#[no_mangle]
pub extern "C" fn dsnpu_status_name(status: i32) -> *const c_char {
    let name: &'static [u8] = match status {
        DSNPU_STATUS_OK => b"DSNPU_STATUS_OK\0",
        DSNPU_STATUS_INVALID_ARGUMENT => b"DSNPU_STATUS_INVALID_ARGUMENT\0",
        DSNPU_STATUS_UNSUPPORTED => b"DSNPU_STATUS_UNSUPPORTED\0",
        DSNPU_STATUS_DEVICE => b"DSNPU_STATUS_DEVICE\0",
        DSNPU_STATUS_INTERNAL => b"DSNPU_STATUS_INTERNAL\0",
        DSNPU_STATUS_OUT_OF_BLOCKS => b"DSNPU_STATUS_OUT_OF_BLOCKS\0",
        _ => b"unknown status\0",
    };
    name.as_ptr().cast()
}
