//! One safe-as-possible Rust function per bound C call, returning `Result<_, FfiError>`.
//!
//! Contract:
//! - Validated: the return code of every call (non-zero becomes [`AclError`] with its header name and
//!   the text of `aclGetRecentErrMsg`, read on the same thread right after the failure); that the
//!   library is loaded and exports the function ([`FfiError::Load`], [`FfiError::Unsupported`]).
//! - Trusted: handles and pointers. Functions that take a handle or a pointer are `unsafe`, and their
//!   `# Safety` sections say what the caller must guarantee. Ownership, context binding and
//!   stream ordering are the runtime crate's job, not this layer's.
//! - Calls that need a current context (everything after `aclrtSetDevice`) use the calling thread's.

pub mod device;
pub mod hccl;
pub mod kernel;
pub mod memory;
pub mod stream;

use std::ffi::{c_char, CStr};

use crate::error::{AclError, FfiError};
use crate::loader::{api, Api};
use crate::sys;

/// This crate's result type.
pub type Result<T, E = FfiError> = std::result::Result<T, E>;

/// The loaded library, as an `FfiError`.
pub(crate) fn acl() -> Result<&'static Api> {
    Ok(api()?)
}

/// `code` as a result, reading the recent error message on failure.
pub(crate) fn check(function: &'static str, code: sys::aclError) -> Result<()> {
    if code == sys::ACL_SUCCESS {
        Ok(())
    } else {
        Err(AclError::new(function, code, recent_err_msg()).into())
    }
}

/// Copies a C string owned by the library. `None` for null.
///
/// # Safety
/// `p` is null or points at a NUL-terminated string that stays valid during this call.
pub(crate) unsafe fn owned_string(p: *const c_char) -> Option<String> {
    // SAFETY: forwarded to the caller.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// `aclGetRecentErrMsg`: the last failure's explanation on this thread, if the library keeps one.
pub fn recent_err_msg() -> Option<String> {
    let f = acl().ok()?.aclGetRecentErrMsg().ok()?;
    // SAFETY: no arguments; the returned string is owned by the library's thread-local storage and
    // valid until the next AscendCL call on this thread, and it is copied before any.
    unsafe { owned_string(f()) }
}

/// `aclInit`. `config` is an optional JSON config path.
pub fn init(config: Option<&CStr>) -> Result<()> {
    let f = acl()?.aclInit()?;
    // SAFETY: the pointer is null or a valid C string that outlives the call.
    check("aclInit", unsafe {
        f(config.map_or(std::ptr::null(), CStr::as_ptr))
    })
}

/// `aclFinalize`.
pub fn finalize() -> Result<()> {
    let f = acl()?.aclFinalize()?;
    // SAFETY: no arguments.
    check("aclFinalize", unsafe { f() })
}

/// `aclrtGetVersion`: (major, minor, patch).
pub fn version() -> Result<(i32, i32, i32)> {
    let f = acl()?.aclrtGetVersion()?;
    let (mut a, mut b, mut c) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    check("aclrtGetVersion", unsafe { f(&mut a, &mut b, &mut c) })?;
    Ok((a, b, c))
}

/// `aclrtGetSocName` (`None` when the runtime does not know it).
pub fn soc_name() -> Result<Option<String>> {
    let f = acl()?.aclrtGetSocName()?;
    // SAFETY: no arguments; the returned string is static in the library.
    Ok(unsafe { owned_string(f()) })
}
