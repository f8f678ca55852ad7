//! Devices and contexts, and what a device has (`aclGetDeviceCapability`).
use dsnpu_ffi::sys::{aclDeviceInfo, aclError, aclrtContext};

use super::{out, put};
use crate::error::SimError;
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

/// The die's L2 (910B2), as the host kernel layer's cost model holds it (`cost.h`, `kL2Bytes`).
const L2_BYTES: i64 = 192 << 20;

#[no_mangle]
pub unsafe extern "C" fn aclGetDeviceCapability(
    device_id: u32,
    device_info: aclDeviceInfo::Type,
    value: *mut i64,
) -> aclError {
    acl_call("aclGetDeviceCapability", || {
        let o = out(value, "value")?;
        let rt = runtime()?;
        rt.check_device(i32::try_from(device_id).unwrap_or(i32::MAX))?;
        let v = match device_info {
            aclDeviceInfo::ACL_DEVICE_INFO_AI_CORE_NUM => i64::from(rt.config.cube_cores),
            aclDeviceInfo::ACL_DEVICE_INFO_VECTOR_CORE_NUM => i64::from(rt.config.vector_cores),
            aclDeviceInfo::ACL_DEVICE_INFO_L2_SIZE => L2_BYTES,
            other => {
                return Err(SimError::InvalidParam(format!(
                    "deviceInfo {other} is not an aclDeviceInfo (0 AI cores, 1 vector cores, 2 L2 size)"
                )))
            }
        };
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, v) };
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
