//! Devices and contexts.
use dsnpu_ffi::sys::{aclError, aclrtContext};

use super::{out, put};
use crate::guard::acl_call;
use crate::handles::to_ptr;
use crate::runtime::runtime;

#[no_mangle]
pub unsafe extern "C" fn aclrtSetDevice(device_id: i32) -> aclError {
    acl_call("aclrtSetDevice", || runtime()?.set_device(device_id))
}

#[no_mangle]
pub unsafe extern "C" fn aclrtResetDevice(device_id: i32) -> aclError {
    acl_call("aclrtResetDevice", || runtime()?.reset_device(device_id))
}

#[no_mangle]
pub unsafe extern "C" fn aclrtGetDevice(device_id: *mut i32) -> aclError {
    acl_call("aclrtGetDevice", || {
        let o = out(device_id, "deviceId")?;
        let dev = runtime()?.current_context()?.device;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, dev) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtGetDeviceCount(count: *mut u32) -> aclError {
    acl_call("aclrtGetDeviceCount", || {
        let o = out(count, "count")?;
        let n = runtime()?.config.devices;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, n) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtCreateContext(
    context: *mut aclrtContext,
    device_id: i32,
) -> aclError {
    acl_call("aclrtCreateContext", || {
        let o = out(context, "context")?;
        let id = runtime()?.create_context(device_id)?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(id)) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyContext(context: aclrtContext) -> aclError {
    acl_call("aclrtDestroyContext", || {
        runtime()?.destroy_context(context)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtSetCurrentContext(context: aclrtContext) -> aclError {
    acl_call("aclrtSetCurrentContext", || {
        runtime()?.set_current_context(context)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtGetCurrentContext(context: *mut aclrtContext) -> aclError {
    acl_call("aclrtGetCurrentContext", || {
        let o = out(context, "context")?;
        let id = runtime()?.current_context()?.id;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(id)) };
        Ok(())
    })
}
