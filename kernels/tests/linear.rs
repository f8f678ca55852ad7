//! linear_<t> (Matmul API) against a straightforward f64 product, with and without bias, on a grid of
//! blocks, and with base tiles smaller than a block's share (several cube steps per block).
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, Kernel, LinearTiling, Tiling};
use half::{bf16, f16};

fn run<T: Elem>(m: usize, n: usize, k: usize, bias: bool, t: &LinearTiling) {
    let x: Vec<T> = random(m * k, 31, 2.0);
    let w: Vec<T> = random(n * k, 32, 2.0);
    let b: Vec<f32> = random(n, 33, 4.0);
    let mut dev = Device::new();
    let (gx, gw) = (dev.upload(&x), dev.upload(&w));
    let gb = bias.then(|| dev.upload(&b));
    let gy = dev.alloc(m * n * std::mem::size_of::<T>());
    let gt = dev.upload_tiling(t);
    let out = dev.launch(
        Kernel::Linear.symbol(T::DT),
        t.block_dim(),
        &args(&dev, &[Some(gx), Some(gw), gb, Some(gy)], gt),
    );
    out.assert_ok();
    assert_eq!(out.total().cube_macs, (m * n * k) as u64);
    let mut want = vec![0.0f64; m * n];
    let mut scale = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = f64::from(x[i * k + kk].to_f32()) * f64::from(w[j * k + kk].to_f32());
                s += p;
                a += p.abs();
            }
            if bias {
                s += f64::from(b[j]);
                a += f64::from(b[j]).abs();
            }
            want[i * n + j] = s;
            scale[i * n + j] = a;
        }
    }
    let got: Vec<T> = dev.download(gy);
    // f32 accumulation over k terms: at most ~k ulps of f32 relative to the sum of |terms|.
    assert_close(
        Kernel::Linear.symbol(T::DT),
        &got,
        &want,
        &scale,
        1.0,
        k as f64 * 6e-8,
    );
}

fn all_cases<T: Elem>() {
    let budget = CoreBudget {
        cores: 4,
        ub_bytes: UB_910B,
    };
    for bias in [false, true] {
        let t = LinearTiling::new(37, 45, 70, bias, T::DT, budget).unwrap();
        run::<T>(37, 45, 70, bias, &t);
    }
    // 16x16x16 base tiles: several m/n tiles and k steps per block, ragged at every edge.
    let mut t = LinearTiling::new(
        37,
        45,
        70,
        true,
        T::DT,
        CoreBudget {
            cores: 2,
            ub_bytes: UB_910B,
        },
    )
    .unwrap();
    t.base_m = 16;
    t.base_n = 16;
    t.base_k = 16;
    run::<T>(37, 45, 70, true, &t);
}

#[test]
fn linear_f32() {
    all_cases::<f32>();
}

#[test]
fn linear_f16() {
    all_cases::<f16>();
}

#[test]
fn linear_bf16() {
    all_cases::<bf16>();
}

#[test]
fn oversized_base_tile_faults() {
    // 256 x 256 f32 needs 256 KiB of L0C.
    let mut t = LinearTiling::new(
        4,
        4,
        4,
        false,
        dsnpu_kernels::KernelDtype::F32,
        CoreBudget {
            cores: 1,
            ub_bytes: UB_910B,
        },
    )
    .unwrap();
    t.base_m = 256;
    t.base_n = 256;
    let mut dev = Device::new();
    let (gx, gw, gy) = (
        dev.upload(&[1f32; 16]),
        dev.upload(&[1f32; 16]),
        dev.alloc(64),
    );
    let gt = dev.upload_tiling(&t);
    assert_eq!(t.as_bytes().len(), 48);
    let out = dev.launch(
        "linear_f32",
        1,
        &args(&dev, &[Some(gx), Some(gw), None, Some(gy)], gt),
    );
    assert!(
        out.only_failure()
            .starts_with("Matmul::Init: base tile 256x256"),
        "{:?}",
        out.failures
    );
}
