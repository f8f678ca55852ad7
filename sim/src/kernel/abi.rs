//! The Rust mirror of `sim/include/dsnpu_sim_kernel.h`: the host kernel ABI and the launch
//! counters of the simulator extensions. The layouts are asserted here and, with the same
//! numbers, by `_Static_assert`s in `sim/testdata/test_kernels.c`.
use std::ffi::{c_char, c_int, c_void};

/// `DSNPU_SIM_KERNEL_ABI`.
pub const DSNPU_SIM_KERNEL_ABI: u32 = 5;

/// `DSNPU_SIM_SYNC_ALL_SUFFIX`: `<kernel><suffix>`, a `uint8_t` object, declares that the kernel's blocks
/// meet in `sync_all` (ABI 4).
pub const SYNC_ALL_SUFFIX: &str = "__dsnpu_sync_all";

/// `DSNPU_SIM_COOP_SUFFIX`: `<kernel><suffix>`, a `uint8_t` object next to the `sync_all` one, declares
/// that the kernel's blocks may run cooperatively on one thread, switching only in `sync_all`.
pub const COOP_SUFFIX: &str = "__dsnpu_coop";

/// The symbol every host kernel binary exports, NUL-terminated.
pub const ABI_VERSION_SYMBOL: &[u8] = b"dsnpu_sim_kernel_abi_version\0";

/// `dsnpu_sim_counters`: per-block traffic counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub gm_to_ub_bytes: u64,
    pub ub_to_gm_bytes: u64,
    pub vector_elem_ops: u64,
    pub cube_macs: u64,
    pub ub_high_water: u64,
    /// The host layer's cycle model: a block's modelled cycles; in a launch's totals, the busiest
    /// core's (see [`Counters::model_launch`]).
    pub model_cycles: u64,
    /// Busy fraction of each pipe (S, V, M, MTE1, MTE2, MTE3, FIX in bytes 0..6, 255 = always).
    pub pipe_busy_q8: u64,
    /// ABI 3: HBM bytes read for the GM reads that missed the host layer's L2 model (whole 32-byte
    /// sectors): a block's own L2 slice; in a launch's reported counters, the die-wide replay when the
    /// binary records one (ABI 5, `sim/src/kernel/replay.rs`).
    pub hbm_read_bytes: u64,
    /// ABI 3: HBM bytes written back for the 32-byte sectors GM writes dirtied (once per residency).
    pub hbm_write_bytes: u64,
}

impl Counters {
    /// Adds a block's counters: sums (wrapping: the values come from kernel code), maximum of
    /// `ub_high_water`.
    pub fn accumulate(&mut self, block: &Counters) {
        self.gm_to_ub_bytes = self.gm_to_ub_bytes.wrapping_add(block.gm_to_ub_bytes);
        self.ub_to_gm_bytes = self.ub_to_gm_bytes.wrapping_add(block.ub_to_gm_bytes);
        self.vector_elem_ops = self.vector_elem_ops.wrapping_add(block.vector_elem_ops);
        self.cube_macs = self.cube_macs.wrapping_add(block.cube_macs);
        self.ub_high_water = self.ub_high_water.max(block.ub_high_water);
        self.hbm_read_bytes = self.hbm_read_bytes.wrapping_add(block.hbm_read_bytes);
        self.hbm_write_bytes = self.hbm_write_bytes.wrapping_add(block.hbm_write_bytes);
    }

    /// The launch's modelled cycles and busy fractions from its blocks (block i runs on core
    /// i % cores, after the blocks before it on that core): the busiest core's summed cycles, and the
    /// busy fractions of the longest block.
    pub fn model_launch(&mut self, blocks: &[Counters], cores: usize) {
        let cores = cores.max(1);
        let mut per_core = vec![0u64; cores.min(blocks.len()).max(1)];
        let n = per_core.len();
        for (i, b) in blocks.iter().enumerate() {
            per_core[i % n] = per_core[i % n].saturating_add(b.model_cycles);
        }
        self.model_cycles = per_core.into_iter().max().unwrap_or(0);
        self.pipe_busy_q8 = blocks
            .iter()
            .max_by_key(|b| b.model_cycles)
            .map_or(0, |b| b.pipe_busy_q8);
    }
}

/// `sync_all` callback: 0, or non-zero when the launch is being abandoned.
pub type SyncAllFn = unsafe extern "C" fn(sim: *mut c_void) -> c_int;
/// `check_gm` callback: 0 when `[ptr, ptr + len)` is inside one live allocation of the device.
pub type CheckGmFn =
    unsafe extern "C" fn(sim: *mut c_void, ptr: *const c_void, len: usize) -> c_int;
/// `fail` / `warn` callbacks; the message is copied.
pub type MessageFn = unsafe extern "C" fn(sim: *mut c_void, msg: *const c_char);
/// `gm_access` callback (the init check): marks a store, checks a load; non-zero after a finding.
pub type GmAccessFn = unsafe extern "C" fn(
    sim: *mut c_void,
    op: *const c_char,
    ptr: *const c_void,
    len: usize,
    write: c_int,
) -> c_int;

/// `dsnpu_sim_block_ctx`: what one block of a launch sees.
#[repr(C)]
#[derive(Debug)]
pub struct BlockCtx {
    pub abi_version: u32,
    pub block_idx: u32,
    pub block_num: u32,
    pub ub_capacity: u32,
    pub args: *const c_void,
    pub args_size: usize,
    pub counters: *mut Counters,
    pub sim: *mut c_void,
    pub sync_all: Option<SyncAllFn>,
    pub check_gm: Option<CheckGmFn>,
    pub fail: Option<MessageFn>,
    pub warn: Option<MessageFn>,
    pub gm_access: Option<GmAccessFn>,
    /// ABI 5: what the binary's `dsnpu_sim_launch_begin` returned for this launch, or null.
    pub launch_l2: *mut c_void,
}

/// ABI 5, optional: `void *dsnpu_sim_launch_begin(uint32_t num_blocks)`, called before a launch's blocks.
pub type LaunchBeginFn = unsafe extern "C" fn(num_blocks: u32) -> *mut c_void;
/// ABI 5, optional: `int dsnpu_sim_launch_end(void *launch, dsnpu_sim_counters *totals)`, called once after
/// the launch's blocks: releases `launch`; 1 if it replaced the totals' HBM counters.
pub type LaunchEndFn = unsafe extern "C" fn(launch: *mut c_void, totals: *mut Counters) -> c_int;
/// The launch hook symbols, NUL-terminated.
pub const LAUNCH_BEGIN_SYMBOL: &[u8] = b"dsnpu_sim_launch_begin\0";
pub const LAUNCH_END_SYMBOL: &[u8] = b"dsnpu_sim_launch_end\0";

/// `dsnpu_sim_kernel_fn`.
pub type KernelFn = unsafe extern "C" fn(ctx: *const BlockCtx);
/// `dsnpu_sim_kernel_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// `dsnpu_sim_launch_counters`: the last completed launch of a stream.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LaunchCounters {
    pub launch_seq: u64,
    pub num_blocks: u32,
    pub status: i32,
    pub elapsed_ns: u64,
    pub warnings: u64,
    pub totals: Counters,
    pub kernel_name: [c_char; 128],
}

impl Default for LaunchCounters {
    fn default() -> Self {
        LaunchCounters {
            launch_seq: 0,
            num_blocks: 0,
            status: 0,
            elapsed_ns: 0,
            warnings: 0,
            totals: Counters::default(),
            kernel_name: [0; 128],
        }
    }
}

impl LaunchCounters {
    /// Stores `name`, truncated to 127 bytes, NUL-terminated.
    pub fn set_kernel_name(&mut self, name: &str) {
        self.kernel_name = [0; 128];
        for (dst, &b) in self
            .kernel_name
            .iter_mut()
            .zip(name.as_bytes().iter().take(127))
        {
            *dst = b as c_char;
        }
    }

    /// The kernel name up to its NUL.
    pub fn kernel_name(&self) -> String {
        let bytes: Vec<u8> = self
            .kernel_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<BlockCtx>() == 96);
    assert!(offset_of!(BlockCtx, args) == 16);
    assert!(offset_of!(BlockCtx, sim) == 40);
    assert!(offset_of!(BlockCtx, warn) == 72);
    assert!(offset_of!(BlockCtx, gm_access) == 80);
    assert!(offset_of!(BlockCtx, launch_l2) == 88);
    assert!(size_of::<Counters>() == 72);
    assert!(offset_of!(Counters, ub_high_water) == 32);
    assert!(size_of::<LaunchCounters>() == 232);
    assert!(offset_of!(LaunchCounters, totals) == 32);
    assert!(offset_of!(LaunchCounters, kernel_name) == 104);
    assert!(offset_of!(Counters, hbm_read_bytes) == 56);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulate_sums_and_takes_the_max_high_water() {
        let mut t = Counters::default();
        t.accumulate(&Counters {
            gm_to_ub_bytes: u64::MAX,
            ub_high_water: 5,
            cube_macs: 2,
            hbm_read_bytes: 7,
            ..Default::default()
        });
        t.accumulate(&Counters {
            gm_to_ub_bytes: 2,
            hbm_read_bytes: 1,
            hbm_write_bytes: 3,
            ub_high_water: 3,
            cube_macs: 2,
            ..Default::default()
        });
        assert_eq!(t.gm_to_ub_bytes, 1, "wraps instead of panicking");
        assert_eq!(t.ub_high_water, 5);
        assert_eq!(t.cube_macs, 4);
        assert_eq!((t.hbm_read_bytes, t.hbm_write_bytes), (8, 3));
    }

    #[test]
    fn kernel_names_are_truncated_and_terminated() {
        let mut c = LaunchCounters::default();
        c.set_kernel_name("vec_add");
        assert_eq!(c.kernel_name(), "vec_add");
        c.set_kernel_name(&"k".repeat(300));
        assert_eq!(c.kernel_name().len(), 127);
        assert_eq!(c.kernel_name[127], 0);
    }
}
