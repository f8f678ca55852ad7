//! The simulator's per-launch counters, read through the runtime after typed launches, on cases small
//! enough to work out by hand. Every expected value below is derived in the comments from the kernel
//! sources (`kernels/src/ascendc/*.cpp`) and the host layer's counting rules: `DataCopy`/`DataCopyPad`
//! count the bytes they move between GM and UB (scalar `GetValue` reads and the tiling read do not
//! count), each vector instruction counts its element count, the cube counts multiply-adds and the bytes
//! of the panels it streams, and a block's UB high-water mark is the sum of its `InitBuffer`s (each
//! rounded up to 32 bytes; a queue of depth 2 takes twice its length). Totals are summed over blocks,
//! except the high-water mark, which is the largest block's, and the HBM bytes, which are the launch's
//! GM accesses replayed through the die's one L2 model (32-byte sectors: a read miss fetches the whole
//! sector, a write dirties it and is written back once).
//!
//! The library tiles for a 910B2 (48 vector, 24 cube cores) whatever the simulator's configuration, so
//! the block counts are fixed too.

use std::sync::Arc;

use dsnpu_kernels::launch::{self, Hardware, KernelLibrary, RopeShape};
use dsnpu_kernels::RopeLayout;
use dsnpu_runtime::sim_counters::{self, KernelCounters, LaunchCounters};
use dsnpu_runtime::{Device, Stream};

fn setup() -> (Arc<KernelLibrary>, Stream) {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::load_with(&dev, Hardware::ASCEND_910B2).unwrap();
    let stream = dev.new_stream().unwrap();
    (lib, stream)
}

/// Waits for the stream and reads its last launch, which must have succeeded.
fn counters(s: &Stream, kernel: &str, blocks: u32) -> LaunchCounters {
    s.synchronize().unwrap();
    let c = sim_counters::last_launch_counters(s)
        .unwrap()
        .expect("a launch completed");
    assert_eq!(c.kernel, kernel);
    assert_eq!((c.num_blocks, c.status, c.warnings), (blocks, 0, 0));
    c
}

#[test]
fn the_simulator_is_detected_and_a_fresh_stream_has_no_launch() {
    assert!(sim_counters::is_simulator().unwrap());
    let dev = Device::new(0).unwrap();
    let cores = dev.core_counts().unwrap();
    if std::env::var_os("DSNPU_SIM_AICORE_NUM").is_none() {
        assert_eq!((cores.cube, cores.vector), (24, 48));
        assert_eq!(Hardware::detect(&dev).unwrap(), Hardware::ASCEND_910B2);
    }
    let s = dev.new_stream().unwrap();
    assert_eq!(sim_counters::last_launch_counters(&s).unwrap(), None);
    // An extension the library does not export is `Unsupported`, naming the symbol (what a CANN
    // install answers for every simulator extension).
    let api = dsnpu_ffi::loader::api().unwrap();
    // SAFETY: the symbol does not exist, so nothing is called; the type is a plain C function.
    let missing = unsafe { api.extension::<unsafe extern "C" fn()>("dsnpu_sim_no_such_symbol") };
    assert!(matches!(
        missing,
        Err(dsnpu_ffi::FfiError::Unsupported {
            symbol: "dsnpu_sim_no_such_symbol",
            ..
        })
    ));
}

#[test]
fn rms_norm_2x16_f32_on_two_blocks() {
    let (lib, s) = setup();
    // x = [[1..=16], [1..=16]], weight all ones.
    let row: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    let x = s.upload(&[row.clone(), row].concat()).unwrap();
    let w = s.upload(&[1.0f32; 16]).unwrap();
    let mut y = s.alloc::<f32>(32).unwrap();
    let l = launch::rms_norm(&lib, &s, &x, &w, &mut y, 2, 0.0).unwrap();
    // 2 rows over 48 cores: ceil(2 / 48) = 1 row per block, so 2 blocks of one one-row tile each.
    assert_eq!(
        (l.blocks, l.tiling.rows_per_block, l.tiling.rows_per_tile),
        (2, 1, 1)
    );
    let c = counters(&s, "rms_norm_f32", 2);
    assert_eq!(
        c.totals,
        KernelCounters {
            // Per block: its x row (16 x 4 = 64 B) and the weight (64 B) in, its y row (64 B) out.
            gm_to_ub_bytes: 2 * (64 + 64),
            ub_to_gm_bytes: 2 * 64,
            // Per row: Mul (squares), ReduceSum, Muls (by 1/rms), Mul (weight), 16 elements each.
            vector_elem_ops: 2 * 4 * 16,
            cube_macs: 0,
            // Per block: x queue 2 x 64 (depth 2 of one 64-byte row) + weight 64 + scratch row 64
            // + ReduceSum result 32 + work round_up(ceil(16 / 64) x 4, 32) = 32.
            ub_high_water: 2 * 64 + 64 + 64 + 32 + 32,
            // The L2 model, replayed for the die (one L2 for every block): each x row and the
            // weight miss once (the second block's weight read hits), each y row is written back.
            hbm_read_bytes: 2 * 64 + 64,
            hbm_write_bytes: 2 * 64,
        }
    );
    assert_eq!(
        c.totals.ub_high_water,
        l.tiling.ub_bytes(dsnpu_kernels::KernelDtype::F32, false)
    );
    // Sum of squares 1 + 4 + ... + 256 = 16 x 17 x 33 / 6 = 1496: y = x / sqrt(1496 / 16) = x / sqrt(93.5).
    let r = 93.5f32.sqrt();
    for (i, v) in y.to_vec().unwrap().iter().enumerate() {
        let want = (i % 16 + 1) as f32 / r;
        assert!(
            (v - want).abs() <= 2e-7 * want.abs().max(1.0),
            "y[{i}] = {v}, want {want}"
        );
    }
}

#[test]
fn silu_mul_1x8_f32() {
    let (lib, s) = setup();
    // gate 0 everywhere: silu(0) = 0, so out = 0 whatever up is.
    let gu: Vec<f32> = (0..16)
        .map(|i| if i < 8 { 0.0 } else { i as f32 })
        .collect();
    let gu = s.upload(&gu).unwrap();
    let mut out = s.alloc::<f32>(8).unwrap();
    let l = launch::silu_mul(&lib, &s, &gu, &mut out, 1, 8).unwrap();
    assert_eq!(l.blocks, 1);
    let c = counters(&s, "silu_mul_f32", 1);
    assert_eq!(
        c.totals,
        KernelCounters {
            // Gate 8 x 4 = 32 B and up 32 B in; out 32 B.
            gm_to_ub_bytes: 64,
            ub_to_gm_bytes: 32,
            // Muls (-g), Exp, Adds (1 +), Div, Mul (up) over the 8-element row.
            vector_elem_ops: 5 * 8,
            cube_macs: 0,
            // Gate and up queues of depth 2 x one 32-byte row, and one 32-byte f32 scratch row.
            ub_high_water: 2 * 32 + 2 * 32 + 32,
            // Gate and up are one 32-byte sector each: both miss.
            hbm_read_bytes: 64,
            hbm_write_bytes: 32,
        }
    );
    assert_eq!(out.to_vec().unwrap(), vec![0.0; 8]);
}

#[test]
fn rope_2_tokens_half_split_f32_on_two_blocks() {
    let (lib, s) = setup();
    // Table of 3 positions, dim 4 (2 pairs): position 0 is the identity, position 2 rotates pair 0 by
    // 90 degrees (cos 0, sin 1) and scales pair 1 by cos = sin = 0.5.
    let cos = [1.0f32, 1.0, 0.3, 0.3, 0.0, 0.5];
    let sin = [0.0f32, 0.0, 0.7, 0.7, 1.0, 0.5];
    let x = s
        .upload(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        .unwrap();
    let pos = s.upload(&[0i32, 2]).unwrap();
    let (cd, sd) = (s.upload(&cos).unwrap(), s.upload(&sin).unwrap());
    let mut y = s.alloc::<f32>(8).unwrap();
    let shape = RopeShape::dense(2, 1, 4, 3, RopeLayout::HalfSplit);
    let l = launch::rope(&lib, &s, &x, &pos, &cd, &sd, &mut y, shape).unwrap();
    assert_eq!((l.blocks, l.tiling.tokens_per_tile), (2, 1));
    let c = counters(&s, "rope_f32", 2);
    assert_eq!(
        c.totals,
        KernelCounters {
            // Per block (one token): its row 4 x 4 = 16 B, its cos and sin rows 2 x 4 = 8 B each in
            // (the position is a scalar read, not counted); the rotated row 16 B out.
            gm_to_ub_bytes: 2 * (16 + 8 + 8),
            ub_to_gm_bytes: 2 * 16,
            // Per token: Gather cos2, Gather sin2, Mul (signs) = 3 x 4; per row: Gather (swap),
            // Mul (x cos2), Mul (swapped x sin2), Add = 4 x 4.
            vector_elem_ops: 2 * (3 * 4 + 4 * 4),
            cube_macs: 0,
            // Per block: x queue 2 x 32 (a 16-byte row padded to 32), cos and sin rows 2 x 32, and
            // seven 32-byte f32 rows (cos2, sin2, two temporaries, swap and table offsets, signs).
            ub_high_water: 2 * 32 + 2 * 32 + 7 * 32,
            // The die's L2 fetches whole 32-byte sectors: both tokens' x rows (bytes 0..16 and
            // 16..32) are one sector, so are cos rows 0 and 2 (bytes 0..8 and 16..24) and the sin
            // rows: three sectors from HBM for both blocks. Both 16-byte output rows dirty one sector.
            hbm_read_bytes: 3 * 32,
            hbm_write_bytes: 32,
        }
    );
    // Half-split pairs (x0, x2), (x1, x3): a' = a cos - b sin, b' = b cos + a sin.
    // Token 0 at position 0: unchanged. Token 1 at position 2: pair (5, 7) -> (5·0 - 7·1, 7·0 + 5·1)
    // = (-7, 5); pair (6, 8) -> (6·0.5 - 8·0.5, 8·0.5 + 6·0.5) = (-1, 7).
    assert_eq!(
        y.to_vec().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, -7.0, -1.0, 5.0, 7.0]
    );
}

#[test]
fn linear_2x3x4_f32_with_bias_on_one_cube_block() {
    let (lib, s) = setup();
    let x = s
        .upload(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        .unwrap();
    // w rows: e0, e1, all ones.
    let w = s
        .upload(&[
            1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0,
        ])
        .unwrap();
    let b = s.upload(&[0.5f32, 0.0, -1.0]).unwrap();
    let mut y = s.alloc::<f32>(6).unwrap();
    let l = launch::linear(&lib, &s, &x, &w, Some(&b), &mut y, 2, 3, 4).unwrap();
    // A 2 x 3 output is one block of the grid whatever the core count (blocks cover 16 x 16 at least).
    assert_eq!(l.blocks, 1);
    let c = counters(&s, "linear_f32", 1);
    assert_eq!(
        c.totals,
        KernelCounters {
            // A 1:2 mix block. The cube: one 2 x 3 x 4 step reading x 2 x 4 x 4 = 32 B and w
            // 3 x 4 x 4 = 48 B, writing the f32 tile (24 B) to the workspace. Vector core 0 (both rows;
            // core 1's half of the 16-row base tile is empty): the tile 24 B and bias 3 x 4 = 12 B in,
            // y 2 x 3 x 4 = 24 B out, with one Add of the 3 bias elements per row (the f32 "rounding"
            // is a UB copy, not counted as vector element operations).
            gm_to_ub_bytes: 32 + 48 + 24 + 12,
            ub_to_gm_bytes: 24 + 24,
            vector_elem_ops: 2 * 3,
            cube_macs: 2 * 3 * 4,
            // Vector core 0: 8 rows x 16 f32 in, the same out, one 16-f32 bias row.
            ub_high_water: 512 + 512 + 64,
            // The vector core's read of the tile the cube wrote hits in the L2. In 32-byte sectors: x 1, w (48 B) 2 and bias 1 read from HBM; the tile and y
            // (24 B each) dirty one sector each.
            hbm_read_bytes: (1 + 2 + 1) * 32,
            hbm_write_bytes: 2 * 32,
        }
    );
    // Row 0 = [1, 2, 3, 4]: [1 + 0.5, 2, 10 - 1]; row 1 = [5, 6, 7, 8]: [5.5, 6, 25].
    assert_eq!(y.to_vec().unwrap(), vec![1.5, 2.0, 9.0, 5.5, 6.0, 25.0]);
}

#[test]
fn launch_seq_counts_the_launches_of_the_stream() {
    let (lib, s) = setup();
    let gu = s.upload(&[0.0f32; 16]).unwrap();
    let mut out = s.alloc::<f32>(8).unwrap();
    for _ in 0..3 {
        launch::silu_mul(&lib, &s, &gu, &mut out, 1, 8).unwrap();
    }
    let c = counters(&s, "silu_mul_f32", 1);
    assert_eq!(c.launch_seq, 3);
}
