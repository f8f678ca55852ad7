//! `grouped_matmul` and `expert_ffn`: hand-worked products, the intermediate rounding, bad group lists.
use dsnpu_ops::moe::{expert_ffn, grouped_matmul, GroupListType};
use dsnpu_ops::OpsError;
use half::{bf16, f16};
use ndarray::{array, Array2, Array3};

#[test]
fn hand_worked_grouped_matmul() {
    // w0 = identity, w1 = [[1, 1], [2, -1]]. Group 0 = row 0, group 1 = rows 1..3.
    // y0 = [1, 2]; y1 = [3+4, 6-4] = [7, 2]; y2 = [5+6, 10-6] = [11, 4].
    let x = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let w = array![[[1.0f32, 0.0], [0.0, 1.0]], [[1.0, 1.0], [2.0, -1.0]]];
    let want = array![[1.0f32, 2.0], [7.0, 2.0], [11.0, 4.0]];
    assert_eq!(
        grouped_matmul(
            x.view(),
            w.view(),
            array![1, 2].view(),
            GroupListType::Counts
        )
        .unwrap(),
        want
    );
    assert_eq!(
        grouped_matmul(
            x.view(),
            w.view(),
            array![1, 3].view(),
            GroupListType::Cumsum
        )
        .unwrap(),
        want
    );
    // An empty first group: every row uses w1. y0 = [1+2, 2-2] = [3, 0].
    let y = grouped_matmul(
        x.view(),
        w.view(),
        array![0, 3].view(),
        GroupListType::Counts,
    )
    .unwrap();
    assert_eq!(y, array![[3.0f32, 0.0], [7.0, 2.0], [11.0, 4.0]]);
}

#[test]
fn output_width_differs_from_input_width() {
    // w [1, 3, 2]: y = [x0, x1, x0 + x1].
    let x = array![[bf16::from_f32(1.5), bf16::from_f32(-2.0)]];
    let w = array![[[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]].mapv(bf16::from_f32);
    let y = grouped_matmul(x.view(), w.view(), array![1].view(), GroupListType::Counts).unwrap();
    assert_eq!(y.mapv(f32::from), array![[1.5f32, -2.0, -0.5]]);
}

#[test]
fn grouped_matmul_matches_a_per_row_f64_product() {
    let mut rng = dsnpu_ops::conformance::cases::CaseRng::new(9);
    let x: Array2<f32> = rng.uniform((11, 13), -1.0, 1.0);
    let w: Array3<f32> = rng.uniform((4, 5, 13), -1.0, 1.0);
    let counts = [3i64, 0, 6, 2];
    let y = grouped_matmul(
        x.view(),
        w.view(),
        ndarray::Array1::from(counts.to_vec()).view(),
        GroupListType::Counts,
    )
    .unwrap();
    let group_of: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(e, &c)| (0..c).map(move |_| e))
        .collect();
    for r in 0..11 {
        for n in 0..5 {
            let want: f64 = (0..13)
                .map(|k| x[[r, k]] as f64 * w[[group_of[r], n, k]] as f64)
                .sum();
            assert!((y[[r, n]] as f64 - want).abs() < 1e-5, "[{r},{n}]");
        }
    }
}

/// An FFN whose output row 0 is `h0 - h1`, where `h0 = silu(x0)·x1` and `h1 = 187/128` exactly:
/// channel 1 has gate 32·x0 (silu(32) = 32 in f32, since e^-32 vanishes next to 1) and up (187/4096)·x0.
/// With x = [1, 2], h0 = 2·silu(1) = 1.46211716…; row 1 is `h0`.
fn cancelling_ffn<T: dsnpu_ops::Float>() -> (Array2<T>, Array3<T>, Array3<T>, Array3<T>) {
    let x = array![[1.0f32, 2.0]].mapv(T::from_f32);
    let gate = array![[[1.0f32, 0.0], [32.0, 0.0]]].mapv(T::from_f32);
    let up = array![[[0.0f32, 1.0], [187.0 / 4096.0, 0.0]]].mapv(T::from_f32);
    let down = array![[[1.0f32, -1.0], [1.0, 0.0]]].mapv(T::from_f32);
    (x, gate, up, down)
}

#[test]
fn expert_ffn_rounds_the_intermediate_to_t_once() {
    let h0 = 2.0 / (1.0 + (-1.0f64).exp()); // 1.4621171572600098
    let h1 = 187.0 / 128.0; // 1.4609375
    let gl = array![1i64];

    // f32: no rounding to speak of: [h0 - h1, h0].
    let (x, g, u, d) = cancelling_ffn::<f32>();
    let y = expert_ffn(
        x.view(),
        g.view(),
        u.view(),
        d.view(),
        gl.view(),
        GroupListType::Counts,
    )
    .unwrap();
    assert!((y[[0, 0]] as f64 - (h0 - h1)).abs() < 1e-6, "{}", y[[0, 0]]);
    assert!((y[[0, 1]] as f64 - h0).abs() < 1e-6);

    // bf16: h0 is stored as bf16(1.46211…) = 187/128, so row 0 cancels to exactly 0 (it would be ≈1.2e-3
    // without the intermediate rounding).
    let (x, g, u, d) = cancelling_ffn::<bf16>();
    let y = expert_ffn(
        x.view(),
        g.view(),
        u.view(),
        d.view(),
        gl.view(),
        GroupListType::Counts,
    )
    .unwrap();
    assert_eq!(y[[0, 0]].to_f32(), 0.0);
    assert_eq!(y[[0, 1]].to_f32(), 1.4609375);

    // f16: h0 is stored as 1497/1024, so row 0 is 1497/1024 - 1496/1024 = 2^-10 exactly.
    let (x, g, u, d) = cancelling_ffn::<f16>();
    let y = expert_ffn(
        x.view(),
        g.view(),
        u.view(),
        d.view(),
        gl.view(),
        GroupListType::Counts,
    )
    .unwrap();
    assert_eq!(y[[0, 0]].to_f32(), 1.0 / 1024.0);
    assert_eq!(y[[0, 1]].to_f32(), 1497.0 / 1024.0);
}

#[test]
fn expert_ffn_uses_each_rows_expert() {
    // H = 1, I = 1: y = down·silu(gate·x)·(up·x). Expert 0: gate 1, up 1, down 1 → silu(x)·x.
    // Expert 1: gate 0 → silu(0) = 0 → y = 0. Expert 2 (empty). Rows: [2] on e0, [3] on e1.
    let x = array![[2.0f32], [3.0]];
    let gate = array![[[1.0f32]], [[0.0]], [[5.0]]];
    let up = array![[[1.0f32]], [[1.0]], [[5.0]]];
    let down = array![[[1.0f32]], [[1.0]], [[5.0]]];
    let y = expert_ffn(
        x.view(),
        gate.view(),
        up.view(),
        down.view(),
        array![1, 1, 0].view(),
        GroupListType::Counts,
    )
    .unwrap();
    let silu2 = 2.0 / (1.0 + (-2.0f64).exp());
    assert!((y[[0, 0]] as f64 - silu2 * 2.0).abs() < 1e-6);
    assert_eq!(y[[1, 0]], 0.0);
}

#[test]
fn bad_group_lists_are_typed_errors() {
    let x = Array2::<f32>::zeros((4, 3));
    let w = Array3::<f32>::zeros((2, 5, 3));
    let bad = |gl: ndarray::Array1<i64>, t: GroupListType| {
        grouped_matmul(x.view(), w.view(), gl.view(), t).unwrap_err()
    };
    let is_invalid = |e: &OpsError| {
        matches!(
            e,
            OpsError::InvalidArgument {
                op: "grouped_matmul",
                arg: "group_list",
                ..
            }
        )
    };
    assert!(is_invalid(&bad(array![1, 2], GroupListType::Counts))); // sums to 3, R = 4
    assert!(is_invalid(&bad(array![3, 2], GroupListType::Counts))); // sums to 5
    assert!(is_invalid(&bad(array![-1, 5], GroupListType::Counts)));
    assert!(is_invalid(&bad(array![3, 2], GroupListType::Cumsum))); // decreasing
    assert!(is_invalid(&bad(array![-1, 4], GroupListType::Cumsum)));
    assert!(is_invalid(&bad(array![1, 3], GroupListType::Cumsum))); // ends at 3
    assert!(is_invalid(&bad(
        array![i64::MAX, i64::MAX],
        GroupListType::Counts
    )));
    let e = bad(array![1, 1, 2], GroupListType::Counts);
    assert!(
        matches!(
            e,
            OpsError::Shape {
                arg: "group_list",
                ..
            }
        ),
        "{e}"
    );
    // Weight inner dimension must equal x's width.
    let w4 = Array3::<f32>::zeros((2, 5, 4));
    let e = grouped_matmul(
        x.view(),
        w4.view(),
        array![2, 2].view(),
        GroupListType::Counts,
    )
    .unwrap_err();
    assert!(matches!(e, OpsError::Shape { arg: "w", .. }), "{e}");
    // expert_ffn: down projection shape.
    let g = Array3::<f32>::zeros((2, 6, 3));
    let d = Array3::<f32>::zeros((2, 6, 3));
    let e = expert_ffn(
        x.view(),
        g.view(),
        g.view(),
        d.view(),
        array![2, 2].view(),
        GroupListType::Counts,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::Shape {
                op: "expert_ffn",
                arg: "w_down",
                ..
            }
        ),
        "{e}"
    );
    let e = expert_ffn(
        x.view(),
        g.view(),
        w.view(),
        d.view(),
        array![2, 2].view(),
        GroupListType::Counts,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::Shape {
                op: "expert_ffn",
                arg: "w_up",
                ..
            }
        ),
        "{e}"
    );
}
