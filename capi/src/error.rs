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
    DSNPU_STATUS_OUT_OF_BLOCKS, DSNPU_STATUS_OUT_OF_MEMORY, DSNPU_STATUS_UNSUPPORTED,
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
        // Failures any entry point can meet, wrapped or not: found by type along the cause chain, so
        // that a kernel's workspace and an engine's weights running out of memory (say) are one code.
        // Out of memory is the model crate's test, the one the Python extension asks too.
        if dsnpu_model::error::out_of_memory_in_chain(self) {
            return DSNPU_STATUS_OUT_OF_MEMORY;
        }
        if causes(self).any(is_untileable) {
            return DSNPU_STATUS_UNSUPPORTED;
        }
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
                e if e.is_caller_error() => DSNPU_STATUS_INVALID_ARGUMENT,
                _ => DSNPU_STATUS_DEVICE,
            },
        }
    }
}

/// `e` and its causes, outermost first.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// A well-formed shape whose tiles do not fit the core's buffers.
fn is_untileable(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<KernelError>(),
        Some(KernelError::DoesNotFit { .. } | KernelError::CubeBufferOverflow { .. })
    )
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
        DSNPU_STATUS_OUT_OF_MEMORY => b"DSNPU_STATUS_OUT_OF_MEMORY\0",
        _ => b"unknown status\0",
    };
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsnpu_kernels::launch::device_error;

    fn oom() -> RuntimeError {
        RuntimeError::OutOfMemory {
            device: 0,
            requested: 1 << 30,
            free: 1 << 20,
            cached: 0,
            allocated: 0,
        }
    }

    fn fault() -> RuntimeError {
        RuntimeError::Ffi(dsnpu_ffi::AclError::new("aclrtSynchronizeStream", 507015, None).into())
    }

    const F: &str = "f";

    #[test]
    fn device_memory_running_out_is_one_status_however_it_is_wrapped() {
        let does_not_fit = ModelError::DeviceMemory {
            tensor: "w".into(),
            needed: 2,
            free: 1,
        };
        let cache = ModelError::CacheMemory {
            slots: 1,
            needed: 2,
            free: 1,
        };
        let uncached =
            RuntimeError::Ffi(dsnpu_ffi::AclError::new("aclrtMalloc", 207001, None).into());
        let cases = [
            CapiError::Runtime {
                func: F,
                source: oom(),
            },
            CapiError::Runtime {
                func: F,
                source: uncached,
            },
            CapiError::Kernel {
                func: F,
                source: device_error("k", oom()),
            },
            CapiError::Model {
                func: F,
                source: ModelError::Device(oom()),
            },
            CapiError::Model {
                func: F,
                source: ModelError::Kernel(device_error("k", oom())),
            },
            CapiError::Model {
                func: F,
                source: does_not_fit,
            },
            CapiError::Model {
                func: F,
                source: cache,
            },
        ];
        for e in cases {
            assert_eq!(e.status(), DSNPU_STATUS_OUT_OF_MEMORY, "{e}");
        }
    }

    #[test]
    fn other_failures_keep_their_status() {
        let untileable = KernelError::DoesNotFit {
            kernel: "k",
            needed: 2,
            available: 1,
        };
        let cases = [
            (
                CapiError::Kernel {
                    func: F,
                    source: device_error("k", fault()),
                },
                DSNPU_STATUS_DEVICE,
            ),
            (
                CapiError::Model {
                    func: F,
                    source: ModelError::Device(fault()),
                },
                DSNPU_STATUS_DEVICE,
            ),
            (
                CapiError::Runtime {
                    func: F,
                    source: RuntimeError::InvalidArgument("x".into()),
                },
                DSNPU_STATUS_INVALID_ARGUMENT,
            ),
            (
                CapiError::Kernel {
                    func: F,
                    source: untileable.clone(),
                },
                DSNPU_STATUS_UNSUPPORTED,
            ),
            // The same shape refused inside the engine: it was DSNPU_STATUS_DEVICE there.
            (
                CapiError::Model {
                    func: F,
                    source: ModelError::Kernel(untileable),
                },
                DSNPU_STATUS_UNSUPPORTED,
            ),
            (
                CapiError::Model {
                    func: F,
                    source: ModelError::OutOfBlocks { needed: 2, free: 1 },
                },
                DSNPU_STATUS_OUT_OF_BLOCKS,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.status(), want, "{e}");
        }
    }

    #[test]
    fn every_status_has_a_name() {
        let name = |s| {
            // SAFETY: dsnpu_status_name returns a static NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(dsnpu_status_name(s)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(
            name(DSNPU_STATUS_OUT_OF_MEMORY),
            "DSNPU_STATUS_OUT_OF_MEMORY"
        );
        assert_eq!(
            name(DSNPU_STATUS_OUT_OF_BLOCKS),
            "DSNPU_STATUS_OUT_OF_BLOCKS"
        );
        assert_eq!(name(7), "unknown status");
    }
}
