//! Memory: allocation, copies, memsets, memory info.
//!
//! Asynchronous copies whose host side is pageable (not from `aclrtMallocHost`) are made
//! synchronous, as newer CANN does: the call queues the copy, waits for it and reports the stream's
//! pending error like `aclrtSynchronizeStream`. Asynchronous host-to-host copies are rejected with
//! `ACL_ERROR_RT_FEATURE_NOT_SUPPORT`, as by the real runtime. The synchronous `aclrtMemcpy` and
//! `aclrtMemset` run on the calling thread at once and are not ordered with stream work.
//!
//! A zero-byte copy or memset succeeds before any other check (NULL pointers, the kind, the
//! stream, even `aclInit`), as in CANN 8.x's `aclrtMemcpyImpl`/`aclrtMemsetImpl` and their
//! asynchronous forms (hicann/runtime `src/acl/aclrt_impl/memory.cpp`). `count > destMax` is
//! `ACL_ERROR_RT_PARAM_INVALID`, the runtime layer's code there.
use std::ffi::c_void;

use dsnpu_ffi::sys::{aclError, aclrtMemAttr, aclrtMemMallocPolicy, aclrtMemcpyKind, aclrtStream};

use super::{out, put};
use crate::copy::{plan_copy, plan_memset};
use crate::error::SimError;
use crate::guard::acl_call;
use crate::runtime::runtime;
use crate::stream::TaskKind;

#[no_mangle]
pub unsafe extern "C" fn aclrtMalloc(
    dev_ptr: *mut *mut c_void,
    size: usize,
    _policy: aclrtMemMallocPolicy::Type,
) -> aclError {
    // Every policy allocates the same way here; the real runtime also accepts unknown values.
    acl_call("aclrtMalloc", || {
        let o = out(dev_ptr, "devPtr")?;
        let rt = runtime()?;
        let device = rt.current_context()?.device;
        let addr = rt.memory.malloc_device(device, size)?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, addr as *mut c_void) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtFree(dev_ptr: *mut c_void) -> aclError {
    acl_call("aclrtFree", || {
        if dev_ptr.is_null() {
            return Err(SimError::NullPointer("devPtr"));
        }
        runtime()?.memory.free(dev_ptr as usize, false)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtMallocHost(host_ptr: *mut *mut c_void, size: usize) -> aclError {
    acl_call("aclrtMallocHost", || {
        let o = out(host_ptr, "hostPtr")?;
        let addr = runtime()?.memory.malloc_host(size)?;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, addr as *mut c_void) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtFreeHost(host_ptr: *mut c_void) -> aclError {
    acl_call("aclrtFreeHost", || {
        if host_ptr.is_null() {
            return Err(SimError::NullPointer("hostPtr"));
        }
        runtime()?.memory.free(host_ptr as usize, true)
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpy(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: aclrtMemcpyKind::Type,
) -> aclError {
    acl_call("aclrtMemcpy", || {
        if count == 0 {
            // CANN returns success for zero bytes before checking anything else (module docs).
            return Ok(());
        }
        let rt = runtime()?;
        match plan_copy(
            &rt.memory,
            dst as usize,
            dest_max,
            src as usize,
            count,
            kind,
        )? {
            Some(plan) => plan.execute(&rt.memory),
            None => Ok(()),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpyAsync(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: aclrtMemcpyKind::Type,
    stream: aclrtStream,
) -> aclError {
    acl_call("aclrtMemcpyAsync", || {
        if count == 0 {
            // CANN returns success for zero bytes before checking anything else (module docs).
            return Ok(());
        }
        let rt = runtime()?;
        // Arguments before the stream: CANN's ACL layer checks pointers and the kind before the
        // runtime looks at the stream.
        let Some(plan) = plan_copy(
            &rt.memory,
            dst as usize,
            dest_max,
            src as usize,
            count,
            kind,
        )?
        else {
            return Ok(());
        };
        let s = rt.resolve_stream(stream)?;
        if plan.is_host_to_host() {
            return Err(SimError::Unsupported(
                "asynchronous host-to-host copies are not supported".into(),
            ));
        }
        let pageable = plan.touches_pageable();
        let seq = s.enqueue(TaskKind::Copy(plan))?;
        if pageable {
            s.wait_for(seq);
            s.take_error()?;
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtMemset(
    dev_ptr: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
) -> aclError {
    acl_call("aclrtMemset", || {
        if count == 0 {
            // CANN returns success for zero bytes before checking anything else (module docs).
            return Ok(());
        }
        let rt = runtime()?;
        match plan_memset(&rt.memory, dev_ptr as usize, max_count, value, count)? {
            Some(plan) => plan.execute(&rt.memory),
            None => Ok(()),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtMemsetAsync(
    dev_ptr: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
    stream: aclrtStream,
) -> aclError {
    acl_call("aclrtMemsetAsync", || {
        if count == 0 {
            // CANN returns success for zero bytes before checking anything else (module docs).
            return Ok(());
        }
        let rt = runtime()?;
        let plan = plan_memset(&rt.memory, dev_ptr as usize, max_count, value, count)?;
        let s = rt.resolve_stream(stream)?;
        if let Some(plan) = plan {
            s.enqueue(TaskKind::Memset(plan))?;
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn aclrtGetMemInfo(
    attr: aclrtMemAttr::Type,
    free: *mut usize,
    total: *mut usize,
) -> aclError {
    acl_call("aclrtGetMemInfo", || {
        let (f, t) = (out(free, "free")?, out(total, "total")?);
        let rt = runtime()?;
        let device = rt.current_context()?.device;
        use aclrtMemAttr as a;
        let (free_b, total_b) = match attr {
            // The simulated device has only HBM (as a 910B); DDR attributes report none.
            a::ACL_DDR_MEM
            | a::ACL_DDR_MEM_HUGE
            | a::ACL_DDR_MEM_NORMAL
            | a::ACL_DDR_MEM_P2P_HUGE
            | a::ACL_DDR_MEM_P2P_NORMAL => (0, 0),
            a::ACL_HBM_MEM..=a::ACL_MEM_P2P_HUGE1G => rt.memory.mem_info(device)?,
            other => {
                return Err(SimError::InvalidParam(format!(
                    "unknown aclrtMemAttr {other}"
                )))
            }
        };
        // SAFETY: checked non-null out-parameters (export contract).
        unsafe {
            put(f, usize::try_from(free_b).unwrap_or(usize::MAX));
            put(t, usize::try_from(total_b).unwrap_or(usize::MAX));
        }
        Ok(())
    })
}
