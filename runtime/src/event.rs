//! Events: points in a stream to wait for (from the host or another stream) and to time.
//!
//! Validated: that an event and the stream it is recorded on or waited by belong to one device;
//! that both events of an elapsed-time query were created with [`EventFlags::TIME_LINE`]. An event
//! that was never recorded counts as complete (as in CUDA), without asking the runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dsnpu_ffi::{result, sys};

use crate::device::{Device, DeviceCore};
use crate::error::{Result, RuntimeError};
use crate::stream::{Stream, StreamInner};

/// Creation flags (`aclrtCreateEventWithFlag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFlags(u32);

impl EventFlags {
    /// Can be waited on by other streams (`ACL_EVENT_SYNC`).
    pub const SYNC: EventFlags = EventFlags(sys::ACL_EVENT_SYNC as u32);
    /// Records a timestamp, for [`Event::elapsed_ms`] (`ACL_EVENT_TIME_LINE`).
    pub const TIME_LINE: EventFlags = EventFlags(sys::ACL_EVENT_TIME_LINE as u32);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: EventFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for EventFlags {
    type Output = EventFlags;
    fn bitor(self, rhs: EventFlags) -> EventFlags {
        EventFlags(self.0 | rhs.0)
    }
}

/// An AscendCL event.
pub struct Event {
    handle: sys::aclrtEvent,
    core: Arc<DeviceCore>,
    flags: EventFlags,
    recorded: AtomicBool,
}

// SAFETY: the handle is a process-wide AscendCL object; every call binds the owning device's
// context first, and AscendCL's event calls may be made from any thread.
unsafe impl Send for Event {}
// SAFETY: as above; `&Event` methods only pass the handle to thread-safe AscendCL calls.
unsafe impl Sync for Event {}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("device", &self.core.ordinal())
            .field("flags", &self.flags)
            .finish()
    }
}

impl Event {
    /// A new event on `device`.
    pub fn new(device: &Device, flags: EventFlags) -> Result<Event> {
        Event::on_core(device.core().clone(), flags)
    }

    pub(crate) fn on_core(core: Arc<DeviceCore>, flags: EventFlags) -> Result<Event> {
        core.bind()?;
        let handle = result::stream::create_event_with_flag(flags.bits())?;
        Ok(Event {
            handle,
            core,
            flags,
            recorded: AtomicBool::new(false),
        })
    }

    pub fn flags(&self) -> EventFlags {
        self.flags
    }

    pub fn device_ordinal(&self) -> i32 {
        self.core.ordinal()
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.core
    }

    pub(crate) fn handle(&self) -> sys::aclrtEvent {
        self.handle
    }

    /// Records the event at the current end of `stream`.
    pub fn record(&self, stream: &Stream) -> Result<()> {
        self.record_on(stream.inner())
    }

    pub(crate) fn record_on(&self, stream: &StreamInner) -> Result<()> {
        self.core.expect_same("record event", stream.core())?;
        self.core.bind()?;
        // SAFETY: both handles are live (owned by self and by the stream) and on one device.
        unsafe { result::stream::record_event(self.handle, stream.handle())? };
        self.recorded.store(true, Ordering::Release);
        Ok(())
    }

    /// Blocks until the recorded point is reached; reports the stream's asynchronous errors.
    pub fn synchronize(&self) -> Result<()> {
        if !self.recorded.load(Ordering::Acquire) {
            return Ok(());
        }
        self.core.bind()?;
        // SAFETY: the handle is live.
        unsafe { result::stream::synchronize_event(self.handle) }.map_err(Into::into)
    }

    /// Whether the recorded point is reached, without blocking.
    pub fn is_complete(&self) -> Result<bool> {
        if !self.recorded.load(Ordering::Acquire) {
            return Ok(true);
        }
        self.core.bind()?;
        // SAFETY: the handle is live.
        Ok(unsafe { result::stream::query_event(self.handle)? })
    }

    /// Milliseconds from `self` to `end`; both must be recorded, complete and [`EventFlags::TIME_LINE`].
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32> {
        if !self.flags.contains(EventFlags::TIME_LINE) || !end.flags.contains(EventFlags::TIME_LINE)
        {
            return Err(RuntimeError::EventNotTimed);
        }
        self.core.expect_same("elapsed time", &end.core)?;
        self.core.bind()?;
        // SAFETY: both handles are live.
        Ok(unsafe { result::stream::elapsed_time(self.handle, end.handle)? })
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // Wait for the recorded point so that no queued record or wait still refers to the event.
        let _ = self.synchronize();
        if self.core.bind().is_ok() {
            // SAFETY: the handle is live, its work is complete, and it is not used after this.
            let _ = unsafe { result::stream::destroy_event(self.handle) };
        }
    }
}
