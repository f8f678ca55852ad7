//! Events: records completed by stream workers, waited on by hosts and by other streams.
//!
//! Each `aclrtRecordEvent` issues a new generation and queues a record task; the stream worker
//! completes it with a wall-clock timestamp when it reaches it. `aclrtSynchronizeEvent` and
//! `aclrtStreamWaitEvent` wait for the generation issued before the call, so a wait never depends
//! on a record issued after it (no wait cycles). An event never recorded counts as complete, as in
//! the real runtime. Records on two streams at once may complete out of order; the event then
//! reflects the latest generation that completed.
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use dsnpu_ffi::sys;

use crate::error::SimError;
use crate::sync::{lock, wait};

/// Flags of `aclrtCreateEvent` (no flag argument): usable for both waits and timing.
pub(crate) const DEFAULT_FLAGS: u32 = (sys::ACL_EVENT_SYNC | sys::ACL_EVENT_TIME_LINE) as u32;

const KNOWN_FLAGS: u32 = (sys::ACL_EVENT_SYNC
    | sys::ACL_EVENT_CAPTURE_STREAM_PROGRESS
    | sys::ACL_EVENT_TIME_LINE
    | sys::ACL_EVENT_DEVICE_USE_ONLY
    | sys::ACL_EVENT_EXTERNAL
    | sys::ACL_EVENT_IPC) as u32;

/// Checks the flag bitmap of `aclrtCreateEventWithFlag`.
pub(crate) fn check_flags(flags: u32) -> Result<(), SimError> {
    let external = sys::ACL_EVENT_EXTERNAL as u32;
    if flags == 0 || flags & !KNOWN_FLAGS != 0 {
        return Err(SimError::InvalidParam(format!(
            "event flag {flags:#x} is not a combination of ACL_EVENT_* flags"
        )));
    }
    if flags & external != 0 && flags != external {
        return Err(SimError::InvalidParam(
            "ACL_EVENT_EXTERNAL cannot be combined with other flags".into(),
        ));
    }
    Ok(())
}

#[derive(Default)]
struct EventState {
    issued: u64,
    done: u64,
    stamp: Option<Instant>,
}

pub(crate) struct Event {
    pub id: u64,
    pub flags: u32,
    state: Mutex<EventState>,
    cv: Condvar,
}

impl Event {
    pub(crate) fn new(id: u64, flags: u32) -> Event {
        Event {
            id,
            flags,
            state: Mutex::new(EventState::default()),
            cv: Condvar::new(),
        }
    }

    /// Issues the next record generation (called under the recording stream's queue lock).
    pub(crate) fn issue(&self) -> u64 {
        let mut s = lock(&self.state);
        s.issued += 1;
        s.issued
    }

    /// The latest generation issued so far (0 = never recorded).
    pub(crate) fn issued(&self) -> u64 {
        lock(&self.state).issued
    }

    /// Completes generation `generation` now (stream worker).
    pub(crate) fn complete(&self, generation: u64) {
        let mut s = lock(&self.state);
        if generation > s.done {
            s.done = generation;
            s.stamp = Some(Instant::now());
        }
        self.cv.notify_all();
    }

    /// Blocks until generation `generation` (or a later one) completed.
    pub(crate) fn wait_for(&self, generation: u64) {
        let mut s = lock(&self.state);
        while s.done < generation {
            s = wait(&self.cv, s);
        }
    }

    /// Whether the latest issued record completed.
    pub(crate) fn is_complete(&self) -> bool {
        let s = lock(&self.state);
        s.done >= s.issued
    }

    pub(crate) fn can_sync(&self) -> bool {
        self.flags & sys::ACL_EVENT_SYNC as u32 != 0
    }

    /// The timestamp of the latest record, for `aclrtEventElapsedTime`.
    fn timestamp(&self, which: &str) -> Result<Instant, SimError> {
        if self.flags & sys::ACL_EVENT_TIME_LINE as u32 == 0 {
            return Err(SimError::EventTimestamp(format!(
                "{which} event {:#x} was created without ACL_EVENT_TIME_LINE and has no timestamps",
                self.id
            )));
        }
        let s = lock(&self.state);
        if s.issued == 0 {
            return Err(SimError::EventTimestamp(format!(
                "{which} event {:#x} was never recorded",
                self.id
            )));
        }
        match s.stamp {
            Some(t) if s.done >= s.issued => Ok(t),
            _ => Err(SimError::EventNotComplete(format!(
                "{which} event {:#x} has not completed its latest record: synchronize first",
                self.id
            ))),
        }
    }
}

/// Milliseconds from `start`'s latest record to `end`'s.
pub(crate) fn elapsed_ms(start: &Event, end: &Event) -> Result<f32, SimError> {
    let t0 = start.timestamp("start")?;
    let t1 = end.timestamp("end")?;
    match t1.checked_duration_since(t0) {
        Some(d) => Ok((d.as_secs_f64() * 1e3) as f32),
        None => Err(SimError::EventReversal(format!(
            "end event {:#x} completed before start event {:#x}",
            end.id, start.id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flags_are_validated() {
        assert!(check_flags(1).is_ok());
        assert!(check_flags(1 | 8).is_ok());
        assert!(check_flags(0).is_err());
        assert!(check_flags(0x100).is_err());
        assert!(check_flags(0x20 | 1).is_err());
        assert!(check_flags(0x20).is_ok());
    }

    #[test]
    fn generations_and_timing() {
        let a = Event::new(1, DEFAULT_FLAGS);
        let b = Event::new(2, DEFAULT_FLAGS);
        assert!(a.is_complete(), "never recorded counts as complete");
        assert_eq!(elapsed_ms(&a, &b).unwrap_err().acl_code(), 107006);
        let g = a.issue();
        assert!(!a.is_complete());
        assert_eq!(elapsed_ms(&a, &b).unwrap_err().acl_code(), 507006);
        a.complete(g);
        std::thread::sleep(Duration::from_millis(20));
        let h = b.issue();
        b.complete(h);
        let ms = elapsed_ms(&a, &b).unwrap();
        assert!((20.0..2000.0).contains(&ms), "{ms}");
        assert_eq!(elapsed_ms(&b, &a).unwrap_err().acl_code(), 107007);
        let untimed = Event::new(3, sys::ACL_EVENT_SYNC as u32);
        assert_eq!(elapsed_ms(&untimed, &a).unwrap_err().acl_code(), 107006);
    }
}
