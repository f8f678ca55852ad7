//! silu_mul_<t> against a straightforward f64 computation, with and without column chunking.
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, Kernel, SiluMulTiling};
use half::{bf16, f16};

fn check<T: Elem>(rows: usize, inter: usize, budget: CoreBudget, expect_chunks: bool) {
    let gu: Vec<T> = random(rows * 2 * inter, 21, 6.0);
    let t = SiluMulTiling::new(rows as u64, inter as u64, T::DT, budget).unwrap();
    assert_eq!(t.cols_per_tile < t.inter, expect_chunks, "{t:?}");
    let mut dev = Device::new();
    let gg = dev.upload(&gu);
    let go = dev.alloc(rows * inter * std::mem::size_of::<T>());
    let gt = dev.upload_tiling(&t);
    let out = dev.launch_with(
        Kernel::SiluMul.symbol(T::DT),
        t.block_dim(),
        &args(&dev, &[Some(gg), Some(go)], gt),
        budget.ub_bytes,
        dsnpu_kernels::HOST_KERNEL_ABI,
    );
    out.assert_ok();
    let mut want = vec![0.0f64; rows * inter];
    let mut scale = vec![0.0f64; rows * inter];
    for r in 0..rows {
        for j in 0..inter {
            let g = f64::from(gu[r * 2 * inter + j].to_f32());
            let u = f64::from(gu[r * 2 * inter + inter + j].to_f32());
            want[r * inter + j] = g / (1.0 + (-g).exp()) * u;
            scale[r * inter + j] = (g * u).abs().max(1e-3);
        }
    }
    let got: Vec<T> = dev.download(go);
    assert_close(
        Kernel::SiluMul.symbol(T::DT),
        &got,
        &want,
        &scale,
        1.0,
        1e-5,
    );
}

fn all_cases<T: Elem>() {
    check::<T>(
        7,
        45,
        CoreBudget {
            cores: 3,
            ub_bytes: UB_910B,
        },
        false,
    );
    // One row of 150 columns does not fit: f32 in chunks of 128 + 22 columns (2600 bytes), 16-bit types
    // in chunks of 64 + 64 + 22 (2000 bytes).
    let ub = if T::DT.size() == 4 { 2600 } else { 2000 };
    check::<T>(
        5,
        150,
        CoreBudget {
            cores: 2,
            ub_bytes: ub,
        },
        true,
    );
}

#[test]
fn silu_mul_f32() {
    all_cases::<f32>();
}

#[test]
fn silu_mul_f16() {
    all_cases::<f16>();
}

#[test]
fn silu_mul_bf16() {
    all_cases::<bf16>();
}
