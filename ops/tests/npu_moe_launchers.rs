//! The MoE typed launchers (`dsnpu_kernels::launch::moe_*`) through the runtime and the simulator:
//! argument checks with typed errors, tiling for the library's hardware, hand-worked results, and a
//! group-list window that does not start at entry 0 (how the device `moe_layer` hands the local
//! experts' counts to the FFN).

use std::sync::Arc;

use dsnpu_kernels::launch::{
    self, CombineShape, FfnShape, GroupList, GroupedShape, Hardware, KernelLibrary, RoutingShape,
};
use dsnpu_kernels::{GatingParams, KernelError, MoeList, MoeScore};
use dsnpu_runtime::{sim_counters, Device, Stream};

fn setup(hw: Hardware) -> (Arc<KernelLibrary>, Stream) {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::load_with(&dev, hw).unwrap();
    let s = dev.new_stream().unwrap();
    (lib, s)
}

/// The last launch on `s` completed cleanly: no fault, no sanitizer warning.
fn assert_clean(s: &Stream, symbol: &str) {
    s.synchronize().unwrap();
    let c = sim_counters::last_launch_counters(s).unwrap().unwrap();
    assert_eq!((c.kernel.as_str(), c.status, c.warnings), (symbol, 0, 0));
}

fn plain_top2() -> GatingParams {
    GatingParams {
        top_k: 2,
        n_group: 1,
        topk_group: 1,
        score: MoeScore::Sigmoid,
        has_bias: false,
        normalize: false,
        routed_scaling_factor: 1.0,
    }
}

#[test]
fn buffers_and_parameters_are_checked_before_launching() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let logits = s.upload(&[0.0f32; 12]).unwrap();
    let (mut ids, mut w) = (s.alloc::<i32>(5).unwrap(), s.alloc::<f32>(6).unwrap());
    let p = plain_top2();
    assert_eq!(
        launch::moe_gating_topk(&lib, &s, &logits, None, &mut ids, &mut w, 3, 4, &p).unwrap_err(),
        KernelError::BufferLength {
            kernel: "moe_gating_topk",
            arg: "ids",
            expected: 6,
            actual: 5,
        }
    );
    let mut ids = s.alloc::<i32>(6).unwrap();
    // has_bias without a bias, and 4 experts in 3 groups.
    let with_bias = GatingParams {
        has_bias: true,
        ..p
    };
    assert!(matches!(
        launch::moe_gating_topk(&lib, &s, &logits, None, &mut ids, &mut w, 3, 4, &with_bias),
        Err(KernelError::InvalidShape {
            kernel: "moe_gating_topk",
            ..
        })
    ));
    let groups3 = GatingParams { n_group: 3, ..p };
    assert!(matches!(
        launch::moe_gating_topk(&lib, &s, &logits, None, &mut ids, &mut w, 3, 4, &groups3),
        Err(KernelError::InvalidShape { .. })
    ));

    // Dispatch: room for every pair's row.
    let x = s.upload(&[0.0f32; 3 * 8]).unwrap();
    let ids = s.upload(&[0i32; 6]).unwrap();
    let mut ex = s.alloc::<f32>(5 * 8).unwrap();
    let (mut ri, mut et) = (s.alloc::<i32>(6).unwrap(), s.alloc::<i64>(4).unwrap());
    let shape = RoutingShape {
        tokens: 3,
        hidden: 8,
        top_k: 2,
        experts: 4,
        active: None,
        mode: MoeList::Count,
    };
    assert_eq!(
        launch::moe_init_routing(&lib, &s, &x, &ids, &mut ex, &mut ri, &mut et, &shape)
            .unwrap_err(),
        KernelError::BufferLength {
            kernel: "moe_init_routing",
            arg: "expanded_x",
            expected: 48,
            actual: 40,
        }
    );

    // A group window past the end of its list.
    let list = s.upload(&[1i64, 2, 0]).unwrap();
    let (xg, wg) = (
        s.upload(&[0.0f32; 3 * 2]).unwrap(),
        s.upload(&[0.0f32; 2 * 2 * 2]).unwrap(),
    );
    let mut y = s.alloc::<f32>(3 * 2).unwrap();
    let window = GroupList {
        list: &list,
        first: 2,
        kind: MoeList::Count,
    };
    let shape = GroupedShape {
        rows: 3,
        groups: 2,
        n: 2,
        k: 2,
    };
    assert_eq!(
        launch::grouped_matmul(&lib, &s, &xg, &wg, window, &mut y, shape).unwrap_err(),
        KernelError::BufferLength {
            kernel: "grouped_matmul",
            arg: "group_list",
            expected: 4,
            actual: 3,
        }
    );
    // No rows: nothing to launch, said as a shape error.
    let empty = GroupedShape { rows: 0, ..shape };
    let (x0, mut y0) = (s.alloc::<f32>(0).unwrap(), s.alloc::<f32>(0).unwrap());
    assert!(matches!(
        launch::grouped_matmul(
            &lib,
            &s,
            &x0,
            &wg,
            GroupList::all(&list, MoeList::Count),
            &mut y0,
            empty
        ),
        Err(KernelError::InvalidShape {
            kernel: "grouped_matmul",
            ..
        })
    ));

    // Combine: a shared-expert output of the wrong size.
    let yc = s.upload(&[0.0f32; 4 * 8]).unwrap();
    let idx = s.upload(&[0i32; 6]).unwrap();
    let wc = s.upload(&[0.0f32; 6]).unwrap();
    let shared = s.upload(&[0.0f32; 16]).unwrap();
    let mut out = s.alloc::<f32>(3 * 8).unwrap();
    let cs = CombineShape {
        tokens: 3,
        hidden: 8,
        top_k: 2,
        rows: 4,
    };
    assert_eq!(
        launch::moe_finalize_routing(&lib, &s, &yc, &idx, &wc, Some(&shared), None, &mut out, cs)
            .unwrap_err(),
        KernelError::BufferLength {
            kernel: "moe_finalize_routing",
            arg: "shared",
            expected: 24,
            actual: 16,
        }
    );
}

#[test]
fn tilings_follow_the_librarys_hardware() {
    // 10 tokens over 4 vector cores: 3 per block, 4 blocks; over 48: one each.
    for (hw, blocks) in [
        (Hardware::with_cores(2, 4), 4),
        (Hardware::ASCEND_910B2, 10),
    ] {
        let (lib, s) = setup(hw);
        let logits = s.upload(&[0.5f32; 10 * 4]).unwrap();
        let (mut ids, mut w) = (s.alloc::<i32>(20).unwrap(), s.alloc::<f32>(20).unwrap());
        let l = launch::moe_gating_topk(
            &lib,
            &s,
            &logits,
            None,
            &mut ids,
            &mut w,
            10,
            4,
            &plain_top2(),
        )
        .unwrap();
        assert_eq!((l.symbol, l.blocks), ("moe_gating_topk_f32", blocks));
        assert_clean(&s, l.symbol);
        // Equal scores: ties go to the lower experts, 0 then 1, each sigmoid(0.5).
        let ids = ids.to_vec().unwrap();
        assert!(ids.chunks(2).all(|p| p == [0, 1]), "{ids:?}");
        let sig = 1.0 / (1.0 + (-0.5f32).exp());
        assert!(w.to_vec().unwrap().iter().all(|&v| (v - sig).abs() < 1e-6));
    }
}

#[test]
fn dispatch_and_combine_by_hand() {
    let (lib, s) = setup(Hardware::with_cores(2, 4));
    // 3 tokens of 8 f32 (token t holds t+1 everywhere), top-2 of 4 experts.
    let xv: Vec<f32> = (0..24).map(|i| (i / 8 + 1) as f32).collect();
    let x = s.upload(&xv).unwrap();
    let ids = s.upload(&[1, 0, 1, 3, 2, 1]).unwrap();
    let mut ex = s.alloc_zeroed::<f32>(6 * 8).unwrap();
    let (mut ri, mut et) = (s.alloc::<i32>(6).unwrap(), s.alloc::<i64>(4).unwrap());
    let mut shape = RoutingShape {
        tokens: 3,
        hidden: 8,
        top_k: 2,
        experts: 4,
        active: None,
        mode: MoeList::Count,
    };
    let l =
        launch::moe_init_routing(&lib, &s, &x, &ids, &mut ex, &mut ri, &mut et, &shape).unwrap();
    assert_eq!(l.blocks, l.tiling.block_dim());
    assert_clean(&s, l.symbol);
    // Sorted stably by expert: e0 (0,1); e1 (0,0) (1,0) (2,1); e2 (2,0); e3 (1,1).
    assert_eq!(ri.to_vec().unwrap(), [1, 0, 2, 5, 4, 3]);
    assert_eq!(et.to_vec().unwrap(), [1, 3, 1, 1]);
    let rows: Vec<f32> = ex.to_vec().unwrap().chunks(8).map(|r| r[0]).collect();
    assert_eq!(rows, [1.0, 1.0, 2.0, 3.0, 3.0, 2.0]);

    // Experts 1..3 only, as a cumsum: e1 (0,0) (1,0) (2,1); e2 (2,0).
    shape.active = Some(1..3);
    shape.mode = MoeList::Cumsum;
    let l =
        launch::moe_init_routing(&lib, &s, &x, &ids, &mut ex, &mut ri, &mut et, &shape).unwrap();
    assert_clean(&s, l.symbol);
    assert_eq!(ri.to_vec().unwrap(), [0, -1, 1, -1, 3, 2]);
    assert_eq!(et.to_vec().unwrap(), [0, 3, 4, 4]);

    // Combine those four rows back: token 0 = 0.5 row 0; token 1 = 2 row 1; token 2 = row 3 + 3 row 2,
    // plus the residual (1 everywhere).
    let w = s.upload(&[0.5f32, 9.0, 2.0, 9.0, 1.0, 3.0]).unwrap();
    let residual = s.upload(&[1.0f32; 24]).unwrap();
    let mut out = s.alloc::<f32>(24).unwrap();
    let cs = CombineShape {
        tokens: 3,
        hidden: 8,
        top_k: 2,
        rows: 4,
    };
    let ex4 = {
        let all = ex.to_vec().unwrap();
        s.upload(&all[..32]).unwrap()
    };
    let l =
        launch::moe_finalize_routing(&lib, &s, &ex4, &ri, &w, None, Some(&residual), &mut out, cs)
            .unwrap();
    assert_clean(&s, l.symbol);
    let out = out.to_vec().unwrap();
    // Rows: 0 = x0 (1), 1 = x1 (2), 2 = x2 (3), 3 = x2 (3).
    for (t, want) in [0.5 * 1.0 + 1.0, 2.0 * 2.0 + 1.0, 3.0 + 3.0 * 3.0 + 1.0]
        .into_iter()
        .enumerate()
    {
        assert!(
            out[t * 8..(t + 1) * 8].iter().all(|&v| v == want),
            "token {t}: {out:?}"
        );
    }
}

#[test]
fn a_group_window_reads_the_entries_it_names() {
    let (lib, s) = setup(Hardware::with_cores(2, 4));
    // x [3, 2]; w0 = identity, w1 = [[1, 1], [1, -1]] (rows are outputs).
    let x = s.upload(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let w = s
        .upload(&[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, -1.0])
        .unwrap();
    let shape = GroupedShape {
        rows: 3,
        groups: 2,
        n: 2,
        k: 2,
    };
    let want = [1.0f32, 2.0, 7.0, -1.0, 11.0, -1.0];
    // Counts [1, 2] at entries 2..4 of a longer list, and the same list on its own.
    let long = s.upload(&[7i64, 7, 1, 2]).unwrap();
    let short = s.upload(&[1i64, 2]).unwrap();
    for list in [
        GroupList {
            list: &long,
            first: 2,
            kind: MoeList::Count,
        },
        GroupList::all(&short, MoeList::Count),
    ] {
        let mut y = s.alloc_zeroed::<f32>(6).unwrap();
        let l = launch::grouped_matmul(&lib, &s, &x, &w, list, &mut y, shape).unwrap();
        assert_clean(&s, l.symbol);
        assert_eq!(y.to_vec().unwrap(), want);
    }

    // The FFN through the same window: rows past the groups' total stay unwritten.
    let (hidden, inter) = (2, 2);
    let xf = s.upload(&[1.0f32, 0.0, 0.0, 1.0, 9.0, 9.0]).unwrap();
    // Gate = up = identity for both experts; down = identity (expert 0) and 2 x identity (expert 1).
    let id2 = [1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
    let (wg, wu) = (s.upload(&id2).unwrap(), s.upload(&id2).unwrap());
    let wd = s
        .upload(&[1.0f32, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0])
        .unwrap();
    let list = s.upload(&[5i64, 1, 1]).unwrap();
    let window = GroupList {
        list: &list,
        first: 1,
        kind: MoeList::Count,
    };
    let mut y = s.upload(&[-7.0f32; 6]).unwrap();
    let ffn = FfnShape {
        rows: 3,
        groups: 2,
        max_group_rows: 3,
        hidden,
        inter,
    };
    let l = launch::expert_ffn(&lib, &s, &xf, &wg, &wu, &wd, window, &mut y, ffn).unwrap();
    assert_clean(&s, l.symbol);
    // h = silu(x) * x per element: silu(1) * 1 = 1 / (1 + e^-1); row 0 on expert 0, row 1 on expert 1.
    let h = 1.0 / (1.0 + (-1.0f32).exp());
    let y = y.to_vec().unwrap();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(y[0], h) && y[1] == 0.0, "{y:?}");
    assert!(y[2] == 0.0 && close(y[3], 2.0 * h), "{y:?}");
    assert_eq!(&y[4..], &[-7.0, -7.0]);
}

/// An element type of the strided tests: exact conversions of the small dyadic values they use.
trait Val: launch::KernelElem + Copy + PartialEq + std::fmt::Debug {
    fn of(v: f64) -> Self;
}
impl Val for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
}
impl Val for half::f16 {
    fn of(v: f64) -> Self {
        half::f16::from_f64(v)
    }
}
impl Val for half::bf16 {
    fn of(v: f64) -> Self {
        half::bf16::from_f64(v)
    }
}

/// Multiples of 1/8 in [-1, 1] (exact in every type; their products' sums over k are exact in f32,
/// so the kernel's output is the exact product rounded once to T).
fn eighths(n: usize, seed: u64) -> Vec<f64> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((z >> 33) % 17) as f64 / 8.0 - 1.0
        })
        .collect()
}

/// `grouped_matmul_strided` with x in T (`Val`) and weights in W against the exact product, on
/// `hw`: every row of y where the layout puts it (bit-exact: one rounding of an exact sum), every
/// element between the rows still the sentinel it was filled with.
fn strided_case<T: Val, W: Val>(
    hw: Hardware,
    shape: launch::StridedGroupedShape,
    x_len: usize,
    y_len: usize,
) {
    let (lib, s) = setup(hw);
    let launch::StridedGroupedShape {
        groups,
        rows,
        n,
        k,
        x: xl,
        y: yl,
    } = shape;
    let xv = eighths(x_len, 1);
    let wv = eighths(groups * n * k, 2);
    let x = s
        .upload(&xv.iter().map(|&v| T::of(v)).collect::<Vec<_>>())
        .unwrap();
    let w = s
        .upload(&wv.iter().map(|&v| W::of(v)).collect::<Vec<_>>())
        .unwrap();
    let sentinel = T::of(7.0);
    let mut y = s.upload(&vec![sentinel; y_len]).unwrap();
    let l = launch::grouped_matmul_strided(&lib, &s, &x, &w, &mut y, shape).unwrap();
    assert_clean(&s, l.symbol);
    let got = y.to_vec().unwrap();
    let mut want = vec![sentinel; y_len];
    for g in 0..groups {
        for i in 0..rows {
            let (xa, ya) = (
                g * xl.group as usize + i * xl.ld as usize,
                g * yl.group as usize + i * yl.ld as usize,
            );
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|kk| xv[xa + kk] * wv[(g * n + j) * k + kk])
                    .sum();
                want[ya + j] = T::of(dot);
            }
        }
    }
    for (e, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{}: y[{e}] of {shape:?}", l.symbol);
    }
}

/// Attention's per-head products on `[T, H, d]` rows: x the first k columns of each head's wider
/// slice, y written token-major into wider slices; and both group-major with gaps between the rows
/// and between the groups. On 24 cube cores and on 2; f32, f16, bf16, and f32 activations with bf16
/// weights (`grouped_matmul_f32_w<bf16>`).
#[test]
fn a_strided_grouped_gemm_reads_and_writes_rows_where_the_layout_puts_them() {
    let (h, t) = (5usize, 7usize);
    let token_major = launch::StridedGroupedShape {
        groups: h,
        rows: t,
        n: 24,
        k: 40,
        x: dsnpu_kernels::RowLayout::token_major(h as u64, 56),
        y: dsnpu_kernels::RowLayout::token_major(h as u64, 32),
    };
    let (n, k) = (24usize, 40usize);
    let group_major = launch::StridedGroupedShape {
        x: dsnpu_kernels::RowLayout {
            ld: k as u64,
            group: (t * k) as u64,
        },
        y: dsnpu_kernels::RowLayout {
            ld: (n + 3) as u64,
            group: (t * (n + 3) + 5) as u64,
        },
        ..token_major
    };
    for hw in [Hardware::ASCEND_910B2, Hardware::with_cores(2, 4)] {
        strided_case::<f32, f32>(hw, token_major, t * h * 56, t * h * 32);
        strided_case::<half::f16, half::f16>(hw, token_major, t * h * 56, t * h * 32);
        strided_case::<half::bf16, half::bf16>(hw, token_major, t * h * 56, t * h * 32);
        strided_case::<f32, half::bf16>(hw, token_major, t * h * 56, t * h * 32);
        let y_len = (h - 1) * (t * (n + 3) + 5) + (t - 1) * (n + 3) + n;
        strided_case::<half::bf16, half::bf16>(hw, group_major, h * t * k, y_len);
        strided_case::<f32, f32>(hw, group_major, h * t * k, y_len);
    }
}

#[test]
fn a_strided_grouped_gemm_refuses_overlapping_rows_and_short_buffers() {
    let (lib, s) = setup(Hardware::ASCEND_910B2);
    let (groups, rows, n, k) = (3usize, 4usize, 8usize, 16usize);
    let x = s.alloc_zeroed::<f32>(groups * rows * k).unwrap();
    let w = s.alloc_zeroed::<f32>(groups * n * k).unwrap();
    let mut y = s.alloc_zeroed::<f32>(groups * rows * n).unwrap();
    let contiguous = dsnpu_kernels::RowLayout {
        ld: k as u64,
        group: (rows * k) as u64,
    };
    let shape = launch::StridedGroupedShape {
        groups,
        rows,
        n,
        k,
        x: contiguous,
        y: dsnpu_kernels::RowLayout {
            ld: n as u64,
            group: (rows * n) as u64,
        },
    };
    let invalid = |shape| {
        matches!(
            launch::grouped_matmul_strided(
                &lib,
                &s,
                &x,
                &w,
                &mut s.alloc_zeroed::<f32>(1 << 12).unwrap(),
                shape
            ),
            Err(KernelError::InvalidShape {
                kernel: "grouped_matmul_strided",
                ..
            })
        )
    };
    // Groups whose rows interleave in y without room for n columns each, or y rows closer than n.
    assert!(invalid(launch::StridedGroupedShape {
        y: dsnpu_kernels::RowLayout {
            ld: (groups * n) as u64,
            group: (n - 1) as u64,
        },
        ..shape
    }));
    assert!(invalid(launch::StridedGroupedShape {
        y: dsnpu_kernels::RowLayout {
            ld: (n - 1) as u64,
            group: (rows * n) as u64,
        },
        ..shape
    }));
    // x rows closer than k, and no rows.
    assert!(invalid(launch::StridedGroupedShape {
        x: dsnpu_kernels::RowLayout {
            ld: (k - 1) as u64,
            group: (rows * k) as u64,
        },
        ..shape
    }));
    assert!(invalid(launch::StridedGroupedShape { rows: 0, ..shape }));
    // x one element short of its last row, y one short.
    let short_x = s.alloc_zeroed::<f32>(groups * rows * k - 1).unwrap();
    assert_eq!(
        launch::grouped_matmul_strided(&lib, &s, &short_x, &w, &mut y, shape).unwrap_err(),
        KernelError::BufferLength {
            kernel: "grouped_matmul_strided",
            arg: "x",
            expected: groups * rows * k,
            actual: groups * rows * k - 1,
        }
    );
    let mut short_y = s.alloc_zeroed::<f32>(groups * rows * n - 1).unwrap();
    assert!(matches!(
        launch::grouped_matmul_strided(&lib, &s, &x, &w, &mut short_y, shape).unwrap_err(),
        KernelError::BufferLength { arg: "y", .. }
    ));
    // The valid shape launches.
    let l = launch::grouped_matmul_strided(&lib, &s, &x, &w, &mut y, shape).unwrap();
    assert_clean(&s, l.symbol);
}
