//! Counters on cases small enough to work out by hand.
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, KernelDtype, LinearTiling, RmsNormTiling, SiluMulTiling};

const ONE: CoreBudget = CoreBudget {
    cores: 1,
    ub_bytes: UB_910B,
};

#[test]
fn rms_norm_2x16_f32() {
    let t = RmsNormTiling::new(2, 16, 1e-6, KernelDtype::F32, false, ONE).unwrap();
    assert_eq!((t.block_dim(), t.rows_per_tile), (1, 2));
    let mut dev = Device::new();
    let (x, w, y) = (
        dev.upload(&[1.0f32; 32]),
        dev.upload(&[1.0f32; 16]),
        dev.alloc(128),
    );
    let gt = dev.upload_tiling(&t);
    let out = dev.launch(
        "rms_norm_f32",
        1,
        &args(&dev, &[Some(x), Some(w), Some(y)], gt),
    );
    out.assert_ok();
    let c = out.counters[0];
    // GM -> UB: x 2 x 16 x 4 = 128 bytes + weight 64. UB -> GM: y 128.
    assert_eq!((c.gm_to_ub_bytes, c.ub_to_gm_bytes), (192, 128));
    // Per row Mul (squares), ReduceSum, Muls, Mul: 4 x 16 (f32 is normalised in place, no widening).
    assert_eq!(c.vector_elem_ops, 2 * 4 * 16);
    // UB: the x queue 2 x (2 rows x 64 B) = 256, weight 64, scratch row 64, ReduceSum result 32 + work 32.
    assert_eq!(c.ub_high_water, 256 + 64 + 64 + 32 + 32);
    assert_eq!(c.cube_macs, 0);
    // All ones: mean square 1, so y = 1 / sqrt(1 + 1e-6).
    let want = 1.0f32 / (1.0f32 + 1e-6).sqrt();
    assert!(dev
        .download::<f32>(y)
        .iter()
        .all(|&v| (v - want).abs() < 1e-6));
}

#[test]
fn silu_mul_1x8_f32() {
    let t = SiluMulTiling::new(1, 8, KernelDtype::F32, ONE).unwrap();
    let mut dev = Device::new();
    let (gu, o) = (dev.upload(&[0.0f32; 16]), dev.alloc(32));
    let gt = dev.upload_tiling(&t);
    let out = dev.launch("silu_mul_f32", 1, &args(&dev, &[Some(gu), Some(o)], gt));
    out.assert_ok();
    let c = out.counters[0];
    assert_eq!((c.gm_to_ub_bytes, c.ub_to_gm_bytes), (64, 32));
    // Muls, Exp, Adds, Div, Mul over one 8-element row.
    assert_eq!(c.vector_elem_ops, 5 * 8);
    // Gate and up queues of 2 x 32 bytes and one f32 scratch row of 32 bytes.
    assert_eq!(c.ub_high_water, 4 * 32 + 32);
}

#[test]
fn linear_2x3x4_f32_with_bias() {
    let t = LinearTiling::new(2, 3, 4, true, KernelDtype::F32, ONE).unwrap();
    assert_eq!(t.block_dim(), 1);
    let mut dev = Device::new();
    let x = dev.upload(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let w = dev.upload(&[
        1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0,
    ]);
    let b = dev.upload(&[0.5f32, 0.0, -1.0]);
    let y = dev.alloc(24);
    let ws = dev.alloc(t.workspace_bytes() as usize);
    let gt = dev.upload_tiling(&t);
    let out = dev.launch(
        "linear_f32",
        1,
        &[
            dev.addr(x),
            dev.addr(w),
            dev.addr(b),
            dev.addr(y),
            dev.addr(ws),
            dev.addr(gt),
        ],
    );
    out.assert_ok();
    let c = out.counters[0];
    // A 1:2 mix block. The cube: one 2x3x4 step, 24 multiply-adds, reading x 32 B + w 48 B and writing
    // the f32 tile (24 B) to the workspace. Vector core 0 (rows 0..2 of the 16-row base tile; core 1's
    // half is empty): the tile 24 B and bias 12 B in, y 24 B out.
    assert_eq!(c.cube_macs, 24);
    assert_eq!(
        (c.gm_to_ub_bytes, c.ub_to_gm_bytes),
        (32 + 48 + 24 + 12, 24 + 24)
    );
    // Vector core 0's UB: 8 rows x 16 f32 in, the same out, one 16-f32 bias row.
    assert_eq!(c.ub_high_water, 512 + 512 + 64);
    assert_eq!(dev.download::<f32>(y), vec![1.5, 2.0, 9.0, 5.5, 6.0, 25.0]);
}
