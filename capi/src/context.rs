//! [`DsnpuContext`]: device `N` opened and dsnpu's kernels loaded on it, plus the library's wrappers
//! of the caller's streams.
//!
//! A caller's `aclrtStream` is wrapped once per context ([`dsnpu_runtime::Stream::borrow_raw`]) and
//! the wrapper kept until [`dsnpu_context_release_stream`] or [`dsnpu_context_destroy`]: the memory
//! pool records which stream last used each block it hands out (tiling uploads, workspaces), so the
//! wrapper must outlive that bookkeeping. Releasing waits for the stream's work, then forgets it.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use dsnpu_kernels::launch::KernelLibrary;
use dsnpu_runtime::{Device, Stream};

use crate::error::{guard, CapiError, Result};

/// An opened device with dsnpu's kernels loaded (opaque to C).
pub struct DsnpuContext {
    lib: Arc<KernelLibrary>,
    streams: Mutex<HashMap<usize, Stream>>,
}

impl DsnpuContext {
    pub fn lib(&self) -> &KernelLibrary {
        &self.lib
    }

    /// The wrapper of the caller's `stream` (made on first use).
    pub fn stream(&self, func: &'static str, stream: *mut c_void) -> Result<Stream> {
        if stream.is_null() {
            return Err(CapiError::Null {
                func,
                arg: "stream",
            });
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(&(stream as usize)) {
            return Ok(s.clone());
        }
        // SAFETY: the C contract of every entry point: `stream` is a live stream of this context's
        // device in its default context, kept alive until dsnpu_context_release_stream or
        // dsnpu_context_destroy; it is wrapped once (this map).
        let s = unsafe { Stream::borrow_raw(self.lib.device(), stream.cast()) }
            .map_err(|source| CapiError::Runtime { func, source })?;
        streams.insert(stream as usize, s.clone());
        Ok(s)
    }
}

/// The context behind a C pointer.
///
/// # Safety
/// `ctx` is null or a pointer from [`dsnpu_context_create`] not yet destroyed.
pub unsafe fn context<'a>(
    func: &'static str,
    ctx: *const DsnpuContext,
) -> Result<&'a DsnpuContext> {
    crate::args::host_ptr(func, "ctx", ctx)?;
    crate::handles::check(func, "ctx", "context", ctx)?;
    // SAFETY: non-null, aligned and live (checked above), not being destroyed (the caller's contract).
    Ok(unsafe { &*ctx })
}

/// Opens device `device` (`aclInit` and `aclrtSetDevice` as needed, in the device's default context)
/// and loads dsnpu's kernels on it; stores the context in `*out` (NULL when it fails). On a CANN
/// install the AI Core kernel build is required; with the simulator the host kernels load.
///
/// # Safety
/// `out` is null (an error) or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_context_create(device: i32, out: *mut *mut DsnpuContext) -> i32 {
    const F: &str = "dsnpu_context_create";
    guard(F, || {
        // SAFETY: writable if non-null (the caller's contract).
        unsafe { crate::args::clear_out(F, out) }?;
        let dev = Device::new(device).map_err(|source| CapiError::Runtime { func: F, source })?;
        let lib =
            KernelLibrary::get(&dev).map_err(|source| CapiError::Kernel { func: F, source })?;
        let ctx = crate::handles::register(DsnpuContext {
            lib,
            streams: Mutex::default(),
        });
        // SAFETY: `out` is non-null and writable (the caller's contract).
        unsafe { out.write(ctx) };
        Ok(())
    })
}

/// Waits for the work this library queued on `stream` and forgets its wrapper. Call it before
/// `aclrtDestroyStream` on a stream passed to any entry point. Releasing a stream never used is a
/// no-op.
///
/// # Safety
/// `ctx` is null or a live context; `stream` is still a live stream.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_context_release_stream(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
) -> i32 {
    const F: &str = "dsnpu_context_release_stream";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let removed = ctx
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(stream as usize));
        if let Some(s) = removed {
            // Not a mere drop: another thread's allocation may hold the wrapper for a moment and
            // would then reach the stream after the caller destroyed it.
            s.release()
                .map_err(|source| CapiError::Runtime { func: F, source })?;
        }
        Ok(())
    })
}

/// Releases every stream of the context (waiting for their work), unloads the kernels and closes the
/// device when nothing else of this library uses it. `ctx` must not be used afterwards: a destroyed
/// context passed again (here or to any entry point) is `DSNPU_STATUS_INVALID_ARGUMENT`, unless a
/// later create got the same address. NULL is a no-op.
///
/// # Safety
/// `ctx` is null or a pointer from [`dsnpu_context_create`]; no other thread uses it.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_context_destroy(ctx: *mut DsnpuContext) -> i32 {
    const F: &str = "dsnpu_context_destroy";
    guard(F, || {
        if !ctx.is_null() {
            // No context is misaligned: refused rather than handed to the allocator.
            crate::args::host_ptr(F, "ctx", ctx)?;
            // SAFETY: a live one came from dsnpu_context_create; no other thread uses it (the
            // contract). A destroyed one is refused.
            let ctx = unsafe { crate::handles::take(F, "ctx", "context", ctx) }?;
            let streams =
                std::mem::take(&mut *ctx.streams.lock().unwrap_or_else(|e| e.into_inner()));
            // Released as dsnpu_context_release_stream does, not merely dropped. A failure of their
            // work is the synchronizing calls' to report (as before); the context goes regardless.
            for s in streams.into_values() {
                let _ = s.release();
            }
        }
        Ok(())
    })
}
