//! Stream-order tracking for buffers (the cudarc idea, made race-free with a lock).
//!
//! Every buffer records the stream on which its last operation was queued. Invariant: all earlier
//! operations on the buffer complete before the work queued so far on that stream does. An operation
//! on another stream first makes that stream wait for an event recorded on the previous one (a
//! device-side wait, no host block); host access and freeing first wait for such an event on the
//! host. The lock is held from the wait until the operation is queued, so that two threads using
//! one buffer on two streams cannot interleave between the two.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Result;
use crate::event::{Event, EventFlags};
use crate::stream::StreamInner;

#[derive(Default)]
pub(crate) struct TrackState {
    /// The stream of the last queued operation (`None`: nothing pending, host buffers only).
    pub(crate) stream: Option<Arc<StreamInner>>,
    /// Reused for every join; replaced when the previous stream is on another device.
    pub(crate) event: Option<Event>,
    /// The stream's queue sequence number of the last operation (see `StreamInner::note_queued`): once
    /// the stream has been synchronized past it, host access needs no wait.
    pub(crate) seq: u64,
}

impl TrackState {
    fn event_for(&mut self, stream: &StreamInner) -> Result<&Event> {
        let reusable = self
            .event
            .as_ref()
            .is_some_and(|e| stream.core().is(e.core()));
        if !reusable {
            self.event = Some(Event::on_core(stream.core().clone(), EventFlags::SYNC)?);
        }
        Ok(self.event.as_ref().expect("set above"))
    }

    /// Orders the buffer's earlier work before work queued next on `next`. Across devices (pinned
    /// host buffers only) this blocks the host instead.
    pub(crate) fn join(&mut self, next: &Arc<StreamInner>) -> Result<()> {
        let Some(prev) = self.stream.clone() else {
            return Ok(());
        };
        if prev.id() == next.id() {
            return Ok(());
        }
        if !prev.core().is(next.core()) {
            return self.settle();
        }
        let event = self.event_for(&prev)?;
        event.record_on(&prev)?;
        next.wait_event(event)
    }

    /// Blocks until the buffer's queued work is complete; afterwards nothing is pending.
    pub(crate) fn settle(&mut self) -> Result<()> {
        let Some(prev) = self.stream.clone() else {
            return Ok(());
        };
        if prev.completed_through(self.seq) {
            // A stream synchronization since the last operation already waited for it.
            self.stream = None;
            return Ok(());
        }
        let event = self.event_for(&prev)?;
        event.record_on(&prev)?;
        crate::transfer_stats::note_sync();
        event.synchronize()?;
        self.stream = None;
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Tracker {
    state: Mutex<TrackState>,
}

impl Tracker {
    pub(crate) fn new(stream: Option<Arc<StreamInner>>) -> Tracker {
        Tracker {
            state: Mutex::new(TrackState {
                // Fresh memory from a stream's pool may still be used by what is queued so far, or by
                // another stream that this one was made to wait for: only a synchronization after
                // now covers it, so the hand-out gets a sequence number of its own.
                seq: stream.as_ref().map_or(0, |s| s.note_queued()),
                stream,
                event: None,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, TrackState> {
        // A panic while holding the lock leaves a consistent state: fields are only assigned whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get_mut(&mut self) -> &mut TrackState {
        self.state.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

/// Locks several trackers in address order (no lock-order deadlock), each once.
pub(crate) fn lock_all<'a>(trackers: &[&'a Tracker]) -> Vec<MutexGuard<'a, TrackState>> {
    let mut sorted: Vec<&Tracker> = trackers.to_vec();
    sorted.sort_by_key(|t| *t as *const Tracker as usize);
    sorted.dedup_by_key(|t| *t as *const Tracker as usize);
    sorted.into_iter().map(Tracker::lock).collect()
}

/// Runs `op` on `stream` with every tracked buffer ordered before it, then marks them as last used
/// on `stream`.
pub(crate) fn run_ordered<R>(
    stream: &Arc<StreamInner>,
    trackers: &[&Tracker],
    op: impl FnOnce() -> Result<R>,
) -> Result<R> {
    let mut guards = lock_all(trackers);
    for g in guards.iter_mut() {
        g.join(stream)?;
    }
    let out = op();
    let seq = stream.note_queued();
    // Even a failed enqueue leaves the joins queued on `stream`, so `stream` is now the right one.
    for g in guards.iter_mut() {
        g.stream = Some(stream.clone());
        g.seq = seq;
    }
    out
}
