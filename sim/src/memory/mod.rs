//! Simulated device memory and pinned host memory: host allocations tracked in one table.
//!
//! * Device allocations (`aclrtMalloc`) are charged `round_up(size, 32) + 32` bytes against their
//!   device's capacity, like the real allocator, are 64-byte aligned and read as zeros (the real
//!   memory is uninitialized; zero keeps runs reproducible). Their host memory is committed only
//!   when written ([`backing`]).
//! * Every device and pinned allocation is also charged against the host budget ([`host`]): what
//!   the host can back, estimated at `aclInit`. An allocation past the device capacity or past the
//!   budget fails at once with the real out-of-memory code (207001) instead of being promised and
//!   then stalling or OOM-killing the process when written. `aclrtGetMemInfo` reports the smaller
//!   of the two rooms as free, i.e. what `aclrtMalloc` can still deliver.
//! * Pinned host allocations (`aclrtMallocHost`) are 64-byte aligned and not charged to a device.
//! * Launch-argument buffers are registered for the duration of a launch so that kernels can
//!   `check_gm` pointers into them (placeholders).
//!
//! Every range the simulator touches is first located in the table ([`Memory::classify`]): inside
//! one live allocation (only its requested length counts, not the padding), untracked (outside
//! every allocation: pageable host memory, trusted by the caller), or invalid (straddling an
//! allocation's end or start) — never a silent partial access.
//!
//! Freed memory goes back to the host as soon as no work that validated it is running: a task
//! that validates a range takes a [`Pin`] of its allocation (a reference to the host block) and
//! holds it while it reads or writes. A free removes the allocation from the table at once (the
//! range fails validation from then on) and drops the table's reference; the block is unmapped
//! when the last pin is released — immediately when nothing uses it, however much unrelated work
//! is running. Kernels pin what they `check_gm` and what their arguments point into.
//!
//! Per-allocation state lives in [`Alloc`]. With the init check on ([`Memory::set_init_check`],
//! `DSNPU_SIM_CHECK` with `init`), device allocations (up to [`POISON_MAX_BYTES`]) are filled with
//! [`POISON`] instead of zeros and carry a shadow of the bytes written since ([`written`]): copies, memsets, collectives and
//! kernel stores mark it ([`Memory::mark_written`]); kernel reads are checked against it
//! ([`Memory::unwritten`]).
mod backing;
pub(crate) mod host;
pub(crate) mod written;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use crate::error::SimError;
use crate::sync::{read, write};
use backing::Backing;
use written::Written;

/// The byte device allocations are filled with under the init check: NaN in every float format,
/// -1 as an integer, so an output nothing wrote does not pass as zeros.
pub const POISON: u8 = 0xFF;

/// Larger allocations are not poisoned: filling them would commit all their host pages at once (a
/// lazily mapped multi-GiB weight buffer). Their shadow still catches reads of unwritten bytes.
pub const POISON_MAX_BYTES: usize = 64 << 20;

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

/// Keeps the host memory of one allocation alive while work that validated it runs, even if the
/// allocation is freed meanwhile (it is unmapped when the last pin drops).
#[derive(Clone)]
pub(crate) struct Pin(#[allow(dead_code)] Arc<Backing>);

/// The pins one task holds, one per allocation (keyed by its start address).
#[derive(Default)]
pub(crate) struct Pins(BTreeMap<usize, Pin>);

impl Pins {
    pub(crate) fn hold(&mut self, pin: Pin) {
        self.0.entry(pin.0.addr()).or_insert(pin);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// One live allocation.
struct Alloc {
    /// Requested bytes: the valid range.
    len: usize,
    /// Bytes charged to the device (0 for host and argument memory).
    charged: usize,
    /// Bytes charged to the host budget (device and pinned memory).
    host_charged: u64,
    space: Space,
    block: Arc<Backing>,
    /// Bytes written since allocation (device memory under the init check only).
    written: Option<Arc<Written>>,
}

impl Alloc {
    fn block_len(&self) -> usize {
        self.block.len()
    }

    fn pin(&self) -> Pin {
        Pin(Arc::clone(&self.block))
    }
}

struct Table {
    allocs: BTreeMap<usize, Alloc>,
    /// Bytes charged per device.
    used: Vec<u64>,
    /// Bytes charged to the host budget.
    host_used: u64,
}

/// Device allocations of one device that launches already validated through
/// [`Memory::check_gm_cached`], valid while the table's generation is `generation` (no allocation
/// was freed since): a range inside one of them needs no table lookup. A stream worker keeps one
/// from launch to launch; [`GmCache::next_launch`] starts a launch, which pins each allocation it
/// finds here once. Launch-argument buffers are not kept (they come and go with every launch).
#[derive(Default)]
pub(crate) struct GmCache {
    generation: u64,
    device: i32,
    /// The launch being run (see `Known::pinned_in`).
    launch: u64,
    /// Sorted by start, disjoint.
    known: Vec<Known>,
}

struct Known {
    start: usize,
    len: usize,
    /// The allocation's block: alive while the generation is unchanged (the table holds it).
    block: Weak<Backing>,
    /// The launch that last pinned it.
    pinned_in: u64,
}

impl GmCache {
    /// The next launch begins: its pins start empty.
    pub(crate) fn next_launch(&mut self) {
        self.launch += 1;
    }

    /// The allocation holding `[ptr, ptr + len)`, if known.
    fn find(&mut self, ptr: usize, len: usize) -> Option<&mut Known> {
        let i = self
            .known
            .partition_point(|k| k.start <= ptr)
            .checked_sub(1)?;
        let k = &mut self.known[i];
        (ptr - k.start < k.len && len <= k.len - (ptr - k.start)).then_some(k)
    }
}

/// The allocation table of all devices plus pinned host memory.
pub(crate) struct Memory {
    table: RwLock<Table>,
    /// Counts the frees of device and pinned memory (what invalidates a [`GmCache`]), under the
    /// table's write lock.
    generation: AtomicU64,
    /// Capacity of each device.
    capacity: u64,
    /// What the host can back, for all devices and pinned memory together.
    host_budget: u64,
    /// Poison fresh device memory and shadow its writes (the init check).
    init_check: bool,
}

/// A kernel read of bytes nothing wrote (the init check's finding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unwritten {
    /// Start and length of the allocation.
    pub alloc: usize,
    pub alloc_len: usize,
    /// The unwritten byte range, as offsets into the allocation.
    pub from: usize,
    pub to: usize,
}

fn space_name(space: Space) -> String {
    match space {
        Space::Device(d) => format!("device {d}"),
        Space::PinnedHost => "pinned host".to_string(),
        Space::LaunchArgs(d) => format!("launch-argument (device {d})"),
    }
}

impl Memory {
    pub(crate) fn new(devices: u32, capacity: u64, host_budget: u64) -> Memory {
        Memory {
            table: RwLock::new(Table {
                allocs: BTreeMap::new(),
                used: vec![0; devices as usize],
                host_used: 0,
            }),
            generation: AtomicU64::new(0),
            capacity,
            host_budget,
            init_check: false,
        }
    }

    /// Turns the init check on or off for allocations made from now on.
    pub(crate) fn set_init_check(&mut self, on: bool) {
        self.init_check = on;
    }

    /// Records that `[ptr, ptr + len)` was written, if it lies in a shadowed allocation.
    pub(crate) fn mark_written(&self, ptr: usize, len: usize) {
        if !self.init_check || len == 0 {
            return;
        }
        let t = read(&self.table);
        if let Ok(Some((start, a))) = Self::locate_with_start(&t, ptr, len) {
            if let Some(w) = &a.written {
                w.mark(ptr - start, len);
            }
        }
    }

    /// The first run of bytes in `[ptr, ptr + len)` that nothing wrote since allocation, if the
    /// range lies in a shadowed allocation.
    pub(crate) fn unwritten(&self, ptr: usize, len: usize) -> Option<Unwritten> {
        if !self.init_check || len == 0 {
            return None;
        }
        let t = read(&self.table);
        let (start, a) = Self::locate_with_start(&t, ptr, len).ok()??;
        let w = a.written.as_ref()?;
        let off = ptr - start;
        let from = w.first_unwritten(off, len)?;
        Some(Unwritten {
            alloc: start,
            alloc_len: a.len,
            from,
            to: w.unwritten_until(from, off + len),
        })
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

    fn host_free(&self, t: &Table) -> u64 {
        self.host_budget.saturating_sub(t.host_used)
    }

    /// Registers a new allocation (the one place allocations are created).
    fn insert(
        &self,
        t: &mut Table,
        len: usize,
        charged: usize,
        host_charged: u64,
        space: Space,
        block: Backing,
    ) -> usize {
        let addr = block.addr();
        let written = (self.init_check && matches!(space, Space::Device(_))).then(|| {
            if len <= POISON_MAX_BYTES {
                // SAFETY: the block is fresh, at least `len` bytes, and not shared yet.
                unsafe { std::ptr::write_bytes(block.as_mut_ptr(), POISON, len) };
            }
            Arc::new(Written::new(len))
        });
        // No generation bump: a new allocation leaves every validated one valid.
        t.allocs.insert(
            addr,
            Alloc {
                len,
                charged,
                host_charged,
                space,
                block: Arc::new(block),
                written,
            },
        );
        addr
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
            let host_free = self.host_free(&t);
            let oom = |charged: usize| SimError::OutOfMemory {
                device,
                requested: size,
                charged,
                free,
                total,
            };
            let charged = device_charge(size)
                .filter(|&c| c as u64 <= free)
                .ok_or_else(|| oom(device_charge(size).unwrap_or(usize::MAX)))?;
            if charged as u64 > host_free {
                return Err(SimError::HostOutOfMemory {
                    what: format!("device {device}"),
                    requested: size,
                    charged,
                    host_free,
                    host_budget: self.host_budget,
                });
            }
            // Reserve before mapping outside the lock, so concurrent callers see the charge.
            t.used[d] += charged as u64;
            t.host_used += charged as u64;
            (d, charged)
        };
        let Some(block) = Backing::zeroed(charged, DEVICE_ALIGN) else {
            let mut t = write(&self.table);
            t.used[d] -= charged as u64;
            t.host_used -= charged as u64;
            // The host refused the mapping (address space or commit limit): out of memory too.
            return Err(SimError::HostOutOfMemory {
                what: format!("device {device}"),
                requested: size,
                charged,
                host_free: 0,
                host_budget: self.host_budget,
            });
        };
        let mut t = write(&self.table);
        Ok(self.insert(
            &mut t,
            size,
            charged,
            charged as u64,
            Space::Device(device),
            block,
        ))
    }

    /// `aclrtMallocHost`.
    pub(crate) fn malloc_host(&self, size: usize) -> Result<usize, SimError> {
        if size == 0 {
            return Err(SimError::InvalidParam("size must not be 0".into()));
        }
        {
            let mut t = write(&self.table);
            let host_free = self.host_free(&t);
            if size as u64 > host_free {
                return Err(SimError::HostOutOfMemory {
                    what: "pinned host memory".into(),
                    requested: size,
                    charged: size,
                    host_free,
                    host_budget: self.host_budget,
                });
            }
            t.host_used += size as u64;
        }
        let Some(block) = Backing::zeroed(size, HOST_ALIGN) else {
            write(&self.table).host_used -= size as u64;
            return Err(SimError::HostAlloc(size));
        };
        let mut t = write(&self.table);
        Ok(self.insert(&mut t, size, 0, size as u64, Space::PinnedHost, block))
    }

    /// Registers a copy of a launch's argument bytes as device-visible memory.
    pub(crate) fn insert_args(&self, device: i32, bytes: &[u8]) -> Result<usize, SimError> {
        let block =
            Backing::zeroed(bytes.len(), DEVICE_ALIGN).ok_or(SimError::HostAlloc(bytes.len()))?;
        // SAFETY: the block is at least bytes.len() long, freshly allocated and not shared yet.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), block.as_mut_ptr(), bytes.len()) };
        let mut t = write(&self.table);
        Ok(self.insert(&mut t, bytes.len(), 0, 0, Space::LaunchArgs(device), block))
    }

    /// Unregisters a launch-argument buffer.
    pub(crate) fn remove_args(&self, addr: usize) {
        let mut t = write(&self.table);
        if matches!(t.allocs.get(&addr), Some(a) if matches!(a.space, Space::LaunchArgs(_))) {
            // No generation bump: GmCache keeps no argument buffers.
            t.allocs.remove(&addr);
        }
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
        self.generation.fetch_add(1, Ordering::Release);
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
        t.host_used -= a.host_charged;
        drop(t);
        // The block is unmapped here unless a running task pinned it; then when that task ends.
        drop(a);
        Ok(())
    }

    /// (free, total) bytes of `device`: free is what `aclrtMalloc` can deliver (device room and
    /// host budget), total the device capacity.
    pub(crate) fn mem_info(&self, device: i32) -> Result<(u64, u64), SimError> {
        let t = read(&self.table);
        let d = self.device_index(&t, device)?;
        let free = self
            .capacity
            .saturating_sub(t.used[d])
            .min(self.host_free(&t));
        Ok((free, self.capacity))
    }

    /// As [`Memory::locate`], with the allocation's start address.
    fn locate_with_start(
        t: &Table,
        ptr: usize,
        len: usize,
    ) -> Result<Option<(usize, &Alloc)>, String> {
        let found = Self::locate(t, ptr, len)?;
        Ok(found.map(|a| (a.block.addr(), a)))
    }

    /// The allocation holding `[ptr, ptr + len)`, `None` outside every allocation, `Err` for a
    /// range partly inside one.
    fn locate(t: &Table, ptr: usize, len: usize) -> Result<Option<&Alloc>, String> {
        let end = ptr
            .checked_add(len)
            .ok_or_else(|| format!("{len} bytes at {ptr:#x} wrap around the address space"))?;
        if let Some((&start, a)) = t.allocs.range(..=ptr).next_back() {
            if ptr < start + a.block_len() {
                if end <= start + a.len {
                    return Ok(Some(a));
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
        Ok(None)
    }

    /// Locates `[ptr, ptr + len)`; `Err` explains a range that is partly inside an allocation.
    pub(crate) fn classify(&self, ptr: usize, len: usize) -> Result<Region, String> {
        Ok(self.pin(ptr, len)?.0)
    }

    /// Locates `[ptr, ptr + len)` like [`Memory::classify`] and pins the allocation holding it.
    pub(crate) fn pin(&self, ptr: usize, len: usize) -> Result<(Region, Option<Pin>), String> {
        let t = read(&self.table);
        Ok(match Self::locate(&t, ptr, len)? {
            Some(a) => (Region::Tracked(a.space), Some(a.pin())),
            None => (Region::Untracked, None),
        })
    }

    /// Whether a kernel on `device` may access `[ptr, ptr + len)`: one live device (or launch
    /// argument) allocation of that device. When it may, the allocation is pinned in `pins`.
    #[cfg(test)]
    pub(crate) fn check_gm(&self, device: i32, ptr: usize, len: usize, pins: &mut Pins) -> bool {
        self.check_gm_cached(device, ptr, len, &mut GmCache::default(), pins)
    }

    /// Whether a kernel on `device` may access `[ptr, ptr + len)`: one live device (or launch
    /// argument) allocation of that device. When it may, the allocation is pinned in `pins`. First
    /// looks in `cache`: the allocations this launch already validated, while the table is unchanged
    /// (a kernel's blocks validate the same few buffers).
    pub(crate) fn check_gm_cached(
        &self,
        device: i32,
        ptr: usize,
        len: usize,
        cache: &mut GmCache,
        pins: &mut Pins,
    ) -> bool {
        if cache.generation == self.generation.load(Ordering::Acquire) && cache.device == device {
            let launch = cache.launch;
            if let Some(k) = cache.find(ptr, len) {
                if k.pinned_in == launch {
                    return true;
                }
                // Alive: nothing was freed since it was validated.
                if let Some(block) = k.block.upgrade() {
                    k.pinned_in = launch;
                    pins.hold(Pin(block));
                    return true;
                }
            }
        }
        let t = read(&self.table);
        // Stable while the read lock is held.
        let generation = self.generation.load(Ordering::Acquire);
        if cache.generation != generation || cache.device != device {
            cache.generation = generation;
            cache.device = device;
            cache.known.clear();
        }
        match Self::locate_with_start(&t, ptr, len) {
            Ok(Some((start, a))) if matches!(a.space, Space::Device(d) | Space::LaunchArgs(d) if d == device) =>
            {
                if !pins.0.contains_key(&start) {
                    pins.hold(a.pin());
                }
                if matches!(a.space, Space::Device(_)) {
                    let i = cache.known.partition_point(|k| k.start < start);
                    if cache.known.get(i).is_none_or(|k| k.start != start) {
                        cache.known.insert(
                            i,
                            Known {
                                start,
                                len: a.len,
                                block: Arc::downgrade(&a.block),
                                pinned_in: cache.launch,
                            },
                        );
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Pins every device allocation of `device` that an 8-byte value at any offset of `bytes`
    /// points into: the memory a kernel can reach through its arguments without `check_gm`.
    pub(crate) fn pin_referenced(&self, device: i32, bytes: &[u8], pins: &mut Pins) {
        let t = read(&self.table);
        // Values outside every allocation (most of the unaligned ones) need no lookup.
        let (Some((&lo, _)), Some((&last, a))) =
            (t.allocs.first_key_value(), t.allocs.last_key_value())
        else {
            return;
        };
        let hi = last + a.block_len();
        for w in bytes.windows(8) {
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            let p = u64::from_le_bytes(v) as usize;
            if p == 0 || p < lo || p >= hi {
                continue;
            }
            // What `locate(p, 1)` finds, with one tree lookup: one byte never overlaps a later
            // allocation, so only the allocation starting at or before `p` can hold it.
            if let Some((&start, a)) = t.allocs.range(..=p).next_back() {
                if p < start + a.block_len()
                    && p < start + a.len
                    && a.space == Space::Device(device)
                {
                    pins.hold(a.pin());
                }
            }
        }
    }

    /// Requires `[ptr, ptr + len)` to be inside one device allocation (optionally of `device`),
    /// and pins it.
    pub(crate) fn expect_device(
        &self,
        what: &str,
        ptr: usize,
        len: usize,
        device: Option<i32>,
    ) -> Result<(i32, Pin), SimError> {
        match self.pin(ptr, len).map_err(|m| SimError::RtParam(format!("{what}: {m}")))? {
            (Region::Tracked(Space::Device(d)), Some(pin)) => match device {
                Some(want) if want != d => Err(SimError::RtParam(format!(
                    "{what} {ptr:#x} is memory of device {d}, but the operation runs on device {want}"
                ))),
                _ => Ok((d, pin)),
            },
            (Region::Tracked(space), _) => Err(SimError::RtParam(format!(
                "{what} {ptr:#x} is {} memory, not device memory from aclrtMalloc",
                space_name(space)
            ))),
            (Region::Untracked, _) => Err(SimError::RtParam(format!(
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
        let m = Memory::new(2, 1000, 1 << 30);
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
        let m = Memory::new(1, 1 << 20, 1 << 30);
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
        assert!(m.check_gm(0, d, 100, &mut Pins::default()));
        assert!(
            !m.check_gm(0, h, 1, &mut Pins::default()),
            "pinned host memory is not GM"
        );
        assert!(
            !m.check_gm(1, d, 1, &mut Pins::default()),
            "another device's memory"
        );
    }

    #[test]
    fn frees_are_checked() {
        let m = Memory::new(1, 1 << 20, 1 << 30);
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
    fn the_host_budget_bounds_every_device_and_pinned_memory() {
        // Two devices of 1000 bytes each, but the host backs only 1500 bytes in all.
        let m = Memory::new(2, 1000, 1500);
        let a = m.malloc_device(0, 900).unwrap(); // 960 charged
        assert_eq!(m.mem_info(0).unwrap(), (40, 1000));
        assert_eq!(
            m.mem_info(1).unwrap(),
            (540, 1000),
            "the host's room, not the device's"
        );
        let e = m.malloc_device(1, 900).unwrap_err();
        assert_eq!(e.acl_code(), 207001);
        assert!(e.to_string().contains("540 of 1500"), "{e}");
        let b = m.malloc_device(1, 400).unwrap(); // 448
        assert_eq!(m.mem_info(1).unwrap(), (92, 1000));
        assert_eq!(m.malloc_host(100).unwrap_err().acl_code(), 207001);
        let h = m.malloc_host(92).unwrap();
        assert_eq!(m.mem_info(1).unwrap().0, 0);
        m.free(a, false).unwrap();
        m.free(b, false).unwrap();
        m.free(h, true).unwrap();
        assert_eq!(m.mem_info(1).unwrap(), (1000, 1000));
    }

    #[test]
    fn a_freed_block_lives_exactly_as_long_as_its_pins() {
        let m = Memory::new(1, 1 << 30, 1 << 30);
        let d = m.malloc_device(0, 1 << 20).unwrap();
        let other = m.malloc_device(0, 1 << 20).unwrap();
        let weak = {
            let t = read(&m.table);
            Arc::downgrade(&t.allocs[&d].block)
        };
        let mut pins = Pins::default();
        assert!(m.check_gm(0, d + 8, 64, &mut pins));
        assert!(m.check_gm(0, d, 1, &mut pins));
        assert_eq!(pins.len(), 1, "one pin per allocation");
        assert!(!m.check_gm(1, d, 1, &mut pins), "another device");
        m.free(d, false).unwrap();
        assert!(weak.upgrade().is_some(), "a task still uses it");
        assert_eq!(
            m.classify(d, 1),
            Ok(Region::Untracked),
            "but it is no longer valid"
        );
        assert!(!m.check_gm(0, d, 1, &mut pins));
        drop(pins);
        assert!(weak.upgrade().is_none(), "unmapped when the task ends");
        // Without pins a free releases at once, whatever else runs.
        let mut unrelated = Pins::default();
        assert!(m.check_gm(0, other, 1, &mut unrelated));
        let e = m.malloc_device(0, 1 << 20).unwrap();
        let weak = {
            let t = read(&m.table);
            Arc::downgrade(&t.allocs[&e].block)
        };
        m.free(e, false).unwrap();
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn the_check_gm_cache_follows_the_table() {
        let m = Memory::new(1, 1 << 30, 1 << 30);
        let d = m.malloc_device(0, 100).unwrap();
        let mut pins = Pins::default();
        let mut cache = GmCache::default();
        let mut check =
            |p: usize, n: usize, pins: &mut Pins| m.check_gm_cached(0, p, n, &mut cache, pins);
        assert!(check(d, 100, &mut pins));
        assert!(check(d + 10, 90, &mut pins), "inside, from the cache");
        assert!(!check(d + 10, 91, &mut pins), "past the end");
        let at_end = m.check_gm(0, d + 100, 0, &mut Pins::default());
        assert_eq!(
            check(d + 100, 0, &mut pins),
            at_end,
            "at the end: the table decides"
        );
        let e = m.malloc_device(0, 64).unwrap();
        assert!(check(e, 64, &mut pins));
        m.free(d, false).unwrap();
        assert!(!check(d, 1, &mut pins), "freed: the cache is stale");
        assert!(check(e + 8, 8, &mut pins));
        assert_eq!(pins.len(), 2);
    }

    #[test]
    fn the_init_check_poisons_and_tracks_writes() {
        let mut m = Memory::new(1, 1 << 20, 1 << 30);
        m.set_init_check(true);
        let d = m.malloc_device(0, 100).unwrap();
        // SAFETY: 100 bytes of a live allocation, nothing else uses them.
        let bytes = unsafe { std::slice::from_raw_parts(d as *const u8, 100) };
        assert!(bytes.iter().all(|&b| b == POISON));
        let u = m.unwritten(d + 8, 16).unwrap();
        assert_eq!((u.alloc, u.alloc_len, u.from, u.to), (d, 100, 8, 24));
        m.mark_written(d, 12);
        assert_eq!(m.unwritten(d + 8, 16).unwrap().from, 12);
        m.mark_written(d + 12, 88);
        assert_eq!(m.unwritten(d, 100), None);
        let h = m.malloc_host(64).unwrap();
        assert_eq!(m.unwritten(h, 64), None, "host memory is not shadowed");
        let mut plain = Memory::new(1, 1 << 20, 1 << 30);
        plain.set_init_check(false);
        let z = plain.malloc_device(0, 100).unwrap();
        assert_eq!(plain.unwritten(z, 100), None);
    }

    #[test]
    fn argument_bytes_pin_what_they_point_into() {
        let m = Memory::new(1, 1 << 30, 1 << 30);
        let d = m.malloc_device(0, 4096).unwrap();
        let e = m.malloc_device(0, 4096).unwrap();
        let mut args = vec![7u8; 3]; // unaligned pointers count too
        args.extend_from_slice(&((d + 100) as u64).to_le_bytes());
        args.extend_from_slice(&0u64.to_le_bytes());
        let mut pins = Pins::default();
        m.pin_referenced(0, &args, &mut pins);
        assert_eq!(pins.len(), 1);
        assert!(pins.0.contains_key(&d) && !pins.0.contains_key(&e));
        m.pin_referenced(1, &args, &mut pins);
        assert_eq!(pins.len(), 1);
    }
}
