//! Devices and contexts.

use super::{acl, check, Result};
use crate::sys;

/// `aclrtGetDeviceCount`.
pub fn count() -> Result<u32> {
    let f = acl()?.aclrtGetDeviceCount()?;
    let mut n = 0u32;
    // SAFETY: valid out-pointer.
    check("aclrtGetDeviceCount", unsafe { f(&mut n) })?;
    Ok(n)
}

/// `aclrtSetDevice`: opens the device (reference counted) and makes its default context current on
/// this thread.
pub fn set(device: i32) -> Result<()> {
    let f = acl()?.aclrtSetDevice()?;
    // SAFETY: plain integer argument.
    check("aclrtSetDevice", unsafe { f(device) })
}

/// `aclrtResetDevice`: releases one reference taken by [`set`].
pub fn reset(device: i32) -> Result<()> {
    let f = acl()?.aclrtResetDevice()?;
    // SAFETY: plain integer argument.
    check("aclrtResetDevice", unsafe { f(device) })
}

/// `aclrtGetDevice`: the device of this thread's current context.
pub fn current() -> Result<i32> {
    let f = acl()?.aclrtGetDevice()?;
    let mut d = 0i32;
    // SAFETY: valid out-pointer.
    check("aclrtGetDevice", unsafe { f(&mut d) })?;
    Ok(d)
}

/// `aclrtGetMemInfo(attr)`: (free, total) bytes of the current device.
pub fn mem_info(attr: sys::aclrtMemAttr::Type) -> Result<(usize, usize)> {
    let f = acl()?.aclrtGetMemInfo()?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: valid out-pointers.
    check("aclrtGetMemInfo", unsafe { f(attr, &mut free, &mut total) })?;
    Ok((free, total))
}

/// `aclGetDeviceCapability(device, info)`: one of the device's specifications (`aclDeviceInfo`: AI
/// Core count, vector core count, L2 bytes).
pub fn capability(device: u32, info: sys::aclDeviceInfo::Type) -> Result<i64> {
    let f = acl()?.aclGetDeviceCapability()?;
    let mut value = 0i64;
    // SAFETY: plain integer arguments and a valid out-pointer.
    check("aclGetDeviceCapability", unsafe {
        f(device, info, &mut value)
    })?;
    Ok(value)
}

/// `aclrtCreateContext`: a new context on `device`, made current on this thread.
pub fn create_context(device: i32) -> Result<sys::aclrtContext> {
    let f = acl()?.aclrtCreateContext()?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtCreateContext", unsafe { f(&mut ctx, device) })?;
    Ok(ctx)
}

/// `aclrtDestroyContext`.
///
/// # Safety
/// `ctx` came from [`create_context`], is not destroyed yet, and nothing created in it is used after.
pub unsafe fn destroy_context(ctx: sys::aclrtContext) -> Result<()> {
    let f = acl()?.aclrtDestroyContext()?;
    // SAFETY: forwarded to the caller.
    check("aclrtDestroyContext", unsafe { f(ctx) })
}

/// `aclrtSetCurrentContext`.
///
/// # Safety
/// `ctx` is a live context (a device's default context while the device is set, or one from
/// [`create_context`] not yet destroyed).
pub unsafe fn set_current_context(ctx: sys::aclrtContext) -> Result<()> {
    let f = acl()?.aclrtSetCurrentContext()?;
    // SAFETY: forwarded to the caller.
    check("aclrtSetCurrentContext", unsafe { f(ctx) })
}

/// `aclrtGetCurrentContext`: this thread's current context.
pub fn current_context() -> Result<sys::aclrtContext> {
    let f = acl()?.aclrtGetCurrentContext()?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtGetCurrentContext", unsafe { f(&mut ctx) })?;
    Ok(ctx)
}
