//! The L2 model of the host layer's cycle model (`include/dsnpu_ascendc/dsnpu_host/cost.h`) on a kernel
//! that isolates it: `selftest_l2` streams a per-block region of 32 KiB tiles, some number of passes, and
//! optionally writes every tile back (src/ascendc/selftest.cpp). Every launch here has 24 blocks, as a
//! 910B2's cube cores, so each block's L2 slice is 192 MiB / 24 = 8 MiB = 16384 lines of 512 B (fully
//! associative, LRU);
//! its HBM share is 1.6e12 / 1.8e9 / 24 ≈ 37.04 B/cycle and its L2 share min(128, 3072 / 24) = 128
//! B/cycle. The expected counts below are worked out by hand from those numbers.
//!
//! A launch's HBM totals come from the die-wide replay (`dsnpu_host/l2_die.h`): every block's accesses
//! through one 192 MiB L2, so data that several blocks read misses once, not once per block.

mod common;

use common::*;
use dsnpu_kernels::SelftestTiling;

const BLOCKS: u32 = 24;
const TILE: u64 = 32 * 1024;
const MIB: u64 = 1024 * 1024;
const HBM_SHARE: f64 = 1.6e12 / 1.8e9 / 24.0;
const L2_SHARE: f64 = 128.0;
const LATENCY: f64 = 500.0;

/// Per-block counters of `selftest_l2` over `tiles` tiles per block, `passes` passes, writing back
/// with `write`: (counters of block 0, every block's counters equal). Every block streams its own
/// region, so the die-wide replay sees the blocks' sums.
fn stream(tiles: u32, passes: u32, write: bool) -> Counters {
    let (c, die) = launch_l2(tiles, passes, u32::from(write));
    let n = u64::from(BLOCKS);
    assert_eq!(die, (n * c.hbm_read_bytes, n * c.hbm_write_bytes));
    c
}

/// `selftest_l2` with the tiling's `arg` as given: block 0's counters (every block's are equal) and the
/// launch's die-wide HBM (read, written).
fn launch_l2(tiles: u32, passes: u32, arg: u32) -> (Counters, (u64, u64)) {
    let write = arg & 1 != 0;
    let mut dev = Device::new();
    // Each region starts at the first 512-byte boundary of the buffer: 512 spare bytes.
    let bytes = BLOCKS as usize * tiles as usize * TILE as usize + 512;
    let a = dev.alloc(bytes);
    let b = dev.alloc(if write { bytes } else { 512 });
    let t = dev.upload_tiling(&SelftestTiling {
        mode: passes,
        count: tiles,
        arg,
        reserved: 0,
    });
    let out = dev.launch(
        "selftest_l2",
        BLOCKS,
        &[dev.addr(a), dev.addr(b), 0, dev.addr(t)],
    );
    out.assert_ok();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let first = out.counters[0];
    for (i, c) in out.counters.iter().enumerate() {
        assert_eq!(c, &first, "block {i} differs from block 0");
    }
    (first, out.die_hbm.expect("the launch was replayed"))
}

fn cycles(c: &Counters) -> f64 {
    c.reserved[0] as f64
}

/// Cycles of `n` 32 KiB loads through the depth-2 queue: a load can start only when the load two
/// before it completed (busy + latency), so a tile costs max(busy, (busy + latency) / 2).
fn loads(n: u64, share: f64) -> f64 {
    let busy = TILE as f64 / share;
    n as f64 * busy.max((busy + LATENCY) / 2.0)
}

fn assert_near(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 0.02 * want + LATENCY + 100.0,
        "{what}: {got} cycles, want about {want}"
    );
}

#[test]
fn streaming_more_than_the_slice_once_misses_everything() {
    // 9 MiB per block (288 tiles) read once through an 8 MiB slice: no line is ever reused, so every
    // byte is an HBM read and the time is what the model charged before it had an L2: bytes / share.
    let c = stream(288, 1, false);
    assert_eq!(c.gm_to_ub_bytes, 9 * MIB);
    assert_eq!(c.hbm_read_bytes, 9 * MIB);
    assert_eq!((c.ub_to_gm_bytes, c.hbm_write_bytes), (0, 0));
    // 884.7 busy cycles per tile > (884.7 + 500) / 2: bandwidth bound, 288 x 884.7 ≈ 254.8k cycles.
    assert_near("stream", cycles(&c), loads(288, HBM_SHARE));
}

#[test]
fn rereading_a_small_buffer_hits_after_the_first_pass() {
    // 1 MiB per block (32 tiles) read 4 times: the first pass misses (1 MiB from HBM), the other three
    // hit. Hits are 256 busy cycles, latency bound in the depth-2 queue at (256 + 500) / 2 = 378 per
    // tile: 32 x 884.7 + 96 x 378 ≈ 64.6k cycles instead of 128 x 884.7 ≈ 113.2k with every byte from HBM.
    let c = stream(32, 4, false);
    assert_eq!(c.gm_to_ub_bytes, 4 * MIB);
    assert_eq!(c.hbm_read_bytes, MIB);
    let want = loads(32, HBM_SHARE) + loads(96, L2_SHARE);
    assert_near("reread", cycles(&c), want);
    assert!(cycles(&c) < 0.6 * loads(128, HBM_SHARE), "{}", cycles(&c));
    // The same launch again: the same hits and the same modelled time.
    assert_eq!(stream(32, 4, false), c);
}

#[test]
fn a_working_set_just_over_the_slice_thrashes() {
    // Exactly the slice (8 MiB = 256 tiles), two passes: the second pass hits everywhere.
    let fits = stream(256, 2, false);
    assert_eq!(fits.gm_to_ub_bytes, 16 * MIB);
    assert_eq!(fits.hbm_read_bytes, 8 * MIB);
    // One tile more (8 MiB + 32 KiB): a cyclic sweep over more lines than the LRU slice holds evicts
    // exactly the line needed next, so both passes miss everywhere.
    let over = stream(257, 2, false);
    assert_eq!(over.gm_to_ub_bytes, 2 * 257 * TILE);
    assert_eq!(over.hbm_read_bytes, 2 * 257 * TILE);
    // Time: 256 misses + 256 hits ≈ 323k cycles against 514 misses ≈ 455k.
    assert_near(
        "fits",
        cycles(&fits),
        loads(256, HBM_SHARE) + loads(256, L2_SHARE),
    );
    assert_near("thrash", cycles(&over), loads(514, HBM_SHARE));
}

#[test]
fn rewritten_lines_are_written_back_once() {
    // 1 MiB per block read and written back 4 times: 4 MiB each way through GM, 1 MiB of HBM reads (the
    // first pass) and 1 MiB of HBM writes (each 32-byte sector dirtied once; rewrites of dirty sectors
    // stay in L2). Reads and writes (2 MiB) fit the slice.
    let c = stream(32, 4, true);
    assert_eq!((c.gm_to_ub_bytes, c.ub_to_gm_bytes), (4 * MIB, 4 * MIB));
    assert_eq!((c.hbm_read_bytes, c.hbm_write_bytes), (MIB, MIB));
}

#[test]
fn stores_leave_at_the_l2_rate_and_are_written_back_once() {
    // 9 MiB of stores per block (arg bits 0 and 2: one tile read, then written to 288 tiles of b), more
    // than the 8 MiB slice: every sector is dirtied once, so 9 MiB of HBM writes (the die's replay: 24
    // times that), but a store's time is the L2's (the write-back drains behind the core): 288 x 256
    // busy cycles at 128 B/cycle, about 73.7k, where HBM-rate stores would take 288 x 884.7 ≈ 254.8k.
    let (c, die) = launch_l2(288, 1, 5);
    assert_eq!((c.ub_to_gm_bytes, c.hbm_write_bytes), (9 * MIB, 9 * MIB));
    assert_eq!(die.1, 24 * 9 * MIB);
    let busy = TILE as f64 / L2_SHARE;
    assert_near("stores", cycles(&c), 288.0 * busy + loads(1, HBM_SHARE));
}

#[test]
fn data_every_block_reads_misses_once_on_the_die() {
    // All 24 blocks read the same 1 MiB twice (arg bit 1). Each block's slice starts empty, so each
    // block's counters show the first pass as 1 MiB of misses (24 MiB summed over the blocks); the die's
    // one L2 fetches the 1 MiB once. With write-back (bit 0) every block also dirties its own 1 MiB of
    // b: 24 MiB of HBM writes either way.
    let (c, die) = launch_l2(32, 2, 2);
    assert_eq!((c.gm_to_ub_bytes, c.hbm_read_bytes), (2 * MIB, MIB));
    assert_eq!(die, (MIB, 0));
    let (c, die) = launch_l2(32, 2, 3);
    assert_eq!((c.hbm_read_bytes, c.hbm_write_bytes), (MIB, MIB));
    assert_eq!(die, (MIB, 24 * MIB));
    // The replay's order is fixed: the same launch, the same totals.
    assert_eq!(launch_l2(32, 2, 3).1, die);
}
