//! Contexts and the calling thread's current context.
//!
//! `aclrtSetDevice` makes the device's default context (shared by all threads, counted per call)
//! current on the calling thread; `aclrtResetDevice` drops one count and, at zero, destroys the
//! default context and its streams (after draining them). `aclrtCreateContext` makes a new context
//! current; `aclrtSetCurrentContext` switches. A context owns a default stream (the NULL stream)
//! and the streams created while it was current; a stream is usable only from a thread whose
//! current context is the stream's (`ACL_ERROR_RT_STREAM_CONTEXT` otherwise, as the real runtime).
//! Device memory is not reclaimed by a reset: the simulator keeps allocations until freed or until
//! `aclFinalize`.
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use crate::error::SimError;
use crate::handles::{from_ptr, next_handle};
use crate::runtime::Runtime;
use crate::stream::Stream;
use crate::sync::lock;

pub(crate) struct Context {
    pub id: u64,
    pub device: i32,
    pub is_default: bool,
    pub default_stream: Arc<Stream>,
    /// Handles of the streams created in this context.
    pub streams: Mutex<Vec<u64>>,
}

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

fn current_id() -> u64 {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

fn set_current(id: u64) {
    let _ = CURRENT.try_with(|c| c.set(id));
}

impl Runtime {
    fn new_context(&self, device: i32, is_default: bool) -> Result<Arc<Context>, SimError> {
        self.check_device(device)?;
        let id = next_handle();
        let default_stream = Stream::spawn(next_handle(), device, id, self.worker_env())?;
        let ctx = Arc::new(Context {
            id,
            device,
            is_default,
            default_stream,
            streams: Mutex::new(Vec::new()),
        });
        self.contexts.insert(id, Arc::clone(&ctx));
        Ok(ctx)
    }

    /// Drains and destroys the streams of a context that was removed from the registry.
    fn teardown(&self, ctx: &Context) {
        let ids = std::mem::take(&mut *lock(&ctx.streams));
        for id in ids {
            if let Some(s) = self.streams.remove_id(id) {
                s.close();
            }
        }
        ctx.default_stream.close();
        if current_id() == ctx.id {
            set_current(0);
        }
    }

    /// The calling thread's current context.
    pub(crate) fn current_context(&self) -> Result<Arc<Context>, SimError> {
        match current_id() {
            0 => Err(SimError::NoContext),
            id => self.contexts.get_id(id).ok_or(SimError::NoContext),
        }
    }

    /// `aclrtSetDevice`.
    pub(crate) fn set_device(&self, device: i32) -> Result<(), SimError> {
        let d = self.check_device(device)?;
        let mut slot = lock(&self.defaults[d]);
        if slot.id == 0 || self.contexts.get_id(slot.id).is_none() {
            slot.id = self.new_context(device, true)?.id;
            slot.refs = 0;
        }
        slot.refs += 1;
        set_current(slot.id);
        Ok(())
    }

    /// `aclrtResetDevice`: a reset of a device that is not set is a no-op.
    pub(crate) fn reset_device(&self, device: i32) -> Result<(), SimError> {
        let d = self.check_device(device)?;
        let mut slot = lock(&self.defaults[d]);
        if slot.refs == 0 {
            return Ok(());
        }
        slot.refs -= 1;
        if slot.refs == 0 {
            if let Some(ctx) = self.contexts.remove_id(slot.id) {
                self.teardown(&ctx);
            }
            slot.id = 0;
        }
        Ok(())
    }

    /// `aclrtCreateContext`: the new context becomes current.
    pub(crate) fn create_context(&self, device: i32) -> Result<u64, SimError> {
        let ctx = self.new_context(device, false)?;
        set_current(ctx.id);
        Ok(ctx.id)
    }

    /// `aclrtDestroyContext`.
    pub(crate) fn destroy_context(&self, handle: *mut c_void) -> Result<(), SimError> {
        let ctx = self.contexts.get(handle)?;
        if ctx.is_default {
            return Err(SimError::InvalidParam(format!(
                "context {:#x} is the default context of device {}: release it with aclrtResetDevice",
                ctx.id, ctx.device
            )));
        }
        self.contexts.remove(handle)?;
        self.teardown(&ctx);
        Ok(())
    }

    /// `aclrtSetCurrentContext`.
    pub(crate) fn set_current_context(&self, handle: *mut c_void) -> Result<(), SimError> {
        let ctx = self.contexts.get(handle)?;
        set_current(ctx.id);
        Ok(())
    }

    /// A stream handle used on this thread: NULL is the current context's default stream; other
    /// streams must belong to the current context.
    pub(crate) fn resolve_stream(&self, handle: *mut c_void) -> Result<Arc<Stream>, SimError> {
        let ctx = self.current_context()?;
        if handle.is_null() {
            return Ok(Arc::clone(&ctx.default_stream));
        }
        let s = self.streams.get(handle)?;
        if s.ctx != ctx.id {
            return Err(SimError::StreamContext {
                stream: s.id as usize,
                stream_ctx: s.ctx as usize,
                device: s.device,
                current: ctx.id as usize,
            });
        }
        Ok(s)
    }

    /// `aclrtCreateStream` in the current context.
    pub(crate) fn create_stream(&self) -> Result<u64, SimError> {
        let ctx = self.current_context()?;
        let id = next_handle();
        let s = Stream::spawn(id, ctx.device, ctx.id, self.worker_env())?;
        self.streams.insert(id, s);
        lock(&ctx.streams).push(id);
        Ok(id)
    }

    /// `aclrtDestroyStream`: drains the stream, then destroys it (a pending error is dropped).
    pub(crate) fn destroy_stream(&self, handle: *mut c_void) -> Result<(), SimError> {
        if handle.is_null() {
            return Err(SimError::InvalidParam(
                "the default stream cannot be destroyed".into(),
            ));
        }
        let s = self.resolve_stream(handle)?;
        self.streams.remove_id(s.id);
        if let Some(ctx) = self.contexts.get_id(s.ctx) {
            lock(&ctx.streams).retain(|&id| id != from_ptr(handle));
        }
        s.close();
        Ok(())
    }
}
