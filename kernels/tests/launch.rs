//! The typed launchers through the runtime and the simulator (the test binary finds `libdsnpu_sim.so`
//! next to itself): argument checks, tiling for the library's hardware, the shared per-device library,
//! and hand-worked results in each element type. Operator-level numerics across shape matrices are the
//! `dsnpu-ops` conformance suites (`ops/tests/npu_conformance.rs`).

use std::sync::Arc;

use dsnpu_kernels::launch::{self, Hardware, KernelLibrary, RopeShape};
use dsnpu_kernels::{CoreBudget, KernelError, RopeLayout};
use dsnpu_runtime::{Device, Stream};
use half::{bf16, f16};

fn setup(hw: Hardware) -> (Arc<KernelLibrary>, Stream) {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::load_with(&dev, hw).unwrap();
    let s = dev.new_stream().unwrap();
    (lib, s)
}

#[test]
fn the_library_is_loaded_once_per_device() {
    let dev = Device::new(0).unwrap();
    let a = KernelLibrary::get(&dev).unwrap();
    let b = KernelLibrary::get(&dev).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    // Functions are cached by symbol and name themselves.
    let f = a.function_named("rms_norm_bf16").unwrap();
    assert_eq!(f.name(), "rms_norm_bf16");
    let e = a.function_named("no_such_kernel").unwrap_err();
    assert!(
        matches!(&e, KernelError::Device { kernel, .. } if kernel == "no_such_kernel"),
        "{e}"
    );
}

#[test]
fn a_hardware_description_without_cores_is_rejected() {
    let dev = Device::new(0).unwrap();
    let mut hw = Hardware::ASCEND_910B2;
    hw.cube = CoreBudget {
        cores: 0,
        ub_bytes: 1,
    };
    assert!(matches!(
        KernelLibrary::load_with(&dev, hw),
        Err(KernelError::InvalidHardware(_))
    ));
}

/// The simulated device runs 24 cube and 48 vector cores at once (this binary's default): a library
/// tiled for more would launch blocks that wait at `SyncAll` for blocks that cannot start.
#[test]
fn a_library_tiled_for_more_cores_than_the_device_runs_is_refused() {
    let dev = Device::new(0).unwrap();
    let has = dev.core_counts().unwrap();
    assert_eq!(
        Hardware::detect(&dev).unwrap(),
        Hardware::with_cores(has.cube, has.vector)
    );
    for hw in [
        Hardware::with_cores(has.cube + 1, has.vector),
        Hardware::with_cores(has.cube, has.vector + 1),
    ] {
        let e = KernelLibrary::load_with(&dev, hw).unwrap_err();
        assert!(matches!(e, KernelError::InvalidHardware(_)), "{e}");
        assert!(e.to_string().contains("at once"), "{e}");
    }
    assert!(KernelLibrary::load_with(&dev, Hardware::with_cores(has.cube, has.vector)).is_ok());
}

#[test]
fn buffers_must_hold_what_the_shape_needs() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let x = s.alloc::<f32>(12).unwrap();
    let w = s.alloc::<f32>(4).unwrap();
    let mut y = s.alloc::<f32>(11).unwrap();
    assert_eq!(
        launch::rms_norm(&lib, &s, &x, &w, &mut y, 3, 1e-6).unwrap_err(),
        KernelError::BufferLength {
            kernel: "rms_norm",
            arg: "y",
            expected: 12,
            actual: 11,
        }
    );
    // gate_up [3, 2 x 3] needs 18 elements.
    let mut out = s.alloc::<f32>(9).unwrap();
    assert_eq!(
        launch::silu_mul(&lib, &s, &x, &mut out, 3, 3).unwrap_err(),
        KernelError::BufferLength {
            kernel: "silu_mul",
            arg: "gate_up",
            expected: 18,
            actual: 12,
        }
    );
    // linear [3, 4] x [3, 4]^T: a bias of 4 for n = 3.
    let (xw, bias) = (s.alloc::<f32>(12).unwrap(), s.alloc::<f32>(4).unwrap());
    assert_eq!(
        launch::linear(&lib, &s, &x, &xw, Some(&bias), &mut out, 3, 3, 4).unwrap_err(),
        KernelError::BufferLength {
            kernel: "linear",
            arg: "bias",
            expected: 3,
            actual: 4,
        }
    );
    // rope [2, 1, 6]: 2 positions, tables of 3 rows x 3.
    let pos = s.alloc::<i32>(3).unwrap();
    let table = s.alloc::<f32>(9).unwrap();
    let shape = RopeShape::dense(2, 1, 6, 3, RopeLayout::Interleaved);
    let mut y12 = s.alloc::<f32>(12).unwrap();
    assert_eq!(
        launch::rope(&lib, &s, &x, &pos, &table, &table, &mut y12, shape).unwrap_err(),
        KernelError::BufferLength {
            kernel: "rope",
            arg: "positions",
            expected: 2,
            actual: 3,
        }
    );
    // Nothing was launched, so the stream has nothing to report.
    s.synchronize().unwrap();
}

#[test]
fn shapes_the_kernels_cannot_take_are_typed_errors() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let empty = s.alloc::<f32>(0).unwrap();
    let w = s.alloc::<f32>(4).unwrap();
    let mut y = s.alloc::<f32>(0).unwrap();
    assert!(matches!(
        launch::rms_norm(&lib, &s, &empty, &w, &mut y, 0, 1e-6),
        Err(KernelError::InvalidShape {
            kernel: "rms_norm",
            ..
        })
    ));
    // An odd rotary dimension.
    let x = s.alloc::<f32>(3).unwrap();
    let pos = s.alloc::<i32>(1).unwrap();
    let mut y3 = s.alloc::<f32>(3).unwrap();
    let shape = RopeShape::dense(1, 1, 3, 1, RopeLayout::HalfSplit);
    assert!(matches!(
        launch::rope(&lib, &s, &x, &pos, &w, &w, &mut y3, shape),
        Err(KernelError::InvalidShape { kernel: "rope", .. })
    ));
    // A 7168-wide row cannot fit 1 KiB of Unified Buffer.
    let (tiny, s2) = setup(Hardware {
        vector: CoreBudget {
            cores: 1,
            ub_bytes: 1024,
        },
        cube: CoreBudget::ASCEND_910B2_CUBE,
    });
    let (x, w) = (
        s2.alloc::<f32>(7168).unwrap(),
        s2.alloc::<f32>(7168).unwrap(),
    );
    let mut y = s2.alloc::<f32>(7168).unwrap();
    assert!(matches!(
        launch::rms_norm(&tiny, &s2, &x, &w, &mut y, 1, 1e-6),
        Err(KernelError::DoesNotFit {
            kernel: "rms_norm",
            available: 1024,
            ..
        })
    ));
}

#[test]
fn rows_split_over_the_librarys_vector_cores() {
    // 10 rows on 4 vector cores: ceil(10 / 4) = 3 rows per block, blocks of 3, 3, 3 and 1 rows.
    let (lib, s) = setup(Hardware::with_cores(2, 4));
    let x: Vec<f32> = (0..10).flat_map(|r| [r as f32 + 1.0; 5]).collect();
    let (xd, wd) = (s.upload(&x).unwrap(), s.upload(&[1.0f32; 5]).unwrap());
    let mut yd = s.alloc::<f32>(50).unwrap();
    let l = launch::rms_norm(&lib, &s, &xd, &wd, &mut yd, 10, 0.0).unwrap();
    assert_eq!(
        (l.symbol, l.blocks, l.tiling.rows_per_block),
        ("rms_norm_f32", 4, 3)
    );
    // A constant row c normalises to c / sqrt(c^2) = 1 exactly (c^2, its root and the quotient are exact).
    s.synchronize().unwrap();
    assert_eq!(yd.to_vec().unwrap(), vec![1.0; 50]);
}

#[test]
fn add_rms_norm_bf16_writes_the_rounded_sum_and_its_norm() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let b = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    // 1 + 2^-8 is halfway between the bf16 neighbours 1 and 1 + 2^-7: it rounds to even, 1.
    let x = s.upload(&b(&[1.0, 2.0])).unwrap();
    let r = s.upload(&b(&[0.003_906_25, 2.0])).unwrap();
    let w = s.upload(&b(&[1.0, 1.0])).unwrap();
    let (mut y, mut sum) = (s.alloc::<bf16>(2).unwrap(), s.alloc::<bf16>(2).unwrap());
    let l = launch::add_rms_norm(&lib, &s, &x, &r, &w, &mut y, &mut sum, 1, 0.0).unwrap();
    assert_eq!(l.symbol, "add_rms_norm_bf16");
    s.synchronize().unwrap();
    assert_eq!(sum.to_vec().unwrap(), b(&[1.0, 4.0]));
    // rms of [1, 4] = sqrt(17 / 2) = 2.9155: y = [0.34300, 1.37199], rounded to bf16 (8 significant
    // bits): 0.34300 = 1.37199 x 2^-2 -> 176/128 x 2^-2 = 0.34375; 1.37199 -> 176/128 = 1.375.
    assert_eq!(y.to_vec().unwrap(), b(&[0.34375, 1.375]));
}

#[test]
fn linear_f16_with_bias() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    let x = s.upload(&h(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    let w = s.upload(&h(&[1.0, 1.0, 0.5, -1.0])).unwrap();
    let bias = s.upload(&[0.25f32, 1.0]).unwrap();
    let mut y = s.alloc::<f16>(4).unwrap();
    let l = launch::linear(&lib, &s, &x, &w, Some(&bias), &mut y, 2, 2, 2).unwrap();
    assert_eq!((l.symbol, l.tiling.has_bias), ("linear_f16", 1));
    s.synchronize().unwrap();
    // [1, 2]: (1 + 2 + 0.25, 0.5 - 2 + 1); [3, 4]: (3 + 4 + 0.25, 1.5 - 4 + 1).
    assert_eq!(y.to_vec().unwrap(), h(&[3.25, -0.5, 7.25, -1.5]));
}

/// DeepSeek-V3's q_a projection at 16 tokens, [16, 7168] x [1536, 7168]^T: the tiling splits k, so the
/// launcher picks the split-k symbols, whose blocks meet in SyncAll (the simulator runs them all at once)
/// and sum their slices' partial products. f32 activations with bf16 weights (linear_f32_w<w>) and bf16
/// throughout, against an f64 product of the same inputs with bias.
#[test]
fn a_long_k_over_few_rows_is_split_and_summed() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let (m, n, k) = (16usize, 1536usize, 7168usize);
    // Small integers times powers of two: every product and partial sum is exact in f32, so the f64
    // reference is the kernel's exact result before rounding to the output type.
    let xf: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 64.0)
        .collect();
    let wf: Vec<f32> = (0..n * k)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 32.0)
        .collect();
    let bf: Vec<f32> = (0..n).map(|j| (j % 9) as f32 - 4.0).collect();
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|kk| f64::from(xf[i * k + kk]) * f64::from(wf[j * k + kk]))
                .sum();
            want[i * n + j] = dot + f64::from(bf[j]);
        }
    }
    let to_bf = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let w = s.upload(&to_bf(&wf)).unwrap();
    let bias = s.upload(&bf).unwrap();

    let x = s.upload(&xf).unwrap();
    let mut y = s.alloc::<f32>(m * n).unwrap();
    let l = launch::linear(&lib, &s, &x, &w, Some(&bias), &mut y, m, n, k).unwrap();
    assert!(l.tiling.k_blocks > 1, "{:?}", l.tiling);
    assert_eq!(l.symbol, "linear_splitk_f32_wbf16");
    s.synchronize().unwrap();
    let got = y.to_vec().unwrap();
    assert_eq!(got, want.iter().map(|&v| v as f32).collect::<Vec<_>>());

    let x = s.upload(&to_bf(&xf)).unwrap();
    let mut y = s.alloc::<bf16>(m * n).unwrap();
    let l = launch::linear(&lib, &s, &x, &w, Some(&bias), &mut y, m, n, k).unwrap();
    assert_eq!(l.symbol, "linear_splitk_bf16");
    s.synchronize().unwrap();
    let got = y.to_vec().unwrap();
    assert_eq!(
        got,
        want.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>()
    );
}

#[test]
fn rope_bf16_rounds_the_rotated_pair_once() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let x = s
        .upload(&[bf16::from_f32(1.0), bf16::from_f32(0.0)])
        .unwrap();
    let pos = s.upload(&[0i32]).unwrap();
    let (cos, sin) = (s.upload(&[0.6f32]).unwrap(), s.upload(&[0.8f32]).unwrap());
    let mut y = s.alloc::<bf16>(2).unwrap();
    let shape = RopeShape::dense(1, 1, 2, 1, RopeLayout::Interleaved);
    launch::rope(&lib, &s, &x, &pos, &cos, &sin, &mut y, shape).unwrap();
    s.synchronize().unwrap();
    // (1, 0) rotated: (0.6, 0.8), each rounded to bf16's 8 significant bits:
    // 0.6 = 1.2 x 2^-1 -> 154/128 x 2^-1 = 0.6015625; 0.8 = 1.6 x 2^-1 -> 205/128 x 2^-1 = 0.80078125.
    let got: Vec<f32> = y.to_vec().unwrap().iter().map(|v| v.to_f32()).collect();
    assert_eq!(got, vec![0.601_562_5, 0.800_781_25]);
}

/// The rope part of `[T, H, head_dim]` rows (their last `dim` elements, as a query's `[nope | rope]`
/// heads hold it) rotated into rows of its own (`RopeShape::tail_of`): bit for bit what the dense
/// rope gives on a host copy of those parts, for both layouts, f32 and bf16, over several blocks.
#[test]
fn rope_rotates_the_tail_of_wider_rows_into_rows_of_its_own() {
    let (lib, s) = setup(Hardware::with_cores(2, 3));
    let (tokens, heads, head_dim, dim, table_rows) = (5usize, 3usize, 24usize, 8usize, 6usize);
    let xf: Vec<f32> = (0..tokens * heads * head_dim)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0)
        .collect();
    let tail: Vec<f32> = xf
        .chunks(head_dim)
        .flat_map(|row| row[head_dim - dim..].to_vec())
        .collect();
    let pos = s.upload(&[4i32, 0, 5, 2, 2]).unwrap();
    let angles: Vec<f64> = (0..table_rows * dim / 2).map(|i| i as f64 * 0.37).collect();
    let cos = s
        .upload(&angles.iter().map(|a| a.cos() as f32).collect::<Vec<_>>())
        .unwrap();
    let sin = s
        .upload(&angles.iter().map(|a| a.sin() as f32).collect::<Vec<_>>())
        .unwrap();
    for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
        let dense = RopeShape::dense(tokens, heads, dim, table_rows, layout);
        let strided = RopeShape::tail_of(tokens, heads, head_dim, dim, table_rows, layout);
        let rotate = |x: &[f32], shape: RopeShape| -> (Vec<f32>, Vec<bf16>) {
            let out = tokens * heads * dim;
            let (x32, mut y32) = (s.upload(x).unwrap(), s.alloc::<f32>(out).unwrap());
            launch::rope(&lib, &s, &x32, &pos, &cos, &sin, &mut y32, shape).unwrap();
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let (x16, mut y16) = (s.upload(&xb).unwrap(), s.alloc::<bf16>(out).unwrap());
            launch::rope(&lib, &s, &x16, &pos, &cos, &sin, &mut y16, shape).unwrap();
            s.synchronize().unwrap();
            (y32.to_vec().unwrap(), y16.to_vec().unwrap())
        };
        let want = rotate(&tail, dense);
        assert_eq!(rotate(&xf, strided), want, "{layout:?}");
        // The rotation moved something (not a copy of the tail).
        assert_ne!(want.0, tail, "{layout:?}");
    }
    // y sized for x's wider rows is refused.
    let (x, mut y) = (s.upload(&xf).unwrap(), s.alloc::<f32>(xf.len()).unwrap());
    let shape = RopeShape::tail_of(
        tokens,
        heads,
        head_dim,
        dim,
        table_rows,
        RopeLayout::Interleaved,
    );
    assert_eq!(
        launch::rope(&lib, &s, &x, &pos, &cos, &sin, &mut y, shape).unwrap_err(),
        KernelError::BufferLength {
            kernel: "rope",
            arg: "y",
            expected: tokens * heads * dim,
            actual: xf.len(),
        }
    );
}
