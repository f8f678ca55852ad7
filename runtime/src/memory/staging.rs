//! Pinned staging memory for small uploads queued on a stream (kernel tiling structs).
//!
//! An asynchronous host-to-device copy needs page-locked source memory that stays untouched until
//! the copy is done. Each stream keeps a few pinned slots; a slot is reused once the event recorded
//! after its last copy has completed, so uploads never block unless every slot is still in flight.

use std::ffi::c_void;
use std::sync::Mutex;

use dsnpu_ffi::{result, sys};

use crate::error::Result;
use crate::event::{Event, EventFlags};
use crate::stream::StreamInner;

// A model step queues a few hundred launches before its one synchronization; each holds a slot until its
// copy is done, so the ring must cover a step or the host stalls on the oldest slot mid-step.
const MAX_SLOTS: usize = 256;
// Tiling structs are tens of bytes.
const MIN_SLOT_BYTES: usize = 256;

struct Slot {
    host: *mut c_void,
    cap: usize,
    /// Recorded after the slot's last copy.
    done: Event,
}

// SAFETY: the pinned pointer is owned by the slot and only touched under the staging mutex.
unsafe impl Send for Slot {}

impl Slot {
    fn new(stream: &StreamInner, len: usize) -> Result<Slot> {
        let cap = len.max(MIN_SLOT_BYTES).next_power_of_two();
        let done = Event::on_core(stream.core().clone(), EventFlags::SYNC)?;
        let host = result::memory::malloc_host(cap)?;
        Ok(Slot { host, cap, done })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The copy reading this memory must be complete before it is freed.
        if self.done.synchronize().is_ok() && self.done.core().bind().is_ok() {
            // SAFETY: from malloc_host; its last copy is complete and nothing else refers to it.
            let _ = unsafe { result::memory::free_host(self.host) };
        }
    }
}

#[derive(Default)]
pub(crate) struct Staging {
    /// The slots and the ring cursor: the next slot to try (the oldest in use when all are).
    slots: Mutex<(Vec<Slot>, usize)>,
}

impl Staging {
    /// Queues a copy of `bytes` to device address `dst` (valid for `dst_max >= bytes.len()` bytes)
    /// on `stream`.
    ///
    /// # Safety
    /// `dst` is device memory of `stream`'s device, valid for `dst_max` bytes until the copy
    /// completes, and ordered on `stream` (no other stream uses it meanwhile).
    pub(crate) unsafe fn upload(
        &self,
        stream: &StreamInner,
        dst: *mut c_void,
        dst_max: usize,
        bytes: &[u8],
    ) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, cursor) = &mut *guard;
        stream.core().bind()?;
        // Slots are used in ring order, so the one at the cursor is the oldest: one event query per
        // upload instead of a scan.
        let next = (!slots.is_empty()).then_some(*cursor % slots.len().max(1));
        let i = match next {
            Some(i) if slots[i].cap >= bytes.len() && slots[i].done.is_complete()? => i,
            _ if slots.len() < MAX_SLOTS => {
                slots.insert(*cursor, Slot::new(stream, bytes.len())?);
                *cursor
            }
            _ => {
                // Every slot is in flight: wait for the oldest and replace it if it is too small.
                let i = *cursor % slots.len();
                crate::transfer_stats::note_staging_wait();
                slots[i].done.synchronize()?;
                if slots[i].cap < bytes.len() {
                    slots[i] = Slot::new(stream, bytes.len())?;
                }
                i
            }
        };
        *cursor = i + 1;
        let slot = &slots[i];
        // SAFETY: the slot holds `cap >= bytes.len()` pinned bytes that no queued copy reads any more
        // (its `done` event is complete), and the slot is exclusively ours under the lock.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.host.cast::<u8>(), bytes.len())
        };
        // SAFETY: source is pinned and stays untouched until `done` (recorded next) completes;
        // destination per this function's contract.
        unsafe {
            result::memory::memcpy_async(
                dst,
                dst_max,
                slot.host,
                bytes.len(),
                sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE,
                stream.handle(),
            )?
        };
        crate::transfer_stats::note_tiling(bytes.len());
        if let Err(e) = slot.done.record_on(stream) {
            // Without the event the slot would look idle while its copy may still run.
            let _ = stream.synchronize();
            return Err(e);
        }
        Ok(())
    }

    /// Frees every slot (waiting for its copy first).
    pub(crate) fn clear(&self) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clear();
    }
}
