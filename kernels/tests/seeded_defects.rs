//! The sanitizer's acceptance: kernels with one seeded defect each are caught with the right kind
//! (race / init / sync findings, mem faults), and the correctly synchronized variants of the same
//! kernels raise nothing and compute the right answer. The kernels are `selftest_defect`'s modes
//! (documented in `src/ascendc/selftest.cpp`); the checks are DSNPU_SIM_CHECK's, which the workspace's
//! `.cargo/config.toml` turns all on for cargo commands (this file asserts it).
mod common;

use common::*;
use dsnpu_kernels::SelftestTiling;

const N: u32 = 64;

fn run(mode: u32) -> (Outcome, Vec<f32>, Vec<f32>) {
    let mut dev = Device::new();
    let a: Vec<f32> = (0..N).map(|i| i as f32 * 0.5 - 3.0).collect();
    let ga = dev.upload(&a);
    let gb = dev.upload(&vec![0.0f32; N as usize]);
    let t = dev.upload_tiling(&SelftestTiling {
        mode,
        count: N,
        arg: 0,
        reserved: 0,
    });
    let out = dev.launch(
        "selftest_defect",
        1,
        &[dev.addr(ga), dev.addr(gb), 0, dev.addr(t)],
    );
    (out, a, dev.download(gb))
}

fn checks_are_on() {
    let v = std::env::var("DSNPU_SIM_CHECK").unwrap_or_default();
    for k in ["race", "init", "sync"] {
        assert!(
            v.split(',').any(|w| w == k || w == "all"),
            "DSNPU_SIM_CHECK={v:?} lacks {k}: run through cargo (.cargo/config.toml sets it)"
        );
    }
}

/// The single finding of `mode`, after checking its kind prefix.
fn finding(mode: u32, kind: &str) -> String {
    checks_are_on();
    let (out, _, _) = run(mode);
    let msg = out.only_failure().to_string();
    assert!(
        msg.starts_with(&format!("{kind}: ")),
        "mode {mode}: expected a {kind} finding, got {msg}"
    );
    msg
}

#[test]
fn unsynchronized_mte2_to_v_is_a_race() {
    let m = finding(1, "race");
    assert!(
        m.contains("Muls on V reads") && m.contains("DataCopy on MTE2 wrote"),
        "{m}"
    );
    assert!(m.contains("TBuf buffer 0 at UB [0, 256)"), "{m}");
}

#[test]
fn unsynchronized_v_to_mte3_is_a_race() {
    let m = finding(2, "race");
    assert!(
        m.contains("DataCopy on MTE3 reads") && m.contains("Muls on V wrote"),
        "{m}"
    );
}

#[test]
fn unsynchronized_s_to_mte3_is_a_race() {
    let m = finding(3, "race");
    assert!(
        m.contains("DataCopy on MTE3 reads") && m.contains("LocalTensor::SetValue on S wrote"),
        "{m}"
    );
}

#[test]
fn vecin_buffer_refilled_while_copied_out_is_a_race() {
    let m = finding(4, "race");
    assert!(
        m.contains("DataCopy on MTE2 writes") && m.contains("DataCopy on MTE3 read"),
        "{m}"
    );
    assert!(m.contains("TQue<VECIN> buffer 0"), "{m}");
}

#[test]
fn reload_under_a_vector_read_is_a_race() {
    let m = finding(5, "race");
    assert!(
        m.contains("DataCopy on MTE2 writes") && m.contains("on V"),
        "{m}"
    );
}

#[test]
fn reading_back_gm_the_core_stored_needs_a_flag_from_the_storing_pipe() {
    // GM ordering inside one core: MTE3 stores b, then MTE2 (mode 16) or the scalar unit (mode 17)
    // reads it back with no flag from MTE3.
    let m = finding(16, "race");
    assert!(
        m.contains("DataCopy on MTE2 of the core reads GM bytes")
            && m.contains("the earlier DataCopy on MTE3 of the core wrote them, with no flag from MTE3 to MTE2"),
        "{m}"
    );
    let m = finding(17, "race");
    assert!(
        m.contains("GlobalTensor::GetValue on S of the core reads GM bytes")
            && m.contains("with no flag from MTE3 to S"),
        "{m}"
    );
}

#[test]
fn the_scalar_unit_s_data_cache_needs_a_clean_and_invalidate() {
    // Each GM byte range is the first line of b (b[0..16), 64 bytes): where the hardware's data cache
    // would differ from GM. The address is the device's, so only its length is asserted.
    let span = |m: &str| -> u64 {
        let r = m.split("GM bytes [").nth(1).expect("a GM range");
        let (lo, hi) = r.split_once(", ").expect("a range");
        let hi = hi.split(')').next().expect("a range");
        let p = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
        p(hi) - p(lo)
    };
    // A stale read: b[0]'s 4 bytes, cached as a[0] before MTE3 wrote 2 a[0].
    let m = finding(18, "race");
    assert!(
        m.contains("GlobalTensor::GetValue of the core reads GM bytes")
            && m.contains("from its data cache, which took them before they changed in GM"),
        "{m}"
    );
    assert_eq!(span(&m), 4, "{m}");
    // An unpublished write: MTE2 reads b while b's SetValues are still in the cache (all of b).
    let m = finding(19, "race");
    assert!(
        m.contains("DataCopy of the core reads GM bytes")
            && m.contains("which a GlobalTensor::SetValue of the core left in its data cache"),
        "{m}"
    );
    assert_eq!(span(&m), u64::from(N) * 4, "{m}");
    // A lost write: the kernel's end writes b[0]'s line back over b[1..16), which MTE3 rewrote. The bytes
    // that differ run from byte 2 of b[1] (a[1] = -2.5 is 0xC0200000, 2 a[1] = -5 is 0xC0A00000) to the
    // last byte of b[15] (4.5 is 0x40900000, 9 is 0x41100000): bytes 6..64 of the line.
    let m = finding(20, "race");
    assert!(
        m.contains("the data cache of the core writes a 64-byte line back at the kernel's end, overwriting GM bytes"),
        "{m}"
    );
    assert_eq!(span(&m), 58, "{m}");
}

#[test]
fn copying_out_unwritten_ub_is_an_init_finding() {
    let m = finding(6, "init");
    assert!(m.contains("DataCopy on MTE3 copies to GM UB byte 0"), "{m}");
}

#[test]
fn scalar_read_of_unwritten_ub_is_an_init_finding() {
    let m = finding(7, "init");
    assert!(
        m.contains("LocalTensor::GetValue on S reads UB byte 252"),
        "{m}"
    );
}

#[test]
fn wait_without_set_is_a_sync_finding() {
    let m = finding(8, "sync");
    assert!(m.contains("WaitFlag<MTE2_V>(3) with no SetFlag"), "{m}");
}

#[test]
fn flag_left_set_is_a_sync_finding() {
    let m = finding(9, "sync");
    assert!(m.contains("SetFlag<V_MTE3>(2) was never waited for"), "{m}");
}

#[test]
fn event_id_out_of_range_is_a_sync_finding() {
    let m = finding(10, "sync");
    assert!(m.contains("eventID outside 0..7"), "{m}");
}

#[test]
fn pipe_barrier_on_the_scalar_pipe_is_a_sync_finding() {
    let m = finding(11, "sync");
    assert!(m.contains("PipeBarrier<PIPE_S>"), "{m}");
}

#[test]
fn misaligned_local_tensor_is_a_mem_fault() {
    let (out, _, _) = run(12);
    assert_eq!(
        out.only_failure(),
        "Add: dst at UB address 4 is not 32-byte aligned"
    );
}

#[test]
fn l0_overflow_is_a_mem_fault() {
    let (out, _, _) = run(13);
    let m = out.only_failure();
    assert!(
        m.starts_with("Matmul::Init: base tile 256x256x128 needs L0A 131072"),
        "{m}"
    );
}

#[test]
fn ub_overflow_is_a_mem_fault() {
    // selftest_fault mode 1: TPipe::InitBuffer past the 192 KiB Unified Buffer.
    let mut dev = Device::new();
    let t = dev.upload_tiling(&SelftestTiling {
        mode: 1,
        count: 196_609,
        arg: 0,
        reserved: 0,
    });
    let out = dev.launch("selftest_fault", 1, &[0, 0, 0, dev.addr(t)]);
    assert!(out
        .only_failure()
        .starts_with("TPipe::InitBuffer: 196640 bytes"));
}

#[test]
fn synchronized_variants_raise_nothing_and_compute_the_result() {
    checks_are_on();
    for mode in [101, 102, 103, 104, 105, 106, 116, 117, 118, 119, 120] {
        let (out, a, b) = run(mode);
        assert!(
            out.failures.is_empty() && out.warnings.is_empty(),
            "mode {mode}: {:?} {:?}",
            out.failures,
            out.warnings
        );
        let want: Vec<f32> = a.iter().map(|x| 2.0 * x).collect();
        assert_eq!(b, want, "mode {mode}");
    }
}

#[test]
fn the_cost_model_sees_the_synchronization() {
    // The same b = 2a with flags and with full barriers: the block's modelled cycles (reserved[0]) are
    // positive, and barriers never make it faster.
    let (flags, _, _) = run(101);
    let (barriers, _, _) = run(106);
    let (f, b) = (
        flags.counters[0].reserved[0],
        barriers.counters[0].reserved[0],
    );
    assert!(f > 0, "no modelled cycles");
    assert!(b >= f, "barriers {b} < flags {f}");
}

/// `selftest_cost` in `mode` over 8192 f32 in tiles of 1024 on one block: (modelled cycles, b).
fn cost(mode: u32) -> (u64, Vec<f32>) {
    let n = 8192u32;
    let mut dev = Device::new();
    let a: Vec<f32> = (0..n).map(|i| ((i * 37) % 1001) as f32 - 500.0).collect();
    let ga = dev.upload(&a);
    let gb = dev.upload(&vec![0.0f32; n as usize]);
    let t = dev.upload_tiling(&SelftestTiling {
        mode,
        count: n,
        arg: 1024,
        reserved: 0,
    });
    let out = dev.launch(
        "selftest_cost",
        1,
        &[dev.addr(ga), dev.addr(gb), 0, dev.addr(t)],
    );
    out.assert_ok();
    (out.counters[0].reserved[0], dev.download(gb))
}

#[test]
fn the_cost_model_on_kernels_that_isolate_one_effect() {
    checks_are_on();
    let (single, b) = cost(0);
    let (double, b2) = cost(1);
    let (barrier, b3) = cost(2);
    let a: Vec<f32> = (0..8192u32)
        .map(|i| ((i * 37) % 1001) as f32 - 500.0)
        .collect();
    assert!(b == a && b2 == a && b3 == a, "the copies are exact");
    // One block gets the per-core MTE cap of 128 B/cycle: a 4 KiB tile is 32 busy cycles + 500 latency
    // each way. Serialized (depth 1): every tile costs load + store, 8 x (2 x 532) ~ 8.5k cycles.
    // Double buffered: the next load overlaps the previous store, ~ 8 x 532 + 532.
    println!("copy 8 tiles: depth 1 {single}, depth 2 {double}, depth 2 + barrier per tile {barrier} cycles");
    assert!(
        (8 * 2 * 532 - 64..8 * 2 * 532 + 600).contains(&single),
        "{single}"
    );
    assert!(
        (double as f64) < 0.7 * single as f64,
        "{double} vs {single}"
    );
    assert!(barrier >= single, "{barrier} vs {single}");
    let (scalar, m1) = cost(3);
    let (vector, m2) = cost(4);
    assert_eq!((m1[0], m2[0]), (500.0, 500.0));
    println!("max of 8192: scalar loop {scalar}, ReduceMax {vector} cycles");
    // 8192 scalar reads at 2 cycles vs one 32 KiB reduction (128 repeats).
    assert!(scalar > 10 * vector, "{scalar} vs {vector}");
}

/// Seeded defect 15, "unwritten output read back", through the simulator (the GM side of init needs its
/// shadow of device memory, which the stand-in above does not keep): `b += 2 a` on a `b` nothing wrote
/// since `aclrtMalloc` is an init finding naming the operation and the unwritten bytes; after a copy into
/// `b` the same kernel is the correct variant, runs clean and computes `b + 2 a`.
#[test]
fn unwritten_output_read_back_is_an_init_finding() {
    use dsnpu_kernels::launch::KernelLibrary;
    checks_are_on();
    let dev = dsnpu_runtime::Device::new(0).unwrap();
    let lib = KernelLibrary::get(&dev).unwrap();
    let s = dev.new_stream().unwrap();
    let a: Vec<f32> = (0..N).map(|i| i as f32 * 0.5 - 3.0).collect();
    let ad = s.upload(&a).unwrap();
    // An exact aclrtMalloc (a pool block may have been written by an earlier owner).
    let mut b = s.alloc_uncached::<f32>(N as usize).unwrap();
    let f = lib.function_named("selftest_defect").unwrap();
    let tiling = SelftestTiling {
        mode: 15,
        count: N,
        arg: 0,
        reserved: 0,
    };
    let launch = |b: &mut dsnpu_runtime::DeviceBuffer<f32>| {
        // SAFETY: selftest_defect(a, b, workspace, tiling) touches `count` = 64 f32 of a and b, both 64
        // elements long; mode 15 only reads a and reads then writes b.
        unsafe {
            f.builder(&s)
                .arg(&ad)
                .arg_mut(b)
                .null()
                .tiling(&tiling)
                .launch(1)
                .unwrap()
        };
        s.synchronize()
    };
    let e = launch(&mut b).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "kernel selftest_defect block 0: init: DataCopy reads GM bytes [0, {}) of the {}-byte device allocation",
            N * 4,
            N * 4
        )),
        "{text}"
    );
    let start: Vec<f32> = (0..N).map(|i| i as f32).collect();
    b.copy_from_host(&start).unwrap();
    launch(&mut b).unwrap();
    let want: Vec<f32> = (0..N as usize).map(|i| start[i] + 2.0 * a[i]).collect();
    assert_eq!(b.to_vec().unwrap(), want);
}

// --- Mix kernels: cube and vector cores of one AI Core (`selftest_mix`, src/ascendc/selftest.cpp) ------

const MIX_N: usize = 16;

/// `selftest_mix` in `mode` on `blocks` blocks: (outcome, a, w, out as f32 bits).
fn run_mix(mode: u32, blocks: u32) -> (Outcome, Vec<f32>, Vec<f32>, Vec<u32>) {
    let a: Vec<f32> = (0..MIX_N * MIX_N).map(|i| (i % 13) as f32 - 6.0).collect();
    let w: Vec<f32> = (0..MIX_N * MIX_N)
        .map(|i| ((i * 7) % 5) as f32 - 2.0)
        .collect();
    run_tile_kernel(
        "selftest_mix",
        mode,
        blocks,
        a,
        w,
        MIX_N * MIX_N,
        MIX_N * MIX_N,
    )
}

/// `kernel(a, w, out, workspace, tiling)` with `SelftestTiling { mode }` on `blocks` blocks, `out_len`
/// u32 of zeros and a workspace of the system workspace plus `user_ws` f32: (outcome, a, w, out).
fn run_tile_kernel(
    kernel: &str,
    mode: u32,
    blocks: u32,
    a: Vec<f32>,
    w: Vec<f32>,
    out_len: usize,
    user_ws: usize,
) -> (Outcome, Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut dev = Device::new();
    let (ga, gw) = (dev.upload(&a), dev.upload(&w));
    let gout = dev.upload(&vec![0u32; out_len]);
    let ws = dev.alloc(dsnpu_kernels::SYS_WORKSPACE_BYTES as usize + user_ws * 4);
    let t = dev.upload_tiling(&SelftestTiling {
        mode,
        count: 0,
        arg: 0,
        reserved: 0,
    });
    let out = dev.launch(
        kernel,
        blocks,
        &[
            dev.addr(ga),
            dev.addr(gw),
            dev.addr(gout),
            dev.addr(ws),
            dev.addr(t),
        ],
    );
    (out, a, w, dev.download(gout))
}

#[test]
fn mix_launch_indices_are_as_documented() {
    // 2 blocks of a 1:2 mix launch: AIC i has GetBlockIdx i; its AIVs 2i and 2i + 1, sub-blocks 0 and
    // 1; GetBlockNum is 2 everywhere; GetTaskRation 1 on the AIC, 2 on the AIVs. Each core writes the
    // first 4 int32 of a 64-byte line of its own.
    let (out, _, _, got) = run_mix(4, 2);
    out.assert_ok();
    let got: Vec<u32> = got
        .chunks(16)
        .take(6)
        .flat_map(|l| l[..4].to_vec())
        .collect();
    let want: Vec<u32> = [
        [0, 2, 0, 1],
        [0, 2, 0, 2],
        [1, 2, 1, 2],
        [1, 2, 0, 1],
        [2, 2, 0, 2],
        [3, 2, 1, 2],
    ]
    .concat();
    assert_eq!(&got[..24], &want[..]);
}

#[test]
fn cross_core_flag_orders_the_workspace_tile() {
    checks_are_on();
    let (out, a, w, got) = run_mix(0, 1);
    assert!(
        out.failures.is_empty() && out.warnings.is_empty(),
        "{:?} {:?}",
        out.failures,
        out.warnings
    );
    // out = 2 a w^T, small integers: exact in f32.
    for i in 0..MIX_N {
        for j in 0..MIX_N {
            let s: f32 = (0..MIX_N)
                .map(|k| a[i * MIX_N + k] * w[j * MIX_N + k])
                .sum();
            assert_eq!(f32::from_bits(got[i * MIX_N + j]), 2.0 * s, "({i}, {j})");
        }
    }
    // The cube's work is on the AIC, the vector's on the AIVs: the block did both.
    let c = out.counters[0];
    assert_eq!(c.cube_macs, (MIX_N * MIX_N * MIX_N) as u64);
    assert_eq!(c.vector_elem_ops, (MIX_N * MIX_N) as u64);
}

#[test]
fn missing_cross_core_flag_is_a_gm_race() {
    checks_are_on();
    // Whichever core's access comes second in real time reports it: the vector core's read after the
    // cube's write, or the cube's write after a vector core's read.
    let (out, _, _, _) = run_mix(1, 1);
    let m = out.only_failure();
    println!("{m}");
    assert!(m.starts_with("race: "), "{m}");
    assert!(
        m.contains("Matmul::GetTensorC on FIX of AIC") && m.contains("DataCopyPad on MTE2 of AIV"),
        "{m}"
    );
    assert!(m.contains("with no cross-core flag between"), "{m}");
}

#[test]
fn cross_core_wait_nobody_sets_is_a_sync_finding() {
    checks_are_on();
    let (out, _, _, _) = run_mix(2, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with("sync: CrossCoreWaitFlag(1) can never be satisfied"),
        "{m}"
    );
}

#[test]
fn cross_core_flag_left_set_is_a_sync_finding() {
    checks_are_on();
    let (out, _, _, _) = run_mix(3, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with("sync: CrossCoreSetFlag(0) towards AIV 0 was never waited for"),
        "{m}"
    );
}

// --- Vector cores driving the cube's Matmul, and SyncAll in mix launches (`selftest_kfc`) ---------------

/// `selftest_kfc` in `mode` on `blocks` blocks: (outcome, a, w, out as u32 bits: 256 per block, or
/// 4 * blocks for the SyncAll modes).
fn run_kfc(mode: u32, blocks: u32) -> (Outcome, Vec<f32>, Vec<f32>, Vec<u32>) {
    let a: Vec<f32> = (0..MIX_N * MIX_N).map(|i| (i % 11) as f32 - 5.0).collect();
    let w: Vec<f32> = (0..MIX_N * MIX_N)
        .map(|i| ((i * 3) % 7) as f32 - 3.0)
        .collect();
    let per_block = MIX_N * MIX_N * blocks as usize;
    run_tile_kernel("selftest_kfc", mode, blocks, a, w, per_block, 2 * per_block)
}

/// out = 2 a wᵀ in every block (small integers: exact in f32).
fn assert_twice_product(a: &[f32], w: &[f32], got: &[u32], blocks: usize) {
    for b in 0..blocks {
        for i in 0..MIX_N {
            for j in 0..MIX_N {
                let s: f32 = (0..MIX_N)
                    .map(|k| a[i * MIX_N + k] * w[j * MIX_N + k])
                    .sum();
                let at = b * MIX_N * MIX_N + i * MIX_N + j;
                assert_eq!(f32::from_bits(got[at]), 2.0 * s, "block {b} ({i}, {j})");
            }
        }
    }
}

#[test]
fn vector_cores_drive_the_cube_matmul() {
    checks_are_on();
    for (mode, blocks) in [(0, 1), (0, 3), (2, 2)] {
        let (out, a, w, got) = run_kfc(mode, blocks);
        assert!(
            out.failures.is_empty() && out.warnings.is_empty(),
            "mode {mode}: {:?} {:?}",
            out.failures,
            out.warnings
        );
        assert_twice_product(&a, &w, &got, blocks as usize);
        // The multiplies ran on the cube core: each block's two requests of 8 x 16 x 16.
        for c in &out.counters {
            assert_eq!(c.cube_macs, (MIX_N * MIX_N * MIX_N) as u64, "mode {mode}");
        }
    }
}

#[test]
fn a_panel_held_in_l1_is_loaded_once_per_request() {
    checks_are_on();
    // Per block: each vector core's request is C [8, 16] = A [8, 16] · Bᵀ (B [16, 16]), f32. With one
    // 16-wide base tile (mode 0) it loads A (512 B) and B (1 KiB) once; with two 8-wide tiles (mode 13)
    // B comes in half by half (2 × 512 B) and A, whose one k step depthA1 holds, only for the first
    // tile: the same 1.5 KiB per request (3 KiB without the reuse). The vector cores then read their
    // 8 rows of C: 2 × 512 B.
    let per_block = 2 * (512 + 1024) + 2 * 512;
    for mode in [0, 13] {
        let (out, a, w, got) = run_kfc(mode, 2);
        assert!(
            out.failures.is_empty() && out.warnings.is_empty(),
            "mode {mode}: {:?} {:?}",
            out.failures,
            out.warnings
        );
        assert_twice_product(&a, &w, &got, 2);
        for c in &out.counters {
            assert_eq!(c.gm_to_ub_bytes, per_block as u64, "mode {mode}");
        }
    }
}

#[test]
fn partial_sums_stay_in_l0c_until_get_tensor_c() {
    checks_are_on();
    for blocks in [1u32, 2] {
        let (out, a, w, got) = run_kfc(8, blocks);
        assert!(
            out.failures.is_empty() && out.warnings.is_empty(),
            "{blocks} blocks: {:?} {:?}",
            out.failures,
            out.warnings
        );
        assert_twice_product(&a, &w, &got, blocks as usize);
        for c in &out.counters {
            assert_eq!(c.cube_macs, (MIX_N * MIX_N * MIX_N) as u64);
            // C (16 x 16 f32) left through FIX once, not once per k half; the vector cores'
            // copies out of the doubled rows are the other 16 x 16 x 4 bytes.
            assert_eq!(c.ub_to_gm_bytes, 2 * (MIX_N * MIX_N * 4) as u64);
        }
    }
    // Iterate(true) with no tile in L0C to add to.
    let (out, _, _, _) = run_kfc(9, 1);
    let m = out.only_failure();
    assert!(
        m.contains("Matmul::Iterate: enPartialSum without a tile in L0C"),
        "{m}"
    );
}

#[test]
fn a_cube_core_is_past_the_barrier_its_vector_cores_passed_before_their_request() {
    checks_are_on();
    // Mode 14: each block's cube core reads the NEXT block's copy of a, written before a SyncAll<true>
    // that only the vector cores call; their request after it orders the cube core's read after it too.
    let (out, a, w, got) = run_kfc(14, 3);
    assert!(
        out.failures.is_empty() && out.warnings.is_empty(),
        "{:?} {:?}",
        out.failures,
        out.warnings
    );
    assert_twice_product(&a, &w, &got, 3);
    // Mode 15, the same without the SyncAll: nothing orders that read after the other block's write (in
    // the workspace, the fourth of the kernel's five arguments).
    let (out, _, _, _) = run_kfc(15, 3);
    let m = out.only_failure();
    assert!(
        m.starts_with("race: GM bytes [")
            && m.contains("(argument 3 of 5, offset ")
            && m.contains("with no SyncAll between them (after 0 barriers)"),
        "{m}"
    );
}

#[test]
fn an_asynchronous_request_orders_nothing_until_it_is_waited_for() {
    checks_are_on();
    // Overwriting the operand of a request still in flight races with the cube core's load of it.
    let (out, _, _, _) = run_kfc(10, 1);
    let m = out.only_failure();
    assert!(m.starts_with("race: "), "{m}");
    assert!(
        m.contains("Matmul::IterateAll on MTE2 of AIC") && m.contains("DataCopyPad on MTE3 of AIV"),
        "{m}"
    );
    // Returning without waiting for it.
    let (out, _, _, _) = run_kfc(12, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with(
            "sync: AIV 0 returned with an asynchronous Matmul request it never waited for"
        ),
        "{m}"
    );
    // Waiting for it first: clean, and the product is of the operand as it was.
    let (out, a, w, got) = run_kfc(11, 2);
    assert!(
        out.failures.is_empty() && out.warnings.is_empty(),
        "{:?} {:?}",
        out.failures,
        out.warnings
    );
    assert_twice_product(&a, &w, &got, 2);
}

#[test]
fn an_operand_written_on_mte3_without_a_flag_races_with_the_cube() {
    checks_are_on();
    let (out, _, _, _) = run_kfc(1, 1);
    let m = out.only_failure();
    assert!(m.starts_with("race: "), "{m}");
    assert!(
        m.contains("Matmul::IterateAll on MTE2 of AIC reads")
            && m.contains("DataCopyPad on MTE3 of AIV"),
        "{m}"
    );
}

#[test]
fn a_flag_the_serving_cube_never_sets_is_a_sync_finding() {
    checks_are_on();
    let (out, _, _, _) = run_kfc(3, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with("sync: CrossCoreWaitFlag(0) can never be satisfied")
            && m.contains("AIC: serves Matmul requests"),
        "{m}"
    );
}

#[test]
fn sync_all_in_a_mix_launch_orders_every_vector_core() {
    checks_are_on();
    for blocks in [1u32, 2, 5] {
        let (out, _, _, got) = run_kfc(4, blocks);
        assert!(
            out.failures.is_empty() && out.warnings.is_empty(),
            "{blocks} blocks: {:?}",
            out.failures
        );
        let n = 2 * blocks as usize;
        let want: Vec<u32> = (0..n)
            .map(|v| v as u32 + 1)
            .chain((0..n).map(|v| ((v + 1) % n) as u32 + 1))
            .collect();
        assert_eq!(&got[..2 * n], &want[..], "{blocks} blocks");
    }
}

#[test]
fn atomic_adds_of_the_cores_of_a_block_need_no_flag_between_them() {
    checks_are_on();
    // Mode 16: both vector cores of every block add GetBlockIdx + 1 to out[0..8): the sum over the
    // 2 * blocks vector cores, with no finding (atomic adds commute, across cores and blocks).
    for blocks in [1u32, 3] {
        let (out, _, _, got) = run_kfc(16, blocks);
        assert!(
            out.failures.is_empty() && out.warnings.is_empty(),
            "{blocks} blocks: {:?} {:?}",
            out.failures,
            out.warnings
        );
        let n = 2 * blocks;
        let want = (n * (n + 1) / 2) as f32;
        let row: Vec<f32> = got[..8].iter().map(|&b| f32::from_bits(b)).collect();
        assert_eq!(row, vec![want; 8], "{blocks} blocks");
        assert!(got[8..].iter().all(|&b| b == 0), "{blocks} blocks");
    }
    // Mode 17: AIV 1 stores instead of adding, with no flag from AIV 0's add: a race.
    let (out, _, _, _) = run_kfc(17, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with("race: DataCopy on MTE3 of AIV 1 writes GM bytes")
            && m.contains(
                "the earlier DataCopy on MTE3 of AIV 0 wrote them, with no cross-core flag"
            ),
        "{m}"
    );
}

#[test]
fn sync_all_some_cores_skip_is_a_sync_finding() {
    checks_are_on();
    let (out, _, _, _) = run_kfc(5, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with("sync: SyncAll on AIV 0 is reached by some cores of its AI Core only"),
        "{m}"
    );
    // SyncAll<false> while the cube core serves Matmul requests: it never arrives.
    let (out, _, _, _) = run_kfc(7, 1);
    let m = out.only_failure();
    assert!(
        m.starts_with("sync: SyncAll on AIV") && m.contains("AIC: serves Matmul requests"),
        "{m}"
    );
}

#[test]
fn a_vector_core_matmul_needs_regist_matmul_obj() {
    let (out, _, _, _) = run_kfc(6, 1);
    let m = out.only_failure();
    assert!(m.contains("register it with REGIST_MATMUL_OBJ"), "{m}");
}
