//! The process lifecycle (its own test binary, so its own process): calls before `aclInit`, a bad
//! configuration, one `aclInit`, `aclFinalize` draining queued work, and calls afterwards.
use std::ffi::CString;
use std::ptr::{null, null_mut};

use dsnpu_ffi::sys::{self, aclrtMemcpyKind as kind};
use dsnpu_sim::*;

#[test]
fn init_once_finalize_once() {
    let mut p = null_mut();
    let mut n = 0u32;
    // SAFETY: valid pointers throughout; the pinned buffer is written before finalize frees it.
    unsafe {
        assert_eq!(aclrtSetDevice(0), sys::ACL_ERROR_UNINITIALIZE);
        assert_eq!(aclrtMalloc(&mut p, 64, 0), sys::ACL_ERROR_UNINITIALIZE);
        assert_eq!(aclFinalize(), sys::ACL_ERROR_UNINITIALIZE);

        std::env::set_var("DSNPU_SIM_DEVICES", "zero");
        assert_eq!(aclInit(null()), sys::ACL_ERROR_INVALID_PARAM);
        let msg = std::ffi::CStr::from_ptr(aclGetRecentErrMsg())
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains("DSNPU_SIM_DEVICES"), "{msg}");
        std::env::set_var("DSNPU_SIM_DEVICES", "2");
        let missing = CString::new("/nonexistent/acl.json").unwrap();
        assert_eq!(aclInit(missing.as_ptr()), sys::ACL_ERROR_INVALID_FILE);

        assert_eq!(aclInit(null()), sys::ACL_SUCCESS);
        assert_eq!(aclInit(null()), sys::ACL_ERROR_REPEAT_INITIALIZE);
        assert_eq!(aclrtGetDeviceCount(&mut n), sys::ACL_SUCCESS);
        assert_eq!(n, 2);
        let mut total = 0usize;
        let mut free = 0usize;
        assert_eq!(aclrtSetDevice(1), sys::ACL_SUCCESS);
        assert_eq!(
            aclrtGetMemInfo(sys::aclrtMemAttr::ACL_HBM_MEM, &mut free, &mut total),
            sys::ACL_SUCCESS
        );
        assert_eq!(total, 64 << 30, "default capacity: 64 GiB");

        // Work still queued at aclFinalize is drained before its memory is released.
        assert_eq!(aclrtMalloc(&mut p, 1 << 20, 0), sys::ACL_SUCCESS);
        let mut pinned = null_mut();
        assert_eq!(aclrtMallocHost(&mut pinned, 1 << 20), sys::ACL_SUCCESS);
        let mut s = null_mut();
        assert_eq!(aclrtCreateStream(&mut s), sys::ACL_SUCCESS);
        assert_eq!(
            aclrtMemsetAsync(p, 1 << 20, 0x5a, 1 << 20, s),
            sys::ACL_SUCCESS
        );
        assert_eq!(
            aclrtMemcpyAsync(
                pinned,
                1 << 20,
                p,
                1 << 20,
                kind::ACL_MEMCPY_DEVICE_TO_HOST,
                s
            ),
            sys::ACL_SUCCESS
        );
        assert_eq!(
            aclrtStreamWaitEvent(s, null_mut()),
            sys::ACL_ERROR_INVALID_PARAM
        );
        assert_eq!(aclFinalize(), sys::ACL_SUCCESS);

        assert_eq!(aclrtMalloc(&mut p, 64, 0), sys::ACL_ERROR_UNINITIALIZE);
        assert_eq!(aclrtSynchronizeStream(s), sys::ACL_ERROR_UNINITIALIZE);
        assert_eq!(aclInit(null()), sys::ACL_ERROR_REPEAT_INITIALIZE);
        assert_eq!(aclFinalize(), sys::ACL_ERROR_REPEAT_FINALIZE);
    }
}
