//! rms_norm_<t> and add_rms_norm_<t> against a straightforward f64 computation, on shapes that divide
//! neither the 32-byte block nor the tile, multi-block, with roomy and tight UB budgets.
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, Kernel, RmsNormTiling};
use half::{bf16, f16};

fn reference(x: &[f64], w: &[f64], rows: usize, cols: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for c in 0..cols {
            y[r * cols + c] = row[c] * inv * w[c];
        }
    }
    y
}

fn widen<T: Elem>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&e| f64::from(e.to_f32())).collect()
}

fn check<T: Elem>(rows: usize, cols: usize, budget: CoreBudget, residual: bool) {
    let eps = 1e-6f32;
    let x: Vec<T> = random(rows * cols, 1, 3.0);
    let res: Vec<T> = random(rows * cols, 2, 3.0);
    let w: Vec<T> = random(cols, 3, 1.5);
    let t = RmsNormTiling::new(rows as u64, cols as u64, eps, T::DT, residual, budget).unwrap();
    let mut dev = Device::new();
    let (gx, gr, gw) = (dev.upload(&x), dev.upload(&res), dev.upload(&w));
    let gy = dev.alloc(rows * cols * std::mem::size_of::<T>());
    let gs = dev.alloc(rows * cols * std::mem::size_of::<T>());
    let gt = dev.upload_tiling(&t);
    let (kernel, a) = if residual {
        (
            Kernel::AddRmsNorm,
            args(
                &dev,
                &[Some(gx), Some(gr), Some(gw), Some(gy), Some(gs)],
                gt,
            ),
        )
    } else {
        (
            Kernel::RmsNorm,
            args(&dev, &[Some(gx), Some(gw), Some(gy)], gt),
        )
    };
    let out = dev.launch_with(
        kernel.symbol(T::DT),
        t.block_dim(),
        &a,
        budget.ub_bytes,
        dsnpu_kernels::HOST_KERNEL_ABI,
    );
    out.assert_ok();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert!(out.total().ub_high_water <= u64::from(budget.ub_bytes));

    let normed_input = if residual {
        // The sum is rounded to T once, exactly as T::from_f32(x + r).
        let want: Vec<T> = x
            .iter()
            .zip(&res)
            .map(|(&a, &b)| T::from_f32(a.to_f32() + b.to_f32()))
            .collect();
        let got: Vec<T> = dev.download(gs);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_f32().to_bits(), w.to_f32().to_bits(), "sum[{i}]");
        }
        widen(&want)
    } else {
        widen(&x)
    };
    let want = reference(&normed_input, &widen(&w), rows, cols, f64::from(eps));
    let scale: Vec<f64> = want.iter().map(|v| v.abs().max(1e-3)).collect();
    let got: Vec<T> = dev.download(gy);
    assert_close(kernel.symbol(T::DT), &got, &want, &scale, 1.0, 1e-5);
}

fn all_cases<T: Elem>() {
    let roomy = CoreBudget {
        cores: 3,
        ub_bytes: UB_910B,
    };
    // 7 rows over 3 blocks (3 + 3 + 1); 37 columns fill no 32-byte block exactly.
    check::<T>(7, 37, roomy, false);
    check::<T>(7, 37, roomy, true);
    // A budget so tight that each block walks several tiles through the double-buffered queues.
    let tight = CoreBudget {
        cores: 2,
        ub_bytes: 1024,
    };
    check::<T>(9, 21, tight, false);
    check::<T>(9, 21, tight, true);
}

#[test]
fn rms_norm_f32() {
    all_cases::<f32>();
}

#[test]
fn rms_norm_f16() {
    all_cases::<f16>();
}

#[test]
fn rms_norm_bf16() {
    all_cases::<bf16>();
}

#[test]
fn tight_budget_really_tiles() {
    for dt in dsnpu_kernels::KernelDtype::ALL {
        for residual in [false, true] {
            let t = RmsNormTiling::new(
                9,
                21,
                1e-6,
                dt,
                residual,
                CoreBudget {
                    cores: 2,
                    ub_bytes: 1024,
                },
            )
            .unwrap();
            assert!(t.rows_per_tile < t.rows_per_block, "{t:?}");
        }
    }
}
