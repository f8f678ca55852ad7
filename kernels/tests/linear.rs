//! linear_<t> (a 1:2 mix kernel: Matmul on the cube cores, bias and rounding on the vector cores) against
//! a straightforward f64 product, with and without bias, on a grid of blocks, and with base tiles smaller
//! than a block's share (several cube tiles through the double-buffered workspace per block); tilings the
//! cube's buffers cannot hold fault the launch.
mod common;

use common::*;
use dsnpu_kernels::{CoreBudget, Kernel, LinearTiling, Tiling};
use half::{bf16, f16};

/// Launch `kernel` with x, w, bias, y, a workspace of `t.workspace_bytes()` and the tiling.
fn launch(
    dev: &mut Device,
    kernel: &str,
    t: &LinearTiling,
    xw: [Gm; 2],
    bias: Option<Gm>,
    y: Gm,
) -> Outcome {
    let ws = dev.alloc(t.workspace_bytes() as usize);
    let gt = dev.upload_tiling(t);
    let a = [
        dev.addr(xw[0]),
        dev.addr(xw[1]),
        bias.map_or(0, |b| dev.addr(b)),
        dev.addr(y),
        dev.addr(ws),
        dev.addr(gt),
    ];
    dev.launch(kernel, t.block_dim(), &a)
}

fn run<T: Elem>(m: usize, n: usize, k: usize, bias: bool, t: &LinearTiling) {
    let x: Vec<T> = random(m * k, 31, 2.0);
    let w: Vec<T> = random(n * k, 32, 2.0);
    let b: Vec<f32> = random(n, 33, 4.0);
    let mut dev = Device::new();
    let (gx, gw) = (dev.upload(&x), dev.upload(&w));
    let gb = bias.then(|| dev.upload(&b));
    let gy = dev.alloc(m * n * std::mem::size_of::<T>());
    let kernel = if t.k_blocks > 1 {
        Kernel::LinearSplitK
    } else {
        Kernel::Linear
    };
    let out = launch(&mut dev, kernel.symbol(T::DT), t, [gx, gw], gb, gy);
    out.assert_ok();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
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
    t.cube.baseM = 16;
    t.cube.baseN = 16;
    t.cube.baseK = 16;
    run::<T>(37, 45, 70, true, &t);
}

/// Few rows over a long k: the tiling splits k (each block a slice's partial product, summed after a
/// SyncAll by every vector core): one column of blocks and a short last slice, with bias; several
/// columns and a short last slice; and y rows of two 1024-column segments with bias, DeepSeek-V3's q_a
/// projection at 16 tokens.
fn split_k_cases<T: Elem>() {
    for (m, n, k, bias, cores, n_blocks) in [
        (61, 100, 4100, true, 8, 1),
        (20, 130, 6000, false, 24, 2),
        (16, 1536, 7168, true, 24, 3),
    ] {
        let budget = CoreBudget {
            cores,
            ub_bytes: UB_910B,
        };
        let t = LinearTiling::new(m as u64, n as u64, k as u64, bias, T::DT, budget).unwrap();
        assert!(
            t.k_blocks > 1 && t.n_blocks >= n_blocks,
            "{m}x{n}x{k}: {t:?}"
        );
        run::<T>(m, n, k, bias, &t);
    }
}

#[test]
fn linear_f32() {
    all_cases::<f32>();
    split_k_cases::<f32>();
}

#[test]
fn linear_f16() {
    all_cases::<f16>();
    split_k_cases::<f16>();
}

#[test]
fn linear_bf16() {
    all_cases::<bf16>();
    split_k_cases::<bf16>();
}

/// A 4 x 4 x 4 f32 tiling (one block) whose cube fields `edit` changes, launched: its only fault.
fn fault_of(edit: impl Fn(&mut dsnpu_kernels::CubeTiling)) -> String {
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
    edit(&mut t.cube);
    let mut dev = Device::new();
    let (gx, gw, gy) = (
        dev.upload(&[1f32; 16]),
        dev.upload(&[1f32; 16]),
        dev.alloc(64),
    );
    assert_eq!(t.as_bytes().len(), 10 * 4 + 33 * 4);
    let out = launch(&mut dev, "linear_f32", &t, [gx, gw], None, gy);
    out.only_failure().to_string()
}

#[test]
fn oversized_base_tile_faults() {
    // 256 x 128 f32 accumulators, double buffered (dbL0C 2): 256 KiB of L0C.
    let m = fault_of(|c| {
        c.baseM = 256;
        c.baseN = 128;
    });
    assert!(
        m.starts_with("Matmul::Init: base tile 256x128x16 needs") && m.ends_with("(on AIC)"),
        "{m}"
    );
}

#[test]
fn l1_overflow_faults_on_the_cube_core() {
    // 16 K steps of 128 x 64 and 256 x 64 f32 blocks (32 + 64 KiB), double buffered: 3 MiB of L1.
    let m = fault_of(|c| {
        c.baseM = 128;
        c.baseN = 256;
        c.baseK = 64;
        c.dbL0B = 1;
        c.dbL0C = 1;
        c.stepKa = 16;
        c.stepKb = 16;
        c.depthA1 = 32;
        c.depthB1 = 32;
    });
    assert!(m.starts_with("Matmul::Init: L1 needs 3145728 bytes"), "{m}");
    // And the host tiling refuses the same fields as a typed error.
    let mut t = dsnpu_kernels::CubeTiling {
        baseM: 128,
        baseN: 256,
        baseK: 64,
        stepM: 1,
        stepN: 1,
        stepKa: 16,
        stepKb: 16,
        depthA1: 32,
        depthB1: 32,
        dbL0A: 1,
        dbL0B: 1,
        dbL0C: 1,
        ..Default::default()
    };
    assert_eq!(
        t.validate("linear", 4, 4),
        Err(dsnpu_kernels::KernelError::CubeBufferOverflow {
            kernel: "linear",
            buffer: "L1",
            needed: 3 * 1024 * 1024,
            available: 512 * 1024,
        })
    );
    t.depthA1 = 20;
    assert!(
        t.validate("linear", 4, 4).is_err(),
        "depth != step x (1 or 2)"
    );
}
