//! The init check's shadow of a device allocation: which bytes something wrote since it was
//! allocated (`DSNPU_SIM_CHECK` with `init`).
//!
//! One bit per 4-byte granule, set by every write the simulator performs or is told about: host to
//! device and device to device copies, memsets, collectives' receive buffers, and kernel stores
//! (the host Ascend C layer reports its GM writes through the `gm_access` callback). A kernel read
//! of a granule whose bit is clear is a finding. A granule counts as written when any of its bytes
//! was, so a partial write can hide a read of its other bytes (a missed finding, never a false one).
//! Pool allocators that reuse blocks without `aclrtFree` keep the earlier owner's bits: the check
//! sees writes since the *device* allocation, not since the pool handed the block out.
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per shadow bit.
pub(crate) const GRANULE: usize = 4;

/// The written-bits of one allocation of `len` bytes.
pub(crate) struct Written {
    bits: Box<[AtomicU64]>,
    len: usize,
}

impl Written {
    pub(crate) fn new(len: usize) -> Written {
        let words = len.div_ceil(GRANULE).div_ceil(64);
        // Zeroed by the allocator (calloc: untouched pages stay uncommitted, which matters for the
        // shadow of a multi-GiB buffer), then viewed as atomics.
        let zeros = vec![0u64; words].into_boxed_slice();
        let raw = Box::into_raw(zeros) as *mut [AtomicU64];
        // SAFETY: AtomicU64 has the same size, alignment and bit validity as u64 (std docs), the
        // pointer comes from Box::into_raw of a boxed slice of `words` u64, and ownership moves
        // into the new box exactly once.
        let bits = unsafe { Box::from_raw(raw) };
        Written { bits, len }
    }

    /// The granules `[first, last]` covering bytes `[off, off + n)` (clamped to the allocation).
    fn granules(&self, off: usize, n: usize) -> Option<(usize, usize)> {
        let end = off.checked_add(n)?.min(self.len);
        (n > 0 && off < end).then(|| (off / GRANULE, (end - 1) / GRANULE))
    }

    /// Marks bytes `[off, off + n)` written.
    pub(crate) fn mark(&self, off: usize, n: usize) {
        let Some((g0, g1)) = self.granules(off, n) else {
            return;
        };
        let mut g = g0;
        while g <= g1 {
            let (w, b) = (g / 64, g % 64);
            let take = (64 - b).min(g1 - g + 1);
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << b
            };
            self.bits[w].fetch_or(mask, Ordering::Relaxed);
            g += take;
        }
    }

    /// The first byte offset in `[off, off + n)` whose granule nothing wrote, if any.
    pub(crate) fn first_unwritten(&self, off: usize, n: usize) -> Option<usize> {
        let (g0, g1) = self.granules(off, n)?;
        (g0..=g1)
            .find(|&g| self.bits[g / 64].load(Ordering::Relaxed) & (1u64 << (g % 64)) == 0)
            .map(|g| (g * GRANULE).max(off))
    }

    /// The end of the unwritten run starting at byte `off` (within `[off, limit)`), for messages.
    pub(crate) fn unwritten_until(&self, off: usize, limit: usize) -> usize {
        let limit = limit.min(self.len);
        let mut at = off;
        while at < limit && self.first_unwritten(at, 1) == Some(at) {
            at = (at / GRANULE + 1) * GRANULE;
        }
        at.min(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_finds_by_granule() {
        let w = Written::new(1000);
        assert_eq!(w.first_unwritten(0, 1000), Some(0));
        w.mark(0, 300);
        assert_eq!(w.first_unwritten(0, 300), None);
        assert_eq!(w.first_unwritten(0, 301), Some(300));
        assert_eq!(w.unwritten_until(300, 1000), 1000);
        w.mark(512, 8);
        assert_eq!(w.unwritten_until(300, 1000), 512);
        // A 2-byte write marks its whole granule (a missed finding, never a false one).
        w.mark(601, 2);
        assert_eq!(w.first_unwritten(600, 4), None);
        assert_eq!(w.first_unwritten(998, 10), Some(998));
        w.mark(0, 1000);
        assert_eq!(w.first_unwritten(0, 1000), None);
        assert_eq!(w.first_unwritten(0, 0), None);
    }
}
