//! Kernel binaries, argument blocks and launches.

use std::ffi::{c_void, CStr};

use super::{acl, check, Result};
use crate::sys;

/// `aclrtBinaryLoadFromFile` (no options). The path should be absolute.
pub fn binary_load_from_file(path: &CStr) -> Result<sys::aclrtBinHandle> {
    let f = acl()?.aclrtBinaryLoadFromFile()?;
    let mut h = std::ptr::null_mut();
    // SAFETY: a valid C string, null options (allowed: defaults), valid out-pointer.
    check("aclrtBinaryLoadFromFile", unsafe {
        f(path.as_ptr(), std::ptr::null_mut(), &mut h)
    })?;
    Ok(h)
}

/// `aclrtBinaryLoadFromData` (no options). The bytes are copied by the runtime during the call.
pub fn binary_load_from_data(data: &[u8]) -> Result<sys::aclrtBinHandle> {
    let f = acl()?.aclrtBinaryLoadFromData()?;
    let mut h = std::ptr::null_mut();
    // SAFETY: `data` is valid for its length for the call; null options; valid out-pointer.
    check("aclrtBinaryLoadFromData", unsafe {
        f(data.as_ptr().cast(), data.len(), std::ptr::null(), &mut h)
    })?;
    Ok(h)
}

/// `aclrtBinaryUnLoad`.
///
/// # Safety
/// `bin` is live, no queued launch uses its functions, and neither it nor its functions are used after.
pub unsafe fn binary_unload(bin: sys::aclrtBinHandle) -> Result<()> {
    let f = acl()?.aclrtBinaryUnLoad()?;
    // SAFETY: forwarded to the caller.
    check("aclrtBinaryUnLoad", unsafe { f(bin) })
}

/// `aclrtBinaryGetFunction`.
///
/// # Safety
/// `bin` is live.
pub unsafe fn binary_get_function(
    bin: sys::aclrtBinHandle,
    name: &CStr,
) -> Result<sys::aclrtFuncHandle> {
    let f = acl()?.aclrtBinaryGetFunction()?;
    let mut h = std::ptr::null_mut();
    // SAFETY: forwarded to the caller; valid C string and out-pointer.
    check("aclrtBinaryGetFunction", unsafe {
        f(bin, name.as_ptr(), &mut h)
    })?;
    Ok(h)
}

/// `aclrtKernelArgsInit`.
///
/// # Safety
/// `func` is a live function handle.
pub unsafe fn kernel_args_init(func: sys::aclrtFuncHandle) -> Result<sys::aclrtArgsHandle> {
    let f = acl()?.aclrtKernelArgsInit()?;
    let mut h = std::ptr::null_mut();
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("aclrtKernelArgsInit", unsafe { f(func, &mut h) })?;
    Ok(h)
}

/// `aclrtKernelArgsAppend`: copies `param` into the argument block.
///
/// # Safety
/// `args` is a live, not yet finalized argument block.
pub unsafe fn kernel_args_append(
    args: sys::aclrtArgsHandle,
    param: &[u8],
) -> Result<sys::aclrtParamHandle> {
    let f = acl()?.aclrtKernelArgsAppend()?;
    let mut h = std::ptr::null_mut();
    // SAFETY: forwarded to the caller; the runtime only reads `param` (the C signature is non-const).
    check("aclrtKernelArgsAppend", unsafe {
        f(args, param.as_ptr() as *mut c_void, param.len(), &mut h)
    })?;
    Ok(h)
}

/// `aclrtKernelArgsAppendPlaceHolder`.
///
/// # Safety
/// `args` is a live, not yet finalized argument block.
pub unsafe fn kernel_args_append_placeholder(
    args: sys::aclrtArgsHandle,
) -> Result<sys::aclrtParamHandle> {
    let f = acl()?.aclrtKernelArgsAppendPlaceHolder()?;
    let mut h = std::ptr::null_mut();
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("aclrtKernelArgsAppendPlaceHolder", unsafe {
        f(args, &mut h)
    })?;
    Ok(h)
}

/// `aclrtKernelArgsFinalize`.
///
/// # Safety
/// `args` is a live argument block.
pub unsafe fn kernel_args_finalize(args: sys::aclrtArgsHandle) -> Result<()> {
    let f = acl()?.aclrtKernelArgsFinalize()?;
    // SAFETY: forwarded to the caller.
    check("aclrtKernelArgsFinalize", unsafe { f(args) })
}

/// `aclrtLaunchKernelWithConfig` (no launch attributes).
///
/// # Safety
/// `func`, `stream` and the finalized `args` are live; every address in `args` is valid device memory
/// for what the kernel does with it until the launch completes.
pub unsafe fn launch_with_config(
    func: sys::aclrtFuncHandle,
    num_blocks: u32,
    stream: sys::aclrtStream,
    args: sys::aclrtArgsHandle,
) -> Result<()> {
    let f = acl()?.aclrtLaunchKernelWithConfig()?;
    // SAFETY: forwarded to the caller; a null config means no attributes.
    check("aclrtLaunchKernelWithConfig", unsafe {
        f(
            func,
            num_blocks,
            stream,
            std::ptr::null_mut(),
            args,
            std::ptr::null_mut(),
        )
    })
}

/// `aclrtLaunchKernelWithHostArgs`: `host_args` is the packed parameter list, copied at the call.
///
/// # Safety
/// `func` and `stream` are live; `host_args` is laid out like the kernel's parameter list, and every
/// device address in it is valid for what the kernel does with it until the launch completes.
pub unsafe fn launch_with_host_args(
    func: sys::aclrtFuncHandle,
    num_blocks: u32,
    stream: sys::aclrtStream,
    host_args: &[u8],
) -> Result<()> {
    let f = acl()?.aclrtLaunchKernelWithHostArgs()?;
    // SAFETY: forwarded to the caller; the runtime reads `host_args` during the call only; no config
    // and no placeholders.
    check("aclrtLaunchKernelWithHostArgs", unsafe {
        f(
            func,
            num_blocks,
            stream,
            std::ptr::null_mut(),
            host_args.as_ptr() as *mut c_void,
            host_args.len(),
            std::ptr::null_mut(),
            0,
        )
    })
}
