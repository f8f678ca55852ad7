//! The boundary between C callers and the simulator: panic containment, error codes, and the
//! per-thread message behind `aclGetRecentErrMsg`.
//!
//! Every export runs its body through [`acl_call`] (or [`hccl_call`], [`ptr_call`]): a panic never
//! unwinds into C, it becomes `ACL_ERROR_RT_INTERNAL_ERROR` with a message. A failure stores
//! `"<api>: <error text>"` as the calling thread's pending message; `aclGetRecentErrMsg` hands it out
//! once ("obtains and clears", as the real one) and keeps the returned string alive until the next
//! call on the same thread.
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use dsnpu_ffi::sys;

use crate::error::SimError;

thread_local! {
    static PENDING: RefCell<Option<String>> = const { RefCell::new(None) };
    static RETURNED: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `msg` as the calling thread's most recent failure.
pub(crate) fn set_last_error(msg: String) {
    // try_with: during thread teardown the slot may be gone; the message is then dropped.
    let _ = PENDING.try_with(|p| *p.borrow_mut() = Some(msg));
}

/// Hands out the pending message of this thread (clearing it), or NULL when there is none.
pub(crate) fn take_last_error() -> *const c_char {
    let pending = PENDING.try_with(|p| p.borrow_mut().take()).ok().flatten();
    let Some(msg) = pending else {
        return std::ptr::null();
    };
    let text = CString::new(msg.replace('\0', "?")).unwrap_or_default();
    RETURNED
        .try_with(|r| {
            let mut r = r.borrow_mut();
            *r = Some(text);
            r.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
        })
        .unwrap_or(std::ptr::null())
}

/// The text of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs an AscendCL export body: `Ok` → `ACL_SUCCESS`; `Err` or panic → its code plus the message.
pub(crate) fn acl_call(
    api: &'static str,
    body: impl FnOnce() -> Result<(), SimError>,
) -> sys::aclError {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return sys::ACL_SUCCESS,
        Ok(Err(e)) => e,
        Err(payload) => SimError::Internal(panic_message(payload.as_ref())),
    };
    set_last_error(format!("{api}: {err}"));
    err.acl_code()
}

/// Runs an HCCL export body, mapping errors to HCCL codes (the message is stored as for AscendCL).
pub(crate) fn hccl_call(
    api: &'static str,
    body: impl FnOnce() -> Result<(), SimError>,
) -> sys::HcclResult::Type {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return sys::HcclResult::HCCL_SUCCESS,
        Ok(Err(e)) => e,
        Err(payload) => SimError::Internal(panic_message(payload.as_ref())),
    };
    set_last_error(format!("{api}: {err}"));
    err.hccl_code()
}

/// Runs an export that returns a C string; a panic returns NULL.
pub(crate) fn ptr_call(body: impl FnOnce() -> *const c_char) -> *const c_char {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn message_is_handed_out_once_and_panics_become_codes() {
        std::thread::spawn(|| {
            assert!(take_last_error().is_null());
            let code = acl_call("aclrtFoo", || Err(SimError::NullPointer("devPtr")));
            assert_eq!(code, 100000);
            let p = take_last_error();
            assert!(!p.is_null());
            // SAFETY: non-null pointers from take_last_error point at this thread's live CString.
            let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
            assert_eq!(text, "aclrtFoo: argument devPtr must not be NULL");
            assert!(
                take_last_error().is_null(),
                "the message is cleared once read"
            );

            let code = acl_call("aclrtBar", || panic!("boom"));
            assert_eq!(code, 507000);
            let p = take_last_error();
            // SAFETY: as above.
            let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
            assert_eq!(text, "aclrtBar: internal simulator error: boom");
        })
        .join()
        .unwrap();
    }
}
