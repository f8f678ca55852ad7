//! Contexts and device reference counting (device 3 only).
use std::ptr::null_mut;

use dsnpu_ffi::sys;
use dsnpu_sim::*;

use super::*;

#[test]
fn contexts_are_per_thread_and_resets_are_counted() {
    on_device(3);
    // SAFETY: valid out-pointers and handles throughout.
    unsafe {
        let mut default_ctx = null_mut();
        ok(aclrtGetCurrentContext(&mut default_ctx));
        fails(
            aclrtDestroyContext(default_ctx),
            sys::ACL_ERROR_INVALID_PARAM,
        );
        // A second reference to the default context.
        ok(aclrtSetDevice(3));
        let s = create_stream();
        // Another thread adopts the default context by handle.
        let ctx_addr = default_ctx as usize;
        std::thread::spawn(move || {
            let mut dev = -1;
            fails(aclrtGetDevice(&mut dev), sys::ACL_ERROR_RT_CONTEXT_NULL);
            ok(aclrtSetCurrentContext(ctx_addr as sys::aclrtContext));
            ok(aclrtGetDevice(&mut dev));
            assert_eq!(dev, 3);
        })
        .join()
        .unwrap();
        // A created context becomes current; destroying it leaves no current context.
        let mut mine = null_mut();
        ok(aclrtCreateContext(&mut mine, 3));
        let mut cur = null_mut();
        ok(aclrtGetCurrentContext(&mut cur));
        assert_eq!(cur, mine);
        assert_ne!(mine, default_ctx);
        fails(aclrtSynchronizeStream(s), sys::ACL_ERROR_RT_STREAM_CONTEXT);
        ok(aclrtDestroyContext(mine));
        fails(
            aclrtGetCurrentContext(&mut cur),
            sys::ACL_ERROR_RT_CONTEXT_NULL,
        );
        fails(
            aclrtSetCurrentContext(mine),
            sys::ACL_ERROR_RT_INVALID_HANDLE,
        );
        fails(
            aclrtCreateContext(&mut mine, 9),
            sys::ACL_ERROR_RT_INVALID_DEVICEID,
        );
        // Back to the default context: two references, so one reset keeps it.
        ok(aclrtSetCurrentContext(default_ctx));
        ok(aclrtResetDevice(3));
        ok(sync(s));
        ok(aclrtResetDevice(3));
        // The last reset destroyed the default context and its streams.
        fails(
            aclrtSynchronizeStream(null_mut()),
            sys::ACL_ERROR_RT_CONTEXT_NULL,
        );
        ok(aclrtSetDevice(3));
        let m = fails(aclrtSynchronizeStream(s), sys::ACL_ERROR_RT_INVALID_HANDLE);
        assert!(m.contains("stream"), "{m}");
        let mut fresh = null_mut();
        ok(aclrtGetCurrentContext(&mut fresh));
        assert_ne!(fresh, default_ctx, "a new default context");
        ok(aclrtResetDevice(3));
        ok(aclrtResetDevice(3));
    }
}
