//! Streams and events.

use super::{acl, check, Result};
use crate::sys;

/// `aclrtCreateStream` in the current context.
pub fn create() -> Result<sys::aclrtStream> {
    let f = acl()?.aclrtCreateStream()?;
    let mut s = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtCreateStream", unsafe { f(&mut s) })?;
    Ok(s)
}

/// `aclrtDestroyStream`.
///
/// # Safety
/// `stream` is live, its work is complete, and it is not used after.
pub unsafe fn destroy(stream: sys::aclrtStream) -> Result<()> {
    let f = acl()?.aclrtDestroyStream()?;
    // SAFETY: forwarded to the caller.
    check("aclrtDestroyStream", unsafe { f(stream) })
}

/// `aclrtSynchronizeStream`: blocks until the stream's work is done; reports its asynchronous errors.
///
/// # Safety
/// `stream` is live (null means the current context's default stream).
pub unsafe fn synchronize(stream: sys::aclrtStream) -> Result<()> {
    let f = acl()?.aclrtSynchronizeStream()?;
    // SAFETY: forwarded to the caller.
    check("aclrtSynchronizeStream", unsafe { f(stream) })
}

/// `aclrtStreamQuery`: true when all work queued so far is complete.
///
/// # Safety
/// `stream` is live.
pub unsafe fn query(stream: sys::aclrtStream) -> Result<bool> {
    let f = acl()?.aclrtStreamQuery()?;
    let mut status = sys::aclrtStreamStatus::ACL_STREAM_STATUS_RESERVED;
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("aclrtStreamQuery", unsafe { f(stream, &mut status) })?;
    Ok(status == sys::aclrtStreamStatus::ACL_STREAM_STATUS_COMPLETE)
}

/// `aclrtStreamWaitEvent`: later work on `stream` waits for the event's last recorded point.
///
/// # Safety
/// `stream` and `event` are live.
pub unsafe fn wait_event(stream: sys::aclrtStream, event: sys::aclrtEvent) -> Result<()> {
    let f = acl()?.aclrtStreamWaitEvent()?;
    // SAFETY: forwarded to the caller.
    check("aclrtStreamWaitEvent", unsafe { f(stream, event) })
}

/// `aclrtCreateEvent` (default flags).
pub fn create_event() -> Result<sys::aclrtEvent> {
    let f = acl()?.aclrtCreateEvent()?;
    let mut e = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtCreateEvent", unsafe { f(&mut e) })?;
    Ok(e)
}

/// `aclrtCreateEventWithFlag` (`ACL_EVENT_SYNC`, `ACL_EVENT_TIME_LINE`, ...).
pub fn create_event_with_flag(flag: u32) -> Result<sys::aclrtEvent> {
    let f = acl()?.aclrtCreateEventWithFlag()?;
    let mut e = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    check("aclrtCreateEventWithFlag", unsafe { f(&mut e, flag) })?;
    Ok(e)
}

/// `aclrtRecordEvent`.
///
/// # Safety
/// `event` and `stream` are live and belong to the same device.
pub unsafe fn record_event(event: sys::aclrtEvent, stream: sys::aclrtStream) -> Result<()> {
    let f = acl()?.aclrtRecordEvent()?;
    // SAFETY: forwarded to the caller.
    check("aclrtRecordEvent", unsafe { f(event, stream) })
}

/// `aclrtSynchronizeEvent`: blocks until the event's recorded point is reached.
///
/// # Safety
/// `event` is live.
pub unsafe fn synchronize_event(event: sys::aclrtEvent) -> Result<()> {
    let f = acl()?.aclrtSynchronizeEvent()?;
    // SAFETY: forwarded to the caller.
    check("aclrtSynchronizeEvent", unsafe { f(event) })
}

/// `aclrtQueryEventStatus`: true when the recorded point is complete.
///
/// # Safety
/// `event` is live.
pub unsafe fn query_event(event: sys::aclrtEvent) -> Result<bool> {
    let f = acl()?.aclrtQueryEventStatus()?;
    let mut status = sys::aclrtEventRecordedStatus::ACL_EVENT_RECORDED_STATUS_NOT_READY;
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("aclrtQueryEventStatus", unsafe { f(event, &mut status) })?;
    Ok(status == sys::aclrtEventRecordedStatus::ACL_EVENT_RECORDED_STATUS_COMPLETE)
}

/// `aclrtEventElapsedTime`: milliseconds from `start` to `end` (both recorded and complete).
///
/// # Safety
/// Both events are live.
pub unsafe fn elapsed_time(start: sys::aclrtEvent, end: sys::aclrtEvent) -> Result<f32> {
    let f = acl()?.aclrtEventElapsedTime()?;
    let mut ms = 0f32;
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("aclrtEventElapsedTime", unsafe { f(&mut ms, start, end) })?;
    Ok(ms)
}

/// `aclrtDestroyEvent`.
///
/// # Safety
/// `event` is live, no queued work still waits on it, and it is not used after.
pub unsafe fn destroy_event(event: sys::aclrtEvent) -> Result<()> {
    let f = acl()?.aclrtDestroyEvent()?;
    // SAFETY: forwarded to the caller.
    check("aclrtDestroyEvent", unsafe { f(event) })
}
