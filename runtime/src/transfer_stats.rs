//! Counters of what crosses between host and device and of host waits, kept per calling thread.
//!
//! Every host↔device copy this crate makes is counted where it is made (the synchronous
//! [`DeviceBuffer`](crate::DeviceBuffer) copies, the queued [`Stream`](crate::Stream) copies, and the
//! pinned staging that carries kernel tiling structs), and so is every host wait (a stream
//! synchronization, the wait for a buffer's queued work a download makes before it reads; the
//! staging waits for tiling slots are counted on their own). The
//! counts belong to the thread that issued the call, so concurrent tests and clients do not see each
//! other's traffic; a caller takes a [`transfer_stats`] snapshot before and after a piece of work and
//! subtracts.

use std::cell::Cell;

/// Totals since the thread started (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Host-to-device data copies (not counting tiling structs).
    pub h2d_copies: u64,
    pub h2d_bytes: u64,
    pub d2h_copies: u64,
    pub d2h_bytes: u64,
    /// Kernel tiling structs copied to the device with their launches.
    pub tiling_copies: u64,
    pub tiling_bytes: u64,
    /// Times the host blocked until device work was done: stream synchronizations and waits for a
    /// buffer's queued work before host access (a download, an upload into a buffer in use).
    pub syncs: u64,
    /// Times every pinned staging slot for tiling structs was in flight and the host waited for the
    /// oldest (many launches queued without a synchronization).
    pub staging_waits: u64,
}

impl std::ops::Sub for TransferStats {
    type Output = TransferStats;

    /// The counts between two snapshots (`later - earlier`).
    fn sub(self, o: TransferStats) -> TransferStats {
        TransferStats {
            h2d_copies: self.h2d_copies - o.h2d_copies,
            h2d_bytes: self.h2d_bytes - o.h2d_bytes,
            d2h_copies: self.d2h_copies - o.d2h_copies,
            d2h_bytes: self.d2h_bytes - o.d2h_bytes,
            tiling_copies: self.tiling_copies - o.tiling_copies,
            tiling_bytes: self.tiling_bytes - o.tiling_bytes,
            syncs: self.syncs - o.syncs,
            staging_waits: self.staging_waits - o.staging_waits,
        }
    }
}

thread_local! {
    static STATS: Cell<TransferStats> = const { Cell::new(TransferStats {
        h2d_copies: 0,
        h2d_bytes: 0,
        d2h_copies: 0,
        d2h_bytes: 0,
        tiling_copies: 0,
        tiling_bytes: 0,
        syncs: 0,
        staging_waits: 0,
    }) };
}

/// This thread's totals so far.
pub fn transfer_stats() -> TransferStats {
    STATS.with(Cell::get)
}

fn update(f: impl FnOnce(&mut TransferStats)) {
    STATS.with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

pub(crate) fn note_h2d(bytes: usize) {
    update(|s| {
        s.h2d_copies += 1;
        s.h2d_bytes += bytes as u64;
    });
}

pub(crate) fn note_d2h(bytes: usize) {
    update(|s| {
        s.d2h_copies += 1;
        s.d2h_bytes += bytes as u64;
    });
}

pub(crate) fn note_tiling(bytes: usize) {
    update(|s| {
        s.tiling_copies += 1;
        s.tiling_bytes += bytes as u64;
    });
}

pub(crate) fn note_sync() {
    update(|s| s.syncs += 1);
}

pub(crate) fn note_staging_wait() {
    update(|s| s.staging_waits += 1);
}
