//! A miniature simulator for the host kernel binary: device buffers in an allocation table, the
//! `dsnpu_sim_block_ctx` ABI, blocks on their own threads meeting at a real barrier. It lets the kernel
//! tests run without `dsnpu-sim` (and checks the ABI from the other side).
#![allow(dead_code)]

use std::alloc::{self, Layout};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Condvar, Mutex, OnceLock};

use dsnpu_kernels::{KernelDtype, Tiling};
use half::{bf16, f16};

/// `dsnpu_sim_counters`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub gm_to_ub_bytes: u64,
    pub ub_to_gm_bytes: u64,
    pub vector_elem_ops: u64,
    pub cube_macs: u64,
    pub ub_high_water: u64,
    /// `model_cycles`, `pipe_busy_q8`.
    pub reserved: [u64; 2],
    /// ABI 3: the L2 model's HBM traffic.
    pub hbm_read_bytes: u64,
    pub hbm_write_bytes: u64,
}

/// `dsnpu_sim_block_ctx`.
#[repr(C)]
pub struct BlockCtx {
    pub abi_version: u32,
    pub block_idx: u32,
    pub block_num: u32,
    pub ub_capacity: u32,
    pub args: *const c_void,
    pub args_size: usize,
    pub counters: *mut Counters,
    pub sim: *mut c_void,
    pub sync_all: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub check_gm: unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int,
    pub fail: unsafe extern "C" fn(*mut c_void, *const c_char),
    pub warn: unsafe extern "C" fn(*mut c_void, *const c_char),
    /// ABI 2: the GM side of the init check; this stand-in does none.
    pub gm_access: Option<
        unsafe extern "C" fn(*mut c_void, *const c_char, *const c_void, usize, c_int) -> c_int,
    >,
    /// ABI 5: the launch's die-wide L2 record (`dsnpu_sim_launch_begin`).
    pub launch_l2: *mut c_void,
}

type LaunchBeginFn = unsafe extern "C" fn(u32) -> *mut c_void;
type LaunchEndFn = unsafe extern "C" fn(*mut c_void, *mut Counters) -> c_int;

type KernelFn = unsafe extern "C" fn(*const BlockCtx);

pub const UB_910B: u32 = 196_608;

/// The host kernel binary, loaded once per test process.
pub fn library() -> &'static libloading::Library {
    static LIB: OnceLock<libloading::Library> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: the host kernel binary's initialisers only set up the C++ runtime; it has no other
        // load-time side effects.
        unsafe { libloading::Library::new(dsnpu_kernels::HOST_KERNELS_PATH) }
            .expect("load the host kernel binary")
    })
}

/// Plain element types that can be copied to and from device buffers as bytes.
pub trait Pod: Copy + Default + 'static {}
impl Pod for f32 {}
impl Pod for i32 {}
impl Pod for u32 {}
impl Pod for u16 {}
impl Pod for f16 {}
impl Pod for bf16 {}

/// One device allocation: 64-byte aligned, zeroed.
struct Buf {
    ptr: *mut u8,
    len: usize,
}

impl Buf {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len.max(1), 64).expect("valid layout")
    }
    fn new(len: usize) -> Self {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(Self::layout(len)) };
        assert!(!ptr.is_null(), "out of memory");
        Buf { ptr, len }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { alloc::dealloc(self.ptr, Self::layout(self.len)) }
    }
}

/// Device memory for one test, and launches against it.
#[derive(Default)]
pub struct Device {
    bufs: Vec<Buf>,
}

// SAFETY: the buffers are plain heap memory owned by the Device; kernels touch them only during a launch,
// which borrows the Device.
unsafe impl Sync for Device {}

/// A device buffer handle (index into the Device's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gm(usize);

impl Device {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn alloc(&mut self, bytes: usize) -> Gm {
        self.bufs.push(Buf::new(bytes));
        Gm(self.bufs.len() - 1)
    }

    pub fn upload<T: Pod>(&mut self, data: &[T]) -> Gm {
        let bytes = std::mem::size_of_val(data);
        let g = self.alloc(bytes);
        // SAFETY: the new buffer holds `bytes` bytes and does not overlap `data`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), self.bufs[g.0].ptr, bytes)
        };
        g
    }

    pub fn upload_tiling<T: Tiling>(&mut self, t: &T) -> Gm {
        let bytes = t.as_bytes();
        let g = self.alloc(bytes.len());
        // SAFETY: as in `upload`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.bufs[g.0].ptr, bytes.len()) };
        g
    }

    pub fn addr(&self, g: Gm) -> u64 {
        self.bufs[g.0].ptr as u64
    }

    pub fn download<T: Pod>(&self, g: Gm) -> Vec<T> {
        let b = &self.bufs[g.0];
        let n = b.len / std::mem::size_of::<T>();
        let mut v = vec![T::default(); n];
        // SAFETY: `v` holds n * size_of::<T>() <= b.len bytes; T is plain data (any bit pattern valid).
        unsafe {
            std::ptr::copy_nonoverlapping(
                b.ptr,
                v.as_mut_ptr().cast::<u8>(),
                n * std::mem::size_of::<T>(),
            )
        };
        v
    }

    /// Launch `kernel` on `blocks` blocks with the given packed GM addresses.
    pub fn launch(&self, kernel: &str, blocks: u32, args: &[u64]) -> Outcome {
        self.launch_with(
            kernel,
            blocks,
            args,
            UB_910B,
            dsnpu_kernels::HOST_KERNEL_ABI,
        )
    }

    pub fn launch_with(
        &self,
        kernel: &str,
        blocks: u32,
        args: &[u64],
        ub: u32,
        abi: u32,
    ) -> Outcome {
        // SAFETY: every exported kernel symbol has the dsnpu_sim_kernel_fn type.
        let f: KernelFn = *unsafe { library().get::<KernelFn>(kernel.as_bytes()) }
            .unwrap_or_else(|e| panic!("symbol {kernel}: {e}"));
        let launch = LaunchState {
            table: self.bufs.iter().map(|b| (b.ptr as usize, b.len)).collect(),
            blocks,
            barrier: Mutex::new(Barrier::default()),
            cv: Condvar::new(),
            failures: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
        };
        let mut counters = vec![Counters::default(); blocks as usize];
        // SAFETY: the ABI 5 launch hooks have these types (dsnpu_sim_kernel.h).
        let (begin, end) = unsafe {
            (
                *library()
                    .get::<LaunchBeginFn>(b"dsnpu_sim_launch_begin")
                    .expect("dsnpu_sim_launch_begin"),
                *library()
                    .get::<LaunchEndFn>(b"dsnpu_sim_launch_end")
                    .expect("dsnpu_sim_launch_end"),
            )
        };
        // SAFETY: a plain call; the result is handed to every block and then to `end` once.
        let die = unsafe { begin(blocks) };
        let die_addr = die as usize;
        std::thread::scope(|s| {
            for (idx, ctr) in counters.iter_mut().enumerate() {
                let launch = &launch;
                s.spawn(move || {
                    let mut sim = BlockSim {
                        launch,
                        idx: idx as u32,
                    };
                    let ctx = BlockCtx {
                        abi_version: abi,
                        block_idx: idx as u32,
                        block_num: blocks,
                        ub_capacity: ub,
                        args: args.as_ptr().cast(),
                        args_size: std::mem::size_of_val(args),
                        counters: ctr,
                        sim: (&mut sim as *mut BlockSim).cast(),
                        sync_all: cb_sync_all,
                        check_gm: cb_check_gm,
                        fail: cb_fail,
                        warn: cb_warn,
                        gm_access: None,
                        launch_l2: die_addr as *mut c_void,
                    };
                    // SAFETY: `ctx` and everything it points to (args, counters, sim) outlive the call.
                    unsafe { f(&ctx) };
                    launch.exit();
                });
            }
        });
        let mut totals = Counters::default();
        // SAFETY: `die` came from `begin` and every block has returned; `end` releases it.
        let replayed = unsafe { end(die, &mut totals) } == 1;
        Outcome {
            failures: launch.failures.into_inner().unwrap(),
            warnings: launch.warnings.into_inner().unwrap(),
            counters,
            die_hbm: replayed.then_some((totals.hbm_read_bytes, totals.hbm_write_bytes)),
        }
    }
}

/// What a launch reported.
#[derive(Debug)]
pub struct Outcome {
    pub failures: Vec<(u32, String)>,
    pub warnings: Vec<(u32, String)>,
    pub counters: Vec<Counters>,
    /// HBM bytes (read, written) of the launch under the die-wide L2 replay, if it ran.
    pub die_hbm: Option<(u64, u64)>,
}

impl Outcome {
    pub fn assert_ok(&self) {
        assert!(
            self.failures.is_empty(),
            "launch failed: {:?}",
            self.failures
        );
    }
    /// The single fault's message.
    pub fn only_failure(&self) -> &str {
        assert_eq!(
            self.failures.len(),
            1,
            "expected exactly one fault, got {:?}",
            self.failures
        );
        &self.failures[0].1
    }
    /// Counters summed over blocks (the high-water mark is the largest block's).
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for c in &self.counters {
            t.gm_to_ub_bytes += c.gm_to_ub_bytes;
            t.ub_to_gm_bytes += c.ub_to_gm_bytes;
            t.vector_elem_ops += c.vector_elem_ops;
            t.cube_macs += c.cube_macs;
            t.ub_high_water = t.ub_high_water.max(c.ub_high_water);
            t.hbm_read_bytes += c.hbm_read_bytes;
            t.hbm_write_bytes += c.hbm_write_bytes;
        }
        t
    }
}

#[derive(Default)]
struct Barrier {
    arrived: u32,
    exited: u32,
    generation: u64,
    abandoned: bool,
}

struct LaunchState {
    table: Vec<(usize, usize)>,
    blocks: u32,
    barrier: Mutex<Barrier>,
    cv: Condvar,
    failures: Mutex<Vec<(u32, String)>>,
    warnings: Mutex<Vec<(u32, String)>>,
}

impl LaunchState {
    /// A block returned: if everyone else is waiting at a barrier it will never reach, release them.
    fn exit(&self) {
        let mut b = self.barrier.lock().unwrap();
        b.exited += 1;
        if b.arrived > 0 && b.arrived + b.exited == self.blocks {
            b.abandoned = true;
            self.cv.notify_all();
        }
    }
}

struct BlockSim<'a> {
    launch: &'a LaunchState,
    idx: u32,
}

/// # Safety
/// `sim` is the `BlockSim` the launch put in the context.
unsafe fn block_sim<'a>(sim: *mut c_void) -> &'a BlockSim<'a> {
    // SAFETY: per the function's contract.
    unsafe { &*sim.cast::<BlockSim>() }
}

unsafe extern "C" fn cb_sync_all(sim: *mut c_void) -> c_int {
    // SAFETY: called by the kernel with the context's `sim`.
    let s = unsafe { block_sim(sim) };
    let l = s.launch;
    let mut b = l.barrier.lock().unwrap();
    if b.abandoned {
        return 1;
    }
    b.arrived += 1;
    if b.arrived + b.exited == l.blocks {
        b.arrived = 0;
        b.generation += 1;
        let bad = b.exited > 0;
        b.abandoned |= bad;
        l.cv.notify_all();
        return c_int::from(bad);
    }
    let gen = b.generation;
    while b.generation == gen && !b.abandoned {
        b = l.cv.wait(b).unwrap();
    }
    c_int::from(b.abandoned)
}

unsafe extern "C" fn cb_check_gm(sim: *mut c_void, ptr: *const c_void, len: usize) -> c_int {
    // SAFETY: as in cb_sync_all.
    let s = unsafe { block_sim(sim) };
    let p = ptr as usize;
    let inside = s
        .launch
        .table
        .iter()
        .any(|&(base, n)| p >= base && p.checked_add(len).is_some_and(|e| e <= base + n));
    c_int::from(!inside)
}

/// # Safety
/// `msg` is a NUL-terminated string.
unsafe fn message(msg: *const c_char) -> String {
    // SAFETY: per the function's contract.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

unsafe extern "C" fn cb_fail(sim: *mut c_void, msg: *const c_char) {
    // SAFETY: as in cb_sync_all; the kernel passes a C string.
    let (s, m) = unsafe { (block_sim(sim), message(msg)) };
    s.launch.failures.lock().unwrap().push((s.idx, m));
    let mut b = s.launch.barrier.lock().unwrap();
    b.abandoned = true;
    s.launch.cv.notify_all();
}

unsafe extern "C" fn cb_warn(sim: *mut c_void, msg: *const c_char) {
    // SAFETY: as in cb_fail.
    let (s, m) = unsafe { (block_sim(sim), message(msg)) };
    s.launch.warnings.lock().unwrap().push((s.idx, m));
}

/// Element types of the kernels, as the tests see them.
pub trait Elem: Pod + std::fmt::Debug {
    const DT: KernelDtype;
    /// One unit in the last place relative to the value (the type's epsilon).
    const REL_ULP: f64;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    const DT: KernelDtype = KernelDtype::F32;
    const REL_ULP: f64 = f32::EPSILON as f64;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for f16 {
    const DT: KernelDtype = KernelDtype::F16;
    const REL_ULP: f64 = 1.0 / 1024.0;
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Elem for bf16 {
    const DT: KernelDtype = KernelDtype::Bf16;
    const REL_ULP: f64 = 1.0 / 128.0;
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// Deterministic values in [-range, range), rounded to T.
pub fn random<T: Elem>(n: usize, seed: u64, range: f32) -> Vec<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            T::from_f32((u * 2.0 - 1.0) * range)
        })
        .collect()
}

/// Assert `got` equals `want` (computed in f64) within `ulps` of T's precision plus `f32_slack` (the
/// f32 intermediate rounding the kernels do, relative to `scale`).
pub fn assert_close<T: Elem>(
    what: &str,
    got: &[T],
    want: &[f64],
    scale: &[f64],
    ulps: f64,
    f32_slack: f64,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g.to_f32());
        let tol = ulps * T::REL_ULP * w.abs() + f32_slack * scale[i] + 1e-30;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
    }
}

/// Kernel arguments: the GM addresses of `bufs`, in order, then 0 (workspace) and the tiling.
pub fn args(dev: &Device, bufs: &[Option<Gm>], tiling: Gm) -> Vec<u64> {
    let mut a: Vec<u64> = bufs.iter().map(|b| b.map_or(0, |g| dev.addr(g))).collect();
    a.push(0);
    a.push(dev.addr(tiling));
    a
}
