//! Hand-worked values and bad-input checks for the dense operators: rms_norm, add_rms_norm, silu_mul,
//! linear, batched_matmul, embedding, softmax, argmax.
use dsnpu_ops::activation::silu_mul;
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::linear::{batched_matmul, linear};
use dsnpu_ops::norm::{add_rms_norm, rms_norm};
use dsnpu_ops::sampling::{argmax, embedding, softmax};
use dsnpu_ops::OpsError;
use half::{bf16, f16};
use ndarray::{array, s, Array1, Array2, Array3, Axis};

const F32: Tolerance = Tolerance {
    atol: 1e-6,
    rtol: 1e-6,
};

fn assert_shape_err<R: std::fmt::Debug>(r: dsnpu_ops::Result<R>, want_op: &str, want_arg: &str) {
    match r {
        Err(OpsError::Shape { op, arg, .. }) => assert_eq!((op, arg), (want_op, want_arg)),
        other => panic!("expected a Shape error on {want_op}/{want_arg}, got {other:?}"),
    }
}

fn assert_invalid<R: std::fmt::Debug>(r: dsnpu_ops::Result<R>, want_op: &str, want_arg: &str) {
    match r {
        Err(OpsError::InvalidArgument { op, arg, .. }) => {
            assert_eq!((op, arg), (want_op, want_arg))
        }
        other => panic!("expected InvalidArgument on {want_op}/{want_arg}, got {other:?}"),
    }
}

// ---------------------------------------------------------------- rms_norm

#[test]
fn rms_norm_of_3_4() {
    // mean([9, 16]) = 12.5, rms = sqrt(12.5) = 5/sqrt(2); [3, 4] / rms = [0.6·√2, 0.8·√2].
    let r2 = 2f32.sqrt();
    let y = rms_norm(
        array![[3.0f32, 4.0]].view(),
        array![1.0f32, 1.0].view(),
        0.0,
    )
    .unwrap();
    assert_close(
        "rms_norm [3,4]",
        y.view(),
        array![[0.6 * r2, 0.8 * r2]].view(),
        F32,
    );
    // The weight scales each column: [2, 0.5] -> [1.2·√2, 0.4·√2].
    let y = rms_norm(
        array![[3.0f32, 4.0]].view(),
        array![2.0f32, 0.5].view(),
        0.0,
    )
    .unwrap();
    assert_close(
        "weighted",
        y.view(),
        array![[1.2 * r2, 0.4 * r2]].view(),
        F32,
    );
}

#[test]
fn rms_norm_eps_and_rows_are_independent() {
    // Row 0: mean(1) + eps 3 = 4 -> divide by 2. Row 1: mean([4,4,4,4]) + 3 = 7 -> 2/sqrt(7).
    let x = array![[1.0f32, 1.0, 1.0, 1.0], [2.0, -2.0, 2.0, -2.0]];
    let y = rms_norm(x.view(), Array1::ones(4).view(), 3.0).unwrap();
    let b = 2.0 / 7f32.sqrt();
    assert_close(
        "eps",
        y.view(),
        array![[0.5f32, 0.5, 0.5, 0.5], [b, -b, b, -b]].view(),
        F32,
    );
}

#[test]
fn rms_norm_rounds_once_to_bf16() {
    // 0.6·√2 = 0.848528...; ×256 = 217.2 -> the nearest bf16 is 217/256 = 0.84765625.
    // 0.8·√2 = 1.131370...; ×128 = 144.8 -> 145/128 = 1.1328125.
    let x = array![[bf16::from_f32(3.0), bf16::from_f32(4.0)]];
    let w = array![bf16::ONE, bf16::ONE];
    let y = rms_norm(x.view(), w.view(), 0.0).unwrap();
    assert_eq!(y[[0, 0]].to_f32(), 217.0 / 256.0);
    assert_eq!(y[[0, 1]].to_f32(), 145.0 / 128.0);
}

#[test]
fn rms_norm_zero_row_with_zero_eps_is_nan_not_a_panic() {
    let y = rms_norm(
        array![[0.0f32, 0.0]].view(),
        array![1.0f32, 1.0].view(),
        0.0,
    )
    .unwrap();
    assert!(y.iter().all(|v| v.is_nan()));
}

#[test]
fn add_rms_norm_returns_the_rounded_sum_and_its_norm() {
    // [1, 2] + [2, 2] = [3, 4], normed as above.
    let r2 = 2f32.sqrt();
    let (y, sum) = add_rms_norm(
        array![[1.0f32, 2.0]].view(),
        array![[2.0f32, 2.0]].view(),
        array![1.0f32, 1.0].view(),
        0.0,
    )
    .unwrap();
    assert_eq!(sum, array![[3.0f32, 4.0]]);
    assert_close("normed", y.view(), array![[0.6 * r2, 0.8 * r2]].view(), F32);

    // In bf16, 1 + 2^-9 is below half an ulp (2^-8) above 1: the stored sum is exactly 1.
    let (_, sum) = add_rms_norm(
        array![[bf16::ONE, bf16::ONE]].view(),
        array![[bf16::from_f32(1.0 / 512.0), bf16::ZERO]].view(),
        array![bf16::ONE, bf16::ONE].view(),
        1e-6,
    )
    .unwrap();
    assert_eq!(sum, array![[bf16::ONE, bf16::ONE]]);
}

#[test]
fn norm_bad_inputs() {
    let x = Array2::<f32>::ones((2, 4));
    assert_shape_err(
        rms_norm(x.view(), Array1::ones(3).view(), 1e-6),
        "rms_norm",
        "weight",
    );
    assert_shape_err(
        rms_norm(
            Array2::<f32>::ones((2, 0)).view(),
            Array1::ones(0).view(),
            1e-6,
        ),
        "rms_norm",
        "x",
    );
    assert_invalid(
        rms_norm(x.view(), Array1::ones(4).view(), -1.0),
        "rms_norm",
        "eps",
    );
    assert_invalid(
        rms_norm(x.view(), Array1::ones(4).view(), f32::NAN),
        "rms_norm",
        "eps",
    );
    let r = Array2::<f32>::ones((3, 4));
    assert_shape_err(
        add_rms_norm(x.view(), r.view(), Array1::ones(4).view(), 1e-6),
        "add_rms_norm",
        "residual",
    );
    assert_shape_err(
        add_rms_norm(x.view(), x.view(), Array1::ones(5).view(), 1e-6),
        "add_rms_norm",
        "weight",
    );
    assert_invalid(
        add_rms_norm(x.view(), x.view(), Array1::ones(4).view(), f32::INFINITY),
        "add_rms_norm",
        "eps",
    );
    // Zero tokens is not an error: an empty result.
    assert_eq!(
        rms_norm(
            Array2::<f32>::zeros((0, 4)).view(),
            Array1::ones(4).view(),
            1e-6
        )
        .unwrap()
        .dim(),
        (0, 4)
    );
}

// ---------------------------------------------------------------- silu_mul

#[test]
fn silu_mul_values() {
    // gate [0, 1], up [5, 7]: silu(0) = 0; silu(1) = 1/(1 + e^-1) = 0.7310585786 -> × 7 = 5.1174100502.
    let y = silu_mul(array![[0.0f32, 1.0, 5.0, 7.0]].view()).unwrap();
    assert_close("silu_mul", y.view(), array![[0.0f32, 5.117_41]].view(), F32);
    // silu(-2) = -2/(1 + e^2) = -0.2384058440; × -3 = 0.7152175320.
    let y = silu_mul(array![[-2.0f32, -3.0]].view()).unwrap();
    assert_close(
        "silu_mul neg",
        y.view(),
        array![[0.715_217_53f32]].view(),
        F32,
    );
}

#[test]
fn silu_mul_saturates_without_nan() {
    // e^1000 overflows: silu(-1000) = -1000/inf = -0; silu(1000) = 1000/(1 + 0) = 1000.
    let y = silu_mul(array![[-1000.0f32, 1000.0, 2.0, 2.0]].view()).unwrap();
    assert_eq!(y, array![[-0.0f32, 2000.0]]);
    // f16: silu(-30)·1 = -30/(1+e^30) ≈ -2.8e-12, far below half of f16's smallest subnormal
    // (2^-25 ≈ 3e-8) -> rounds to -0.
    let y = silu_mul(array![[f16::from_f32(-30.0), f16::ONE]].view()).unwrap();
    assert_eq!(y[[0, 0]].to_f32(), 0.0);
}

#[test]
fn silu_mul_bad_inputs() {
    assert_shape_err(
        silu_mul(Array2::<f32>::ones((2, 3)).view()),
        "silu_mul",
        "gate_up",
    );
    assert_eq!(
        silu_mul(Array2::<f32>::ones((2, 0)).view()).unwrap().dim(),
        (2, 0)
    );
}

// ---------------------------------------------------------------- linear / batched_matmul

#[test]
fn linear_small_by_hand() {
    // w rows: e0, e1, e0+e1 -> y = [x0, x1, x0+x1].
    let x = array![[1.0f32, 2.0], [3.0, 4.0]];
    let w = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let y = linear(x.view(), w.view(), None).unwrap();
    assert_eq!(y, array![[1.0f32, 2.0, 3.0], [3.0, 4.0, 7.0]]);
    let y = linear(x.view(), w.view(), Some(array![10.0f32, 20.0, 30.0].view())).unwrap();
    assert_eq!(y, array![[11.0f32, 22.0, 33.0], [13.0, 24.0, 37.0]]);
}

#[test]
fn linear_long_reduction_is_exact_on_integers() {
    // Σ_{k<1000} k = 499500 and every partial sum is an integer below 2^24, so f32 is exact in any order.
    let x = Array2::<f32>::ones((5, 1000));
    let w = Array2::from_shape_fn((2, 1000), |(n, k)| if n == 0 { k as f32 } else { 1.0 });
    let y = linear(x.view(), w.view(), None).unwrap();
    assert!(y
        .rows()
        .into_iter()
        .all(|r| r[0] == 499_500.0 && r[1] == 1000.0));
}

#[test]
fn linear_matches_f64_triple_loop() {
    // Independent formula: a straightforward f64 loop. Ragged sizes exercise the 4-row and 8-lane tails.
    let mut rng = CaseRng::new(11);
    for &(m, k, n) in &[
        (1usize, 1usize, 1usize),
        (7, 13, 5),
        (37, 129, 9),
        (4, 8, 4),
        (6, 1031, 3),
    ] {
        let x: Array2<f32> = rng.uniform((m, k), -1.0, 1.0);
        let w: Array2<f32> = rng.uniform((n, k), -1.0, 1.0);
        let b: Array1<f32> = rng.uniform(n, -1.0, 1.0);
        let want = Array2::from_shape_fn((m, n), |(i, j)| {
            let s: f64 = (0..k).map(|t| x[[i, t]] as f64 * w[[j, t]] as f64).sum();
            (s + b[j] as f64) as f32
        });
        let got = linear(x.view(), w.view(), Some(b.view())).unwrap();
        // f32 accumulation of k terms of size <= 1: error well below 1e-5 · sqrt(k).
        let tol = Tolerance {
            atol: 1e-5 * (k as f32).sqrt(),
            rtol: 1e-5,
        };
        assert_close(&format!("linear {m}x{k}x{n}"), got.view(), want.view(), tol);
    }
}

#[test]
fn linear_row_result_does_not_depend_on_batch() {
    // The documented fixed accumulation order: a row alone equals the same row inside a batch, bit for bit.
    let mut rng = CaseRng::new(12);
    let x: Array2<f32> = rng.uniform((9, 77), -1.0, 1.0);
    let w: Array2<f32> = rng.uniform((6, 77), -1.0, 1.0);
    let all = linear(x.view(), w.view(), None).unwrap();
    for r in 0..9 {
        let one = linear(x.slice(s![r..r + 1, ..]), w.view(), None).unwrap();
        assert_eq!(one.row(0), all.row(r), "row {r}");
    }
}

#[test]
fn linear_accepts_non_contiguous_views() {
    // A transposed weight view (column-major rows) gives the same result as its contiguous copy.
    let mut rng = CaseRng::new(13);
    let x: Array2<f32> = rng.uniform((3, 10), -1.0, 1.0);
    let wt: Array2<f32> = rng.uniform((10, 4), -1.0, 1.0);
    let w_view = wt.t();
    let w_copy = w_view.to_owned();
    assert_eq!(
        linear(x.view(), w_view, None).unwrap(),
        linear(x.view(), w_copy.view(), None).unwrap()
    );
}

#[test]
fn batched_matmul_by_hand() {
    // [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]]; the second batch multiplies by the identity.
    let a =
        Array3::from_shape_vec((2, 2, 2), vec![1.0f32, 2.0, 3.0, 4.0, 9.0, 8.0, 7.0, 6.0]).unwrap();
    let b =
        Array3::from_shape_vec((2, 2, 2), vec![5.0f32, 6.0, 7.0, 8.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
    let c = batched_matmul(a.view(), b.view()).unwrap();
    assert_eq!(
        c.index_axis(Axis(0), 0),
        array![[19.0f32, 22.0], [43.0, 50.0]]
    );
    assert_eq!(c.index_axis(Axis(0), 1), array![[9.0f32, 8.0], [7.0, 6.0]]);
}

#[test]
fn batched_matmul_agrees_with_linear() {
    // Cross-check between forms: a[i] · b[i] = linear(a[i], b[i]ᵀ).
    let mut rng = CaseRng::new(14);
    let a: Array3<bf16> = rng.uniform((3, 5, 19), -1.0, 1.0);
    let b: Array3<bf16> = rng.uniform((3, 19, 6), -1.0, 1.0);
    let c = batched_matmul(a.view(), b.view()).unwrap();
    for i in 0..3 {
        let l = linear(a.index_axis(Axis(0), i), b.index_axis(Axis(0), i).t(), None).unwrap();
        assert_eq!(c.index_axis(Axis(0), i), l);
    }
}

#[test]
fn matmul_bad_inputs() {
    let x = Array2::<f32>::ones((2, 4));
    assert_shape_err(
        linear(x.view(), Array2::ones((3, 5)).view(), None),
        "linear",
        "w",
    );
    assert_shape_err(
        linear(
            x.view(),
            Array2::ones((3, 4)).view(),
            Some(Array1::ones(2).view()),
        ),
        "linear",
        "bias",
    );
    let a = Array3::<f32>::ones((2, 3, 4));
    assert_shape_err(
        batched_matmul(a.view(), Array3::ones((2, 5, 6)).view()),
        "batched_matmul",
        "b",
    );
    assert_shape_err(
        batched_matmul(a.view(), Array3::ones((1, 4, 6)).view()),
        "batched_matmul",
        "b",
    );
    // Degenerate but valid: K = 0 gives the bias (or zeros); M = 0 gives an empty result.
    let y = linear(
        Array2::<f32>::ones((2, 0)).view(),
        Array2::ones((3, 0)).view(),
        Some(array![1.0f32, 2.0, 3.0].view()),
    );
    assert_eq!(y.unwrap(), array![[1.0f32, 2.0, 3.0], [1.0, 2.0, 3.0]]);
    assert_eq!(
        linear(
            Array2::<f32>::ones((0, 4)).view(),
            Array2::ones((3, 4)).view(),
            None
        )
        .unwrap()
        .dim(),
        (0, 3)
    );
}

// ---------------------------------------------------------------- embedding / softmax / argmax

#[test]
fn embedding_gathers_rows() {
    let table = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let y = embedding(table.view(), array![2, 0, 2].view()).unwrap();
    assert_eq!(y, array![[5.0f32, 6.0], [1.0, 2.0], [5.0, 6.0]]);
}

#[test]
fn embedding_bad_ids() {
    let table = Array2::<f32>::zeros((3, 2));
    match embedding(table.view(), array![0, 3].view()) {
        Err(OpsError::IndexOutOfRange {
            op: "embedding",
            arg: "ids",
            index: 3,
            position: 1,
            bound: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    match embedding(table.view(), array![-1].view()) {
        Err(OpsError::IndexOutOfRange {
            index: -1,
            position: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // An empty table rejects every id.
    assert!(embedding(Array2::<f32>::zeros((0, 2)).view(), array![0].view()).is_err());
}

#[test]
fn softmax_by_hand() {
    // exp([0, ln2, ln3]) = [1, 2, 3] -> [1/6, 1/3, 1/2]. Shifting by a constant changes nothing, and
    // huge equal logits do not overflow.
    let l2 = 2f32.ln();
    let l3 = 3f32.ln();
    let x = array![
        [0.0f32, l2, l3],
        [100.0, 100.0 + l2, 100.0 + l3],
        [1000.0, 1000.0, f32::NEG_INFINITY]
    ];
    let p = softmax(x.view()).unwrap();
    let want = array![
        [1.0 / 6.0, 1.0 / 3.0, 0.5],
        [1.0 / 6.0, 1.0 / 3.0, 0.5],
        [0.5f32, 0.5, 0.0]
    ];
    assert_close("softmax", p.view(), want.view(), F32);
}

#[test]
fn softmax_non_finite_rows_are_nan() {
    let x = array![
        [f32::NEG_INFINITY, f32::NEG_INFINITY],
        [1.0, f32::NAN],
        [f32::INFINITY, 0.0]
    ];
    let p = softmax(x.view()).unwrap();
    assert!(p.iter().all(|v| v.is_nan()));
}

#[test]
fn softmax_of_f16_is_f32() {
    // ln 2 = 0.693147 = 1419.57 / 2048; f16's ulp on [0.5, 1) is 1/2048, so it is stored as
    // 1420/2048 = 0.693359375. The softmax of the stored value is p = [1, e] / (1 + e), e = exp(0.693359375).
    let x = array![[f16::ZERO, f16::from_f32(2f32.ln())]];
    assert_eq!(x[[0, 1]].to_f32(), 0.693_359_4);
    let p = softmax(x.view()).unwrap();
    let e = (0.693_359_4f32).exp();
    assert_close(
        "softmax f16",
        p.view(),
        array![[1.0 / (1.0 + e), e / (1.0 + e)]].view(),
        F32,
    );
}

#[test]
fn argmax_ties_and_nan() {
    let x = array![
        [1.0f32, 3.0, 3.0, 2.0],
        [
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY
        ],
        [1.0, f32::NAN, 5.0, f32::NAN],
        [-1.0, -0.5, -0.5, -2.0]
    ];
    assert_eq!(argmax(x.view()).unwrap(), array![1, 0, 1, 1]);
    // bf16 rounding creates ties: 1.001 and 1.002 both round to 1.0 (ulp 2^-7).
    let b = array![[
        bf16::from_f32(0.5),
        bf16::from_f32(1.001),
        bf16::from_f32(1.002)
    ]];
    assert_eq!(argmax(b.view()).unwrap(), array![1]);
}

#[test]
fn softmax_argmax_bad_inputs() {
    assert_shape_err(softmax(Array2::<f32>::zeros((2, 0)).view()), "softmax", "x");
    assert_shape_err(argmax(Array2::<f32>::zeros((2, 0)).view()), "argmax", "x");
    assert_eq!(
        argmax(Array2::<f32>::zeros((0, 5)).view()).unwrap().len(),
        0
    );
}
