//! Device and pinned host memory, copies and fills.

use std::ffi::c_void;

use super::{acl, check, Result};
use crate::sys;

/// `aclrtMalloc` on the current device.
pub fn malloc(size: usize, policy: sys::aclrtMemMallocPolicy::Type) -> Result<*mut c_void> {
    let f = acl()?.aclrtMalloc()?;
    let mut p = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtMalloc", unsafe { f(&mut p, size, policy) })?;
    Ok(p)
}

/// `aclrtFree`.
///
/// # Safety
/// `ptr` came from [`malloc`], is not freed yet, and no queued or future work uses it.
pub unsafe fn free(ptr: *mut c_void) -> Result<()> {
    let f = acl()?.aclrtFree()?;
    // SAFETY: forwarded to the caller.
    check("aclrtFree", unsafe { f(ptr) })
}

/// `aclrtMallocHost`: page-locked host memory, usable by asynchronous copies.
pub fn malloc_host(size: usize) -> Result<*mut c_void> {
    let f = acl()?.aclrtMallocHost()?;
    let mut p = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtMallocHost", unsafe { f(&mut p, size) })?;
    Ok(p)
}

/// `aclrtFreeHost`.
///
/// # Safety
/// `ptr` came from [`malloc_host`], is not freed yet, and no queued or future work uses it.
pub unsafe fn free_host(ptr: *mut c_void) -> Result<()> {
    let f = acl()?.aclrtFreeHost()?;
    // SAFETY: forwarded to the caller.
    check("aclrtFreeHost", unsafe { f(ptr) })
}

/// `aclrtMemcpy`: synchronous copy of `count` bytes into a destination of `dst_max` bytes.
///
/// # Safety
/// `dst` is valid for `dst_max` bytes and `src` for `count` bytes, each in the memory space `kind`
/// says; no queued work writes either range, nor reads `dst`.
pub unsafe fn memcpy(
    dst: *mut c_void,
    dst_max: usize,
    src: *const c_void,
    count: usize,
    kind: sys::aclrtMemcpyKind::Type,
) -> Result<()> {
    let f = acl()?.aclrtMemcpy()?;
    // SAFETY: forwarded to the caller.
    check("aclrtMemcpy", unsafe { f(dst, dst_max, src, count, kind) })
}

/// `aclrtMemcpyAsync`: queues the copy on `stream`.
///
/// # Safety
/// As [`memcpy`], and in addition: host memory is from [`malloc_host`]; both ranges stay valid, and
/// are not accessed by the host (nor `dst` by other streams) until the copy completes; `stream` is live.
pub unsafe fn memcpy_async(
    dst: *mut c_void,
    dst_max: usize,
    src: *const c_void,
    count: usize,
    kind: sys::aclrtMemcpyKind::Type,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.aclrtMemcpyAsync()?;
    // SAFETY: forwarded to the caller.
    check("aclrtMemcpyAsync", unsafe {
        f(dst, dst_max, src, count, kind, stream)
    })
}

/// `aclrtMemset`: fills `count` bytes of a `max` byte device range with the byte `value`.
///
/// # Safety
/// `ptr` is device memory valid for `max` bytes that no queued work uses.
pub unsafe fn memset(ptr: *mut c_void, max: usize, value: i32, count: usize) -> Result<()> {
    let f = acl()?.aclrtMemset()?;
    // SAFETY: forwarded to the caller.
    check("aclrtMemset", unsafe { f(ptr, max, value, count) })
}

/// `aclrtMemsetAsync`: as [`memset`], queued on `stream`.
///
/// # Safety
/// `ptr` is device memory valid for `max` bytes until the fill completes, not used meanwhile by
/// other streams; `stream` is live.
pub unsafe fn memset_async(
    ptr: *mut c_void,
    max: usize,
    value: i32,
    count: usize,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.aclrtMemsetAsync()?;
    // SAFETY: forwarded to the caller.
    check("aclrtMemsetAsync", unsafe {
        f(ptr, max, value, count, stream)
    })
}
