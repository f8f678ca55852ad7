//! rope_<t> against a straightforward f64 rotation, both layouts, odd sizes, a strided (sliced) layout,
//! multi-block and multi-tile.
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, Kernel, RopeLayout, RopeTiling};
use half::{bf16, f16};

struct Case {
    tokens: usize,
    heads: usize,
    dim: usize,
    stride: usize,
    table_rows: usize,
}

/// Rotate every (token, head) row of x (row_stride apart) into a copy; elements past `dim` in a row are
/// left alone.
fn reference(
    c: &Case,
    x: &[f64],
    pos: &[i32],
    cos: &[f32],
    sin: &[f32],
    layout: RopeLayout,
) -> Vec<f64> {
    let half = c.dim / 2;
    let mut y = x.to_vec();
    for (t, &p) in pos.iter().enumerate().take(c.tokens) {
        let p = p as usize;
        for h in 0..c.heads {
            let base = (t * c.heads + h) * c.stride;
            for i in 0..half {
                let (ia, ib) = match layout {
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                    RopeLayout::HalfSplit => (i, i + half),
                };
                let (a, b) = (x[base + ia], x[base + ib]);
                let (cs, sn) = (f64::from(cos[p * half + i]), f64::from(sin[p * half + i]));
                y[base + ia] = a * cs - b * sn;
                y[base + ib] = b * cs + a * sn;
            }
        }
    }
    y
}

fn check<T: Elem>(c: &Case, layout: RopeLayout, budget: CoreBudget, in_place: bool) {
    let half = c.dim / 2;
    let len = (c.tokens * c.heads - 1) * c.stride + c.dim;
    let x: Vec<T> = random(len, 11, 2.0);
    let pos: Vec<i32> = (0..c.tokens)
        .map(|t| ((t * 7 + 3) % c.table_rows) as i32)
        .collect();
    // A real table: angle p * theta^(-2i/dim), scaled by an attention factor as YaRN would.
    let mut cos = vec![0f32; c.table_rows * half];
    let mut sin = vec![0f32; c.table_rows * half];
    for p in 0..c.table_rows {
        for i in 0..half {
            let a = p as f64 * 10000f64.powf(-2.0 * i as f64 / c.dim as f64);
            cos[p * half + i] = (a.cos() * 1.1) as f32;
            sin[p * half + i] = (a.sin() * 1.1) as f32;
        }
    }
    let t = RopeTiling::new(
        c.tokens as u64,
        c.heads as u64,
        c.dim as u64,
        c.stride as u64,
        c.table_rows as u64,
        layout,
        T::DT,
        budget,
    )
    .unwrap();
    if budget.ub_bytes < UB_910B {
        assert_eq!(t.tokens_per_tile, 2, "{t:?}");
    }
    let mut dev = Device::new();
    let gx = dev.upload(&x);
    let gp = dev.upload(&pos);
    let (gc, gs) = (dev.upload(&cos), dev.upload(&sin));
    // Out of place, y starts as a copy of x so the gaps between strided rows can be compared too.
    let gy = if in_place { gx } else { dev.upload(&x) };
    let gt = dev.upload_tiling(&t);
    let a = args(
        &dev,
        &[Some(gx), Some(gp), Some(gc), Some(gs), Some(gy)],
        gt,
    );
    let out = dev.launch_with(
        Kernel::Rope.symbol(T::DT),
        t.block_dim(),
        &a,
        budget.ub_bytes,
        dsnpu_kernels::HOST_KERNEL_ABI,
    );
    out.assert_ok();
    let xw: Vec<f64> = x.iter().map(|v| f64::from(v.to_f32())).collect();
    let want = reference(c, &xw, &pos, &cos, &sin, layout);
    // |a c| + |b s| bounds the f32 rounding of the intermediate products and sum.
    let scale: Vec<f64> = xw.iter().map(|v| v.abs().max(1.0) * 2.5).collect();
    let got: Vec<T> = dev.download(gy);
    assert_close(Kernel::Rope.symbol(T::DT), &got, &want, &scale, 1.0, 1e-6);
}

/// A budget that leaves room for exactly two tokens per tile, so blocks walk several tiles.
fn two_token_budget<T: Elem>(c: &Case, layout: RopeLayout) -> CoreBudget {
    let roomy = CoreBudget {
        cores: 2,
        ub_bytes: UB_910B,
    };
    let mut t = RopeTiling::new(
        c.tokens as u64,
        c.heads as u64,
        c.dim as u64,
        c.stride as u64,
        c.table_rows as u64,
        layout,
        T::DT,
        roomy,
    )
    .unwrap();
    assert!(t.tokens_per_block > 2);
    t.tokens_per_tile = 2;
    CoreBudget {
        cores: 2,
        ub_bytes: t.ub_bytes(T::DT) as u32,
    }
}

fn all_cases<T: Elem>() {
    let roomy = CoreBudget {
        cores: 3,
        ub_bytes: UB_910B,
    };
    let plain = Case {
        tokens: 5,
        heads: 3,
        dim: 10,
        stride: 10,
        table_rows: 9,
    };
    // A 6-wide rope slice at the start of 14-wide heads, as MLA's q_pe within q.
    let sliced = Case {
        tokens: 7,
        heads: 2,
        dim: 6,
        stride: 14,
        table_rows: 11,
    };
    // Wider than one 64-lane repeat: rotated row by row.
    let wide = Case {
        tokens: 6,
        heads: 2,
        dim: 72,
        stride: 76,
        table_rows: 5,
    };
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        for case in [&plain, &sliced, &wide] {
            check::<T>(case, layout, roomy, false);
            check::<T>(case, layout, two_token_budget::<T>(case, layout), true);
        }
    }
}

#[test]
fn rope_f32() {
    all_cases::<f32>();
}

#[test]
fn rope_f16() {
    all_cases::<f16>();
}

#[test]
fn rope_bf16() {
    all_cases::<bf16>();
}

#[test]
fn interleaved_by_hand() {
    // One token, one head, dim 4 at position 1 with cos = [0, 1], sin = [1, 0] (90 degrees, then 0):
    // pair (1, 2) -> (1*0 - 2*1, 2*0 + 1*1) = (-2, 1); pair (3, 4) unchanged.
    let mut dev = Device::new();
    let gx = dev.upload(&[1.0f32, 2.0, 3.0, 4.0]);
    let gp = dev.upload(&[1i32]);
    let gc = dev.upload(&[9.0f32, 9.0, 0.0, 1.0]);
    let gs = dev.upload(&[9.0f32, 9.0, 1.0, 0.0]);
    let gy = dev.alloc(16);
    let t = RopeTiling::new(
        1,
        1,
        4,
        4,
        2,
        RopeLayout::Interleaved,
        dsnpu_kernels::KernelDtype::F32,
        CoreBudget {
            cores: 1,
            ub_bytes: UB_910B,
        },
    )
    .unwrap();
    let gt = dev.upload_tiling(&t);
    dev.launch(
        "rope_f32",
        1,
        &args(
            &dev,
            &[Some(gx), Some(gp), Some(gc), Some(gs), Some(gy)],
            gt,
        ),
    )
    .assert_ok();
    assert_eq!(dev.download::<f32>(gy), vec![-2.0, 1.0, 3.0, 4.0]);
}
