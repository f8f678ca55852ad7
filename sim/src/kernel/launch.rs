//! Running one kernel launch on a stream worker.
//!
//! A kernel that declares its blocks meet in `SyncAll` (ABI 4, [`Function::sync_all`]) runs its
//! blocks in waves of at most [`SimConfig::resident_blocks`] (the simulated core count), like the
//! hardware runs more blocks than it has cores; the blocks of a wave all run at once. If the binary
//! also declares them cooperative ([`Function::coop`]) and the kernel's blocks are short (its last launch took at most [`INLINE_BLOCK`] of wall time per block)
//! they run cooperatively on the stream worker, each on its own stack, switching where a block waits
//! in `SyncAll` ([`coop`]); otherwise every block runs on its own (pooled) thread. `SyncAll` needs
//! every block resident at once: in a launch larger than one wave it fails the launch instead of
//! hanging. The blocks of any other kernel are independent:
//! they run one after another on the stream worker while each takes less than [`INLINE_BLOCK`]
//! (a small model's decode step is mostly such launches, and a thread handoff per block cost more
//! than the block), and the rest then in waves as above. A `SyncAll` in such a kernel fails the
//! launch, naming the declaration it lacks.
//! A fault reported through `fail` (or an abandoned `SyncAll`) fails the launch with
//! `ACL_ERROR_RT_AICORE_EXCEPTION` and the message `"kernel <name> block <i>: <msg>"`; blocks still
//! running finish, later waves are not started.
//!
//! With the init check on (`DSNPU_SIM_CHECK` with `init`) blocks get the `gm_access` callback: kernel
//! stores mark device bytes written, and a kernel load of bytes nothing wrote since allocation fails
//! the launch with an `init:` finding naming the operation, the allocation and the byte range.
//!
//! The argument bytes are copied into a buffer registered as device memory of the launch's device
//! for the duration of the launch, so placeholder pointers into it pass `check_gm`.
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dsnpu_ffi::sys;

use super::abi::{BlockCtx, Counters, KernelFn, DSNPU_SIM_KERNEL_ABI};
use super::args::LaunchArgs;
use super::barrier::{BlockBarrier, SyncOutcome};
use super::binary::Function;
use super::coop;
use super::pool;
use super::replay::PendingReplay;
use crate::config::{SimConfig, UB_CAPACITY};
use crate::error::SimError;
use crate::memory::{GmCache, Memory, Pins};
use crate::sync::lock;

/// Blocks of a kernel without `SyncAll` run on the stream worker, one after another, until one takes
/// longer than this; the rest then run concurrently.
pub(crate) const INLINE_BLOCK: Duration = Duration::from_micros(300);

/// Warnings printed per launch before the rest are only counted.
const PRINTED_WARNINGS: u64 = 8;

/// A queued launch.
pub(crate) struct Launch {
    pub func: Arc<Function>,
    pub num_blocks: u32,
    pub args: LaunchArgs,
}

/// What a completed launch did (`dsnpu_sim_last_launch_counters`).
#[derive(Debug, Clone)]
pub(crate) struct LaunchRecord {
    pub kernel: String,
    pub num_blocks: u32,
    pub status: sys::aclError,
    pub elapsed: Duration,
    pub warnings: u64,
    /// The blocks' summed counters (HBM: each block's own L2 slice); see [`LaunchRecord::counters`].
    pub totals: Counters,
    /// The launch's recorded GM accesses for the die-wide L2 replay (ABI 5), if the binary records.
    pub replay: Option<Arc<PendingReplay>>,
}

impl LaunchRecord {
    /// The launch's counters as `dsnpu_sim_last_launch_counters` reports them: the totals, with the HBM
    /// bytes of the die-wide replay when the binary recorded the launch (replayed on the first call).
    pub fn counters(&self) -> Counters {
        let mut c = self.totals;
        if let Some((read, written)) = self.replay.as_ref().and_then(|r| r.hbm()) {
            c.hbm_read_bytes = read;
            c.hbm_write_bytes = written;
        }
        c
    }
}

struct LaunchShared<'a> {
    kernel: &'a str,
    memory: &'a Memory,
    device: i32,
    num_blocks: u32,
    resident: u32,
    barrier: BlockBarrier,
    /// The kernel declared that its blocks meet in `SyncAll`.
    sync_all: bool,
    fault: Mutex<Option<SimError>>,
    warnings: AtomicU64,
    init_check: bool,
    /// What the blocks validated through `check_gm`: kept mapped until the launch ends, even if the
    /// host frees it meanwhile; and the validated allocations, so the next block's check of the same
    /// buffer needs no table lookup.
    gm: Mutex<(Pins, GmCache)>,
    /// The launch's registered argument buffer `[start, end)` (empty until registered): valid for
    /// every block, no lookup needed.
    args: (usize, usize),
    /// What the binary's `dsnpu_sim_launch_begin` returned (ABI 5; 0 without hooks), as an address:
    /// every block gets it, only the binary looks behind it.
    launch_l2: usize,
}

impl LaunchShared<'_> {
    fn record(&self, err: SimError) {
        lock(&self.fault).get_or_insert(err);
        self.barrier.abort();
    }

    fn fault(&self, block: u32, msg: String) {
        self.record(SimError::KernelFault {
            kernel: self.kernel.to_string(),
            block,
            msg,
        });
    }
}

/// The `sim` pointer of a block's context.
struct BlockSim<'a> {
    shared: &'a LaunchShared<'a>,
    block: u32,
}

impl BlockSim<'_> {
    fn sync_all(&self) -> c_int {
        let sh = self.shared;
        if !sh.sync_all {
            sh.fault(
                self.block,
                format!(
                    "SyncAll in a kernel that does not declare it: its blocks may run one after another. \
                     Export {}{} (DSNPU_HOST_ENTRY_SYNC in the Ascend C host layer)",
                    sh.kernel,
                    super::abi::SYNC_ALL_SUFFIX
                ),
            );
            return 1;
        }
        if sh.num_blocks > sh.resident {
            sh.fault(
                self.block,
                format!(
                    "SyncAll needs all {} blocks running at once, but the simulated device runs {} at a time \
                     (DSNPU_SIM_AICORE_NUM)",
                    sh.num_blocks, sh.resident
                ),
            );
            return 1;
        }
        match sh.barrier.sync() {
            SyncOutcome::Passed => 0,
            SyncOutcome::Abandoned => 1,
            SyncOutcome::Impossible => {
                sh.fault(
                    self.block,
                    "sync: SyncAll can never complete: another block already returned".into(),
                );
                1
            }
        }
    }

    fn check_gm(&self, ptr: *const c_void, len: usize) -> c_int {
        let (start, end) = self.shared.args;
        let p = ptr as usize;
        if p >= start && p < end && len <= end - p {
            return 0;
        }
        let mut gm = lock(&self.shared.gm);
        let (pins, cache) = &mut *gm;
        c_int::from(!self.shared.memory.check_gm_cached(
            self.shared.device,
            ptr as usize,
            len,
            cache,
            pins,
        ))
    }

    /// The init check: marks a store written; a load of unwritten bytes is a finding (returns 1).
    fn gm_access(&self, op: &str, ptr: usize, len: usize, write: bool) -> c_int {
        let memory = self.shared.memory;
        if write {
            memory.mark_written(ptr, len);
            return 0;
        }
        match memory.unwritten(ptr, len) {
            None => 0,
            Some(u) => {
                self.shared.fault(
                    self.block,
                    format!(
                        "init: {op} reads GM bytes [{}, {}) of the {}-byte device allocation at {:#x}, \
                         which nothing wrote since it was allocated (no copy, memset, collective or kernel store)",
                        u.from, u.to, u.alloc_len, u.alloc
                    ),
                );
                1
            }
        }
    }

    fn warn(&self, msg: String) {
        let n = self.shared.warnings.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= PRINTED_WARNINGS {
            eprintln!(
                "dsnpu-sim: warning: kernel {} block {}: {msg}",
                self.shared.kernel, self.block
            );
        } else if n == PRINTED_WARNINGS + 1 {
            eprintln!(
                "dsnpu-sim: further warnings of this launch of {} are only counted",
                self.shared.kernel
            );
        }
    }
}

/// # Safety
/// `sim` is NULL or the `sim` pointer of a live block context (the kernel passes it back as given).
unsafe fn block_of<'a>(sim: *mut c_void) -> Option<&'a BlockSim<'a>> {
    // SAFETY: per this function's contract, a non-null `sim` points at the BlockSim that lives on
    // the block thread's stack for the whole kernel call.
    unsafe { (sim as *const BlockSim<'a>).as_ref() }
}

/// # Safety
/// `msg` is NULL or a NUL-terminated string.
unsafe fn message(msg: *const c_char) -> String {
    if msg.is_null() {
        return "(no message)".to_string();
    }
    // SAFETY: per this function's contract.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

unsafe extern "C" fn cb_sync_all(sim: *mut c_void) -> c_int {
    // SAFETY: kernels pass back their context's `sim` pointer (ABI contract).
    let Some(b) = (unsafe { block_of(sim) }) else {
        return 1;
    };
    catch_unwind(AssertUnwindSafe(|| b.sync_all())).unwrap_or(1)
}

unsafe extern "C" fn cb_check_gm(sim: *mut c_void, ptr: *const c_void, len: usize) -> c_int {
    // SAFETY: as in cb_sync_all.
    let Some(b) = (unsafe { block_of(sim) }) else {
        return 1;
    };
    catch_unwind(AssertUnwindSafe(|| b.check_gm(ptr, len))).unwrap_or(1)
}

unsafe extern "C" fn cb_gm_access(
    sim: *mut c_void,
    op: *const c_char,
    ptr: *const c_void,
    len: usize,
    write: c_int,
) -> c_int {
    // SAFETY: as in cb_sync_all.
    let Some(b) = (unsafe { block_of(sim) }) else {
        return 1;
    };
    // SAFETY: `op` is NULL or NUL-terminated by the ABI.
    let op = unsafe { message(op) };
    catch_unwind(AssertUnwindSafe(|| {
        b.gm_access(&op, ptr as usize, len, write != 0)
    }))
    .unwrap_or(1)
}

unsafe extern "C" fn cb_fail(sim: *mut c_void, msg: *const c_char) {
    // SAFETY: as in cb_sync_all; `msg` is a C string by the ABI.
    let Some(b) = (unsafe { block_of(sim) }) else {
        return;
    };
    // SAFETY: `msg` is NULL or NUL-terminated by the ABI.
    let text = unsafe { message(msg) };
    let _ = catch_unwind(AssertUnwindSafe(|| b.shared.fault(b.block, text)));
}

unsafe extern "C" fn cb_warn(sim: *mut c_void, msg: *const c_char) {
    // SAFETY: as in cb_sync_all.
    let Some(b) = (unsafe { block_of(sim) }) else {
        return;
    };
    // SAFETY: `msg` is NULL or NUL-terminated by the ABI.
    let text = unsafe { message(msg) };
    let _ = catch_unwind(AssertUnwindSafe(|| b.warn(text)));
}

fn run_block(
    shared: &LaunchShared<'_>,
    entry: KernelFn,
    block: u32,
    counters: &mut Counters,
    args: usize,
    args_size: usize,
) {
    let sim = BlockSim { shared, block };
    let ctx = BlockCtx {
        abi_version: DSNPU_SIM_KERNEL_ABI,
        block_idx: block,
        block_num: shared.num_blocks,
        ub_capacity: UB_CAPACITY,
        args: args as *const c_void,
        args_size,
        counters: counters as *mut Counters,
        sim: &sim as *const BlockSim<'_> as *mut c_void,
        sync_all: Some(cb_sync_all),
        check_gm: Some(cb_check_gm),
        fail: Some(cb_fail),
        warn: Some(cb_warn),
        gm_access: shared
            .init_check
            .then_some(cb_gm_access as super::abi::GmAccessFn),
        launch_l2: shared.launch_l2 as *mut c_void,
    };
    // SAFETY: `entry` is a kernel of a binary kept loaded by the launch's Function; the context,
    // the counters, the registered argument buffer (unregistered only after every block returned)
    // and `sim` all outlive the call. Kernel code itself is trusted to follow the ABI.
    unsafe { entry(&ctx) };
    if shared.barrier.exit() {
        shared.fault(
            block,
            "sync: returned without reaching the SyncAll that other blocks are waiting in".into(),
        );
    }
}

/// The host's hardware threads (at least 1).
fn parallelism() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
    })
}

/// Copies the arguments into a registered buffer and applies the placeholder patches.
fn install_args(memory: &Memory, device: i32, args: &LaunchArgs) -> Result<usize, SimError> {
    // A launch without arguments still gets a (one-byte) buffer, so `args` is never NULL.
    let bytes: &[u8] = if args.bytes.is_empty() {
        &[0]
    } else {
        &args.bytes
    };
    let base = memory.insert_args(device, bytes)?;
    for p in &args.patches {
        let value = (base + p.data) as u64;
        // SAFETY: LaunchArgs guarantees slot + 8 <= len; the buffer was just registered and no
        // kernel of this launch runs yet, so nothing else accesses it.
        unsafe {
            ((base + p.slot) as *mut u8)
                .cast::<u64>()
                .write_unaligned(value)
        };
    }
    Ok(base)
}

thread_local! {
    /// What this stream worker's launches validated (kept while nothing is freed).
    static GM_CACHE: Cell<GmCache> = Cell::new(GmCache::default());
}

/// Runs `launch` on `device`. The record is produced whether or not the launch failed.
pub(crate) fn run_launch(
    launch: &Launch,
    device: i32,
    memory: &Memory,
    config: &SimConfig,
) -> (Result<(), SimError>, LaunchRecord) {
    // Memory the arguments point into stays mapped until the launch ends, even if freed: the
    // kernel may use it without asking check_gm (which pins the rest, for the launch).
    let mut referenced = Pins::default();
    memory.pin_referenced(device, &launch.args.bytes, &mut referenced);
    let started = Instant::now();
    let n = launch.num_blocks;
    let kernel = launch.func.name.as_str();
    // SyncAll blocks run cooperatively on this thread while they are short (see the module doc).
    let cooperative = launch.func.coop
        && launch.func.block_nanos.load(Ordering::Relaxed) <= INLINE_BLOCK.as_nanos() as u64;
    let mut gm_cache = GM_CACHE.take();
    gm_cache.next_launch();
    // Registered before the blocks run; only read by them.
    let installed = install_args(memory, device, &launch.args);
    let args = match &installed {
        Ok(base) => (*base, *base + launch.args.bytes.len().max(1)),
        Err(_) => (0, 0),
    };
    let replay = PendingReplay::begin(&launch.func.binary, n);
    let launch_l2 = replay.as_ref().map_or(0, |r| r.launch_l2() as usize);
    let shared = LaunchShared {
        kernel,
        memory,
        device,
        num_blocks: n,
        resident: config.resident_blocks(),
        barrier: BlockBarrier::new(n, cooperative),
        sync_all: launch.func.sync_all,
        fault: Mutex::new(None),
        warnings: AtomicU64::new(0),
        init_check: config.init_check,
        gm: Mutex::new((Pins::default(), gm_cache)),
        args,
        launch_l2,
    };
    let mut counters = vec![Counters::default(); n as usize];
    match installed {
        Ok(args) => {
            let wave = shared.resident as usize;
            let entry = launch.func.entry;
            let args_size = launch.args.args_size;
            // Independent blocks: inline while they are short.
            let mut first = 0;
            if !shared.sync_all {
                for c in counters.iter_mut() {
                    let started = Instant::now();
                    run_block(&shared, entry, first as u32, c, args, args_size);
                    first += 1;
                    if lock(&shared.fault).is_some() || started.elapsed() > INLINE_BLOCK {
                        break;
                    }
                }
            }
            let faulted = lock(&shared.fault).is_some();
            let rest = if faulted {
                &mut [][..]
            } else {
                &mut counters[first..]
            };
            for (w, chunk) in rest.chunks_mut(wave).enumerate() {
                let sh = &shared;
                if cooperative {
                    let base = first + w * wave;
                    let slots: Vec<Cell<Option<&mut Counters>>> =
                        chunk.iter_mut().map(|c| Cell::new(Some(c))).collect();
                    let job = |i: usize| {
                        if let Some(c) = slots[i].take() {
                            run_block(sh, entry, (base + i) as u32, c, args, args_size);
                        }
                    };
                    if let Err(e) = coop::run(slots.len(), &job) {
                        shared.record(SimError::Resources(format!(
                            "kernel {kernel}: cannot map the stacks of its blocks: {e}"
                        )));
                    }
                    if lock(&shared.fault).is_some() {
                        break;
                    }
                    continue;
                }
                let jobs: Vec<Box<dyn FnOnce() + Send + '_>> = chunk
                    .iter_mut()
                    .enumerate()
                    .map(|(i, c)| {
                        let block = (first + w * wave + i) as u32;
                        Box::new(move || run_block(sh, entry, block, c, args, args_size))
                            as Box<dyn FnOnce() + Send + '_>
                    })
                    .collect();
                pool::run_all(jobs, |i, e| {
                    shared.record(SimError::Resources(format!(
                        "kernel {kernel}: cannot start a thread for block {}: {e}",
                        first + w * wave + i
                    )))
                });
                if lock(&shared.fault).is_some() {
                    break;
                }
            }
            memory.remove_args(args);
        }
        Err(e) => shared.record(e),
    }
    if launch.func.sync_all && n > 0 {
        // The mean wall time of a block: of the launch on one thread, or times the cores that ran it.
        let spread = if cooperative { 1 } else { n.min(parallelism()) };
        let nanos = started.elapsed().as_nanos() * u128::from(spread) / u128::from(n);
        launch
            .func
            .block_nanos
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
    let (pins, gm_cache) = shared
        .gm
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    drop(pins);
    GM_CACHE.set(gm_cache);
    let mut totals = Counters::default();
    counters.iter().for_each(|c| totals.accumulate(c));
    totals.model_launch(&counters, shared.resident as usize);
    let result = match lock(&shared.fault).take() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    let record = LaunchRecord {
        kernel: kernel.to_string(),
        num_blocks: n,
        status: result
            .as_ref()
            .err()
            .map_or(sys::ACL_SUCCESS, SimError::acl_code),
        elapsed: started.elapsed(),
        warnings: shared.warnings.load(Ordering::Relaxed),
        totals,
        // Every block has returned: the record may be replayed from now on.
        replay: replay.map(Arc::new),
    };
    (result, record)
}
