//! Simulated device memory and pinned host memory: host allocations tracked in one table.
//!
//! * Device allocations (`aclrtMalloc`) are charged `round_up(size, 32) + 32` bytes against their
//!   device's capacity, like the real allocator, are 64-byte aligned and zero-filled (the real
//!   memory is uninitialized; zero keeps runs reproducible). Past capacity → the real OOM code.
//! * Pinned host allocations (`aclrtMallocHost`) are 64-byte aligned and not charged to a device.
//! * Launch-argument buffers are registered for the duration of a launch so that kernels can
//!   `check_gm` pointers into them (placeholders).
//!
//! Every range the simulator touches is first located in the table ([`Memory::classify`]): inside
//! one live allocation (only its requested length counts, not the padding), untracked (outside
//! every allocation: pageable host memory, trusted by the caller), or invalid (straddling an
//! allocation's end or start) — never a silent partial access.
//!
//! Freed memory is not returned to the host while a task that may have validated it is running:
//! every access runs inside an [`Access`] guard, and a free during an access parks the block until
//! the moment no access is in flight. A free therefore never turns a running copy or kernel into a
//! use-after-free; the freed range itself fails validation at once.
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::RwLock;

use crate::error::SimError;
use crate::sync::{read, write};

/// Alignment of device allocations (the real runtime guarantees 64 bytes).
pub const DEVICE_ALIGN: usize = 64;
/// Alignment of pinned host allocations.
pub const HOST_ALIGN: usize = 64;

/// Bytes `aclrtMalloc(size)` takes from the device: `round_up(size, 32) + 32`.
pub fn device_charge(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(32)?.checked_add(32)
}

/// An empty byte vector with room for `len` bytes, or `HostAlloc` instead of aborting the
/// process when the host cannot provide it (sizes here derive from caller input).
pub(crate) fn try_bytes(len: usize) -> Result<Vec<u8>, SimError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| SimError::HostAlloc(len))?;
    Ok(v)
}

/// A copy of `src`, or `HostAlloc`.
pub(crate) fn try_copy(src: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut v = try_bytes(src.len())?;
    v.extend_from_slice(src);
    Ok(v)
}

/// What an allocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Device(i32),
    PinnedHost,
    LaunchArgs(i32),
}

/// Where a byte range lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// Inside one live allocation.
    Tracked(Space),
    /// Outside every allocation (pageable host memory as far as the simulator can tell).
    Untracked,
}

/// A zero-filled, aligned heap block owned by the table.
struct RawBlock {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a RawBlock exclusively owns its heap allocation, which has no thread affinity.
unsafe impl Send for RawBlock {}
// SAFETY: a shared RawBlock only exposes its address; accesses to the bytes go through validated
// raw pointers under the Access protocol described in the module docs.
unsafe impl Sync for RawBlock {}

impl RawBlock {
    fn alloc_zeroed(size: usize, align: usize) -> Option<RawBlock> {
        let layout = Layout::from_size_align(size.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        NonNull::new(p).map(|ptr| RawBlock { ptr, layout })
    }

    fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for RawBlock {
    fn drop(&mut self) {
        // SAFETY: allocated by alloc_zeroed with exactly this layout, and dropped once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

struct Alloc {
    /// Requested bytes: the valid range.
    len: usize,
    /// Bytes charged to the device (0 for host and argument memory).
    charged: usize,
    space: Space,
    block: RawBlock,
}

impl Alloc {
    fn block_len(&self) -> usize {
        self.block.layout.size()
    }
}

struct Table {
    allocs: BTreeMap<usize, Alloc>,
    used: Vec<u64>,
    /// Freed blocks waiting for a moment without accesses in flight.
    parked: Vec<RawBlock>,
}

/// The allocation table of all devices plus pinned host memory.
pub(crate) struct Memory {
    table: RwLock<Table>,
    in_flight: AtomicUsize,
    parked: AtomicUsize,
    capacity: u64,
}

/// Keeps every block validated during its lifetime from being returned to the host.
pub(crate) struct Access<'a> {
    mem: &'a Memory,
}

impl Drop for Access<'_> {
    fn drop(&mut self) {
        if self.mem.in_flight.fetch_sub(1, SeqCst) == 1 && self.mem.parked.load(SeqCst) > 0 {
            let mut t = write(&self.mem.table);
            self.mem.release_parked(&mut t);
        }
    }
}

fn space_name(space: Space) -> String {
    match space {
        Space::Device(d) => format!("device {d}"),
        Space::PinnedHost => "pinned host".to_string(),
        Space::LaunchArgs(d) => format!("launch-argument (device {d})"),
    }
}

impl Memory {
    pub(crate) fn new(devices: u32, capacity: u64) -> Memory {
        Memory {
            table: RwLock::new(Table {
                allocs: BTreeMap::new(),
                used: vec![0; devices as usize],
                parked: Vec::new(),
            }),
            in_flight: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            capacity,
        }
    }

    fn device_index(&self, t: &Table, device: i32) -> Result<usize, SimError> {
        usize::try_from(device)
            .ok()
            .filter(|&d| d < t.used.len())
            .ok_or(SimError::InvalidDevice {
                id: device,
                count: t.used.len() as u32,
            })
    }

    /// Drops parked blocks when no access is in flight. Called with the table write-locked, so no
    /// new access can validate anything meanwhile; parked blocks are out of the table already.
    fn release_parked(&self, t: &mut Table) {
        if self.in_flight.load(SeqCst) == 0 && !t.parked.is_empty() {
            let n = t.parked.len();
            t.parked.clear();
            self.parked.fetch_sub(n, SeqCst);
        }
    }

    /// Starts an access: blocks validated from now on stay allocated until the guard drops.
    pub(crate) fn begin_access(&self) -> Access<'_> {
        self.in_flight.fetch_add(1, SeqCst);
        Access { mem: self }
    }

    /// `aclrtMalloc` on `device`.
    pub(crate) fn malloc_device(&self, device: i32, size: usize) -> Result<usize, SimError> {
        if size == 0 {
            return Err(SimError::InvalidParam("size must not be 0".into()));
        }
        let total = self.capacity;
        let (d, charged) = {
            let mut t = write(&self.table);
            let d = self.device_index(&t, device)?;
            let free = total.saturating_sub(t.used[d]);
            let charged = device_charge(size)
                .filter(|&c| c as u64 <= free)
                .ok_or_else(|| SimError::OutOfMemory {
                    device,
                    requested: size,
                    charged: device_charge(size).unwrap_or(usize::MAX),
                    free,
                    total,
                })?;
            // Reserve before allocating outside the lock, so concurrent callers see the charge.
            t.used[d] += charged as u64;
            (d, charged)
        };
        let Some(block) = RawBlock::alloc_zeroed(charged, DEVICE_ALIGN) else {
            let mut t = write(&self.table);
            t.used[d] -= charged as u64;
            let free = total.saturating_sub(t.used[d]);
            // The simulated device had room but the host could not back it: still out of memory.
            return Err(SimError::OutOfMemory {
                device,
                requested: size,
                charged,
                free,
                total,
            });
        };
        let addr = block.addr();
        write(&self.table).allocs.insert(
            addr,
            Alloc {
                len: size,
                charged,
                space: Space::Device(device),
                block,
            },
        );
        Ok(addr)
    }

    /// `aclrtMallocHost`.
    pub(crate) fn malloc_host(&self, size: usize) -> Result<usize, SimError> {
        if size == 0 {
            return Err(SimError::InvalidParam("size must not be 0".into()));
        }
        let block = RawBlock::alloc_zeroed(size, HOST_ALIGN).ok_or(SimError::HostAlloc(size))?;
        let addr = block.addr();
        write(&self.table).allocs.insert(
            addr,
            Alloc {
                len: size,
                charged: 0,
                space: Space::PinnedHost,
                block,
            },
        );
        Ok(addr)
    }

    /// Registers a copy of a launch's argument bytes as device-visible memory.
    pub(crate) fn insert_args(&self, device: i32, bytes: &[u8]) -> Result<usize, SimError> {
        let block = RawBlock::alloc_zeroed(bytes.len(), DEVICE_ALIGN)
            .ok_or(SimError::HostAlloc(bytes.len()))?;
        // SAFETY: the block is at least bytes.len() long, freshly allocated and not shared yet.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), block.ptr.as_ptr(), bytes.len()) };
        let addr = block.addr();
        write(&self.table).allocs.insert(
            addr,
            Alloc {
                len: bytes.len(),
                charged: 0,
                space: Space::LaunchArgs(device),
                block,
            },
        );
        Ok(addr)
    }

    /// Unregisters a launch-argument buffer.
    pub(crate) fn remove_args(&self, addr: usize) {
        let mut t = write(&self.table);
        if matches!(t.allocs.get(&addr), Some(a) if matches!(a.space, Space::LaunchArgs(_))) {
            if let Some(a) = t.allocs.remove(&addr) {
                self.park(&mut t, a.block);
            }
        }
    }

    fn park(&self, t: &mut Table, block: RawBlock) {
        if self.in_flight.load(SeqCst) == 0 {
            drop(block);
        } else {
            t.parked.push(block);
            self.parked.fetch_add(1, SeqCst);
        }
        self.release_parked(t);
    }

    /// `aclrtFree` (`host == false`) or `aclrtFreeHost` (`host == true`) of `addr`.
    pub(crate) fn free(&self, addr: usize, host: bool) -> Result<(), SimError> {
        let (api, want) = if host {
            ("aclrtMallocHost", "pinned host")
        } else {
            ("aclrtMalloc", "device")
        };
        let mut t = write(&self.table);
        let space = match t.allocs.get(&addr) {
            Some(a) => a.space,
            None => {
                let inside = t
                    .allocs
                    .range(..addr)
                    .next_back()
                    .filter(|(s, a)| addr < *s + a.block_len());
                return Err(SimError::BadFree(match inside {
                    Some((start, a)) => format!(
                        "{addr:#x} is inside the {} allocation at {start:#x} (offset {}), not its start",
                        space_name(a.space),
                        addr - start
                    ),
                    None => format!("{addr:#x} is not {want} memory from {api}: never allocated, or already freed"),
                }));
            }
        };
        let ok = match space {
            Space::Device(_) => !host,
            Space::PinnedHost => host,
            Space::LaunchArgs(_) => false,
        };
        if !ok {
            let how = if host { "aclrtFree" } else { "aclrtFreeHost" };
            return Err(SimError::BadFree(format!(
                "{addr:#x} is {} memory, not {want} memory: free it with {how}",
                space_name(space)
            )));
        }
        let Some(a) = t.allocs.remove(&addr) else {
            return Err(SimError::Internal(
                "allocation vanished under the table lock".into(),
            ));
        };
        if let Space::Device(d) = a.space {
            if let Some(u) = t.used.get_mut(d as usize) {
                *u -= a.charged as u64;
            }
        }
        self.park(&mut t, a.block);
        Ok(())
    }

    /// (free, total) bytes of `device`.
    pub(crate) fn mem_info(&self, device: i32) -> Result<(u64, u64), SimError> {
        let t = read(&self.table);
        let d = self.device_index(&t, device)?;
        Ok((self.capacity.saturating_sub(t.used[d]), self.capacity))
    }

    /// Locates `[ptr, ptr + len)`; `Err` explains a range that is partly inside an allocation.
    pub(crate) fn classify(&self, ptr: usize, len: usize) -> Result<Region, String> {
        let t = read(&self.table);
        let end = ptr
            .checked_add(len)
            .ok_or_else(|| format!("{len} bytes at {ptr:#x} wrap around the address space"))?;
        if let Some((&start, a)) = t.allocs.range(..=ptr).next_back() {
            if ptr < start + a.block_len() {
                if end <= start + a.len {
                    return Ok(Region::Tracked(a.space));
                }
                return Err(format!(
                    "{len} bytes at {ptr:#x} run past the end of the {} allocation at {start:#x} of {} bytes (offset {})",
                    space_name(a.space),
                    a.len,
                    ptr - start
                ));
            }
        }
        if let Some((&next, a)) = t
            .allocs
            .range((Bound::Excluded(ptr), Bound::Unbounded))
            .next()
        {
            if end > next {
                return Err(format!(
                    "{len} bytes at {ptr:#x} overlap the start of the {} allocation at {next:#x}",
                    space_name(a.space)
                ));
            }
        }
        Ok(Region::Untracked)
    }

    /// Whether a kernel on `device` may access `[ptr, ptr + len)`: one live device (or launch
    /// argument) allocation of that device.
    pub(crate) fn check_gm(&self, device: i32, ptr: usize, len: usize) -> bool {
        matches!(
            self.classify(ptr, len),
            Ok(Region::Tracked(Space::Device(d) | Space::LaunchArgs(d))) if d == device
        )
    }

    /// Requires `[ptr, ptr + len)` to be inside one device allocation (optionally of `device`).
    pub(crate) fn expect_device(
        &self,
        what: &str,
        ptr: usize,
        len: usize,
        device: Option<i32>,
    ) -> Result<i32, SimError> {
        match self.classify(ptr, len).map_err(|m| SimError::RtParam(format!("{what}: {m}")))? {
            Region::Tracked(Space::Device(d)) => match device {
                Some(want) if want != d => Err(SimError::RtParam(format!(
                    "{what} {ptr:#x} is memory of device {d}, but the operation runs on device {want}"
                ))),
                _ => Ok(d),
            },
            Region::Tracked(space) => Err(SimError::RtParam(format!(
                "{what} {ptr:#x} is {} memory, not device memory from aclrtMalloc",
                space_name(space)
            ))),
            Region::Untracked => Err(SimError::RtParam(format!(
                "{what} {ptr:#x} ({len} bytes) is not device memory from aclrtMalloc: never allocated, or freed"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_rounds_up_to_32_plus_32() {
        assert_eq!(device_charge(1), Some(64));
        assert_eq!(device_charge(32), Some(64));
        assert_eq!(device_charge(33), Some(96));
        assert_eq!(device_charge(usize::MAX), None);
    }

    #[test]
    fn capacity_and_out_of_memory() {
        let m = Memory::new(2, 1000);
        let a = m.malloc_device(0, 900).unwrap(); // charged 928 + 32 = 960
        assert_eq!(a % DEVICE_ALIGN, 0);
        assert_eq!(m.mem_info(0).unwrap(), (40, 1000));
        let e = m.malloc_device(0, 1).unwrap_err(); // needs 64 > 40
        assert_eq!(e.acl_code(), 207001);
        assert!(e.to_string().contains("40 of 1000 bytes free"), "{e}");
        assert!(
            m.malloc_device(1, 900).is_ok(),
            "device 1 has its own capacity"
        );
        assert_eq!(m.malloc_device(2, 1).unwrap_err().acl_code(), 107001);
        m.free(a, false).unwrap();
        assert_eq!(m.mem_info(0).unwrap(), (1000, 1000));
        assert_eq!(m.malloc_device(0, 0).unwrap_err().acl_code(), 100000);
    }

    #[test]
    fn ranges_are_classified_strictly() {
        let m = Memory::new(1, 1 << 20);
        let d = m.malloc_device(0, 100).unwrap();
        let h = m.malloc_host(64).unwrap();
        assert_eq!(m.classify(d, 100), Ok(Region::Tracked(Space::Device(0))));
        assert_eq!(m.classify(d + 99, 1), Ok(Region::Tracked(Space::Device(0))));
        assert!(m
            .classify(d + 99, 2)
            .unwrap_err()
            .contains("run past the end"));
        assert!(
            m.classify(d + 100, 1).is_err(),
            "padding is not part of the allocation"
        );
        assert_eq!(m.classify(h, 64), Ok(Region::Tracked(Space::PinnedHost)));
        assert!(m
            .classify(d - 8, 16)
            .unwrap_err()
            .contains("overlap the start"));
        assert_eq!(m.classify(d - 8, 8), Ok(Region::Untracked));
        assert!(m.classify(usize::MAX, 2).is_err());
        assert!(m.check_gm(0, d, 100));
        assert!(!m.check_gm(0, h, 1), "pinned host memory is not GM");
        assert!(!m.check_gm(1, d, 1), "another device's memory");
    }

    #[test]
    fn frees_are_checked() {
        let m = Memory::new(1, 1 << 20);
        let d = m.malloc_device(0, 100).unwrap();
        let h = m.malloc_host(8).unwrap();
        assert!(m
            .free(d + 4, false)
            .unwrap_err()
            .to_string()
            .contains("offset 4"));
        assert!(m
            .free(h, false)
            .unwrap_err()
            .to_string()
            .contains("aclrtFreeHost"));
        assert!(m
            .free(d, true)
            .unwrap_err()
            .to_string()
            .contains("aclrtFree"));
        m.free(d, false).unwrap();
        let e = m.free(d, false).unwrap_err();
        assert_eq!(e.acl_code(), 207002);
        assert!(e.to_string().contains("already freed"), "{e}");
        m.free(h, true).unwrap();
    }

    #[test]
    fn frees_during_an_access_are_parked_until_it_ends() {
        let m = Memory::new(1, 1 << 20);
        let d = m.malloc_device(0, 4096).unwrap();
        let access = m.begin_access();
        m.free(d, false).unwrap();
        assert_eq!(
            m.parked.load(SeqCst),
            1,
            "still owned while the access runs"
        );
        assert!(
            m.classify(d, 1).is_ok_and(|r| r == Region::Untracked),
            "but no longer valid"
        );
        drop(access);
        assert_eq!(m.parked.load(SeqCst), 0);
    }
}
