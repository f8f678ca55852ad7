//! `moe_init_routing` and `moe_init_routing_quant`: hand-worked dispatches, the rounding rule, bad input.
use dsnpu_ops::moe::quant::{dynamic_quant_row, quantize};
use dsnpu_ops::moe::{moe_init_routing, moe_init_routing_quant, ExpertTokensMode};
use dsnpu_ops::OpsError;
use half::bf16;
use ndarray::{array, Array2};

/// x rows are [t, 10 t + 1, ...] so each row is recognisable.
fn tagged_x(tokens: usize, hidden: usize) -> Array2<f32> {
    Array2::from_shape_fn((tokens, hidden), |(t, h)| (10 * t + h) as f32)
}

// ids [[2,0],[0,2],[3,2]]: flat pairs i = t*K+k → experts [2,0,0,2,3,2].
// Stable by expert: e0: i1, i2 | e1: - | e2: i0, i3, i5 | e3: i4
// → rows: i1→0, i2→1, i0→2, i3→3, i5→4, i4→5.
#[test]
fn hand_worked_dispatch() {
    let x = tagged_x(3, 2);
    let ids = array![[2, 0], [0, 2], [3, 2]];
    let r = moe_init_routing(x.view(), ids.view(), 4, None, ExpertTokensMode::Count).unwrap();
    assert_eq!(r.expanded_row_idx, array![2, 0, 1, 3, 5, 4]);
    // Rows come from tokens [t(i1), t(i2), t(i0), t(i3), t(i5), t(i4)] = [0, 1, 0, 1, 2, 2].
    assert_eq!(
        r.expanded_x,
        array![
            [0., 1.],
            [10., 11.],
            [0., 1.],
            [10., 11.],
            [20., 21.],
            [20., 21.]
        ]
    );
    assert_eq!(r.expert_tokens, array![2, 0, 3, 1]);
    let c = moe_init_routing(x.view(), ids.view(), 4, None, ExpertTokensMode::Cumsum).unwrap();
    assert_eq!(c.expert_tokens, array![2, 2, 5, 6]);
    // The scatter convention: expanded_x[expanded_row_idx[t*K+k]] == x[t].
    for (i, &row) in r.expanded_row_idx.iter().enumerate() {
        assert_eq!(r.expanded_x.row(row as usize), x.row(i / 2));
    }
}

#[test]
fn active_range_drops_pairs_with_minus_one() {
    // Same ids, experts 2..4 active: i0→0, i3→1, i5→2 (expert 2), i4→3 (expert 3); i1, i2 dropped.
    let x = tagged_x(3, 2);
    let ids = array![[2, 0], [0, 2], [3, 2]];
    let r = moe_init_routing(x.view(), ids.view(), 4, Some(2..4), ExpertTokensMode::Count).unwrap();
    assert_eq!(r.expanded_row_idx, array![0, -1, -1, 1, 3, 2]);
    assert_eq!(
        r.expanded_x,
        array![[0., 1.], [10., 11.], [20., 21.], [20., 21.]]
    );
    assert_eq!(r.expert_tokens, array![0, 0, 3, 1]);
    let c = moe_init_routing(
        x.view(),
        ids.view(),
        4,
        Some(2..4),
        ExpertTokensMode::Cumsum,
    )
    .unwrap();
    assert_eq!(c.expert_tokens, array![0, 0, 3, 4]);
    // An empty range dispatches nothing.
    let e = moe_init_routing(x.view(), ids.view(), 4, Some(1..1), ExpertTokensMode::Count).unwrap();
    assert_eq!(e.expanded_x.dim(), (0, 2));
    assert_eq!(e.expanded_row_idx, array![-1, -1, -1, -1, -1, -1]);
    assert_eq!(e.expert_tokens, array![0, 0, 0, 0]);
}

#[test]
fn all_tokens_on_one_expert_keep_token_order() {
    let x = tagged_x(4, 3);
    let ids = array![[1], [1], [1], [1]];
    let r = moe_init_routing(x.view(), ids.view(), 3, None, ExpertTokensMode::Count).unwrap();
    assert_eq!(r.expanded_row_idx, array![0, 1, 2, 3]);
    assert_eq!(r.expanded_x, x);
    assert_eq!(r.expert_tokens, array![0, 4, 0]);
}

#[test]
fn half_precision_rows_are_copied_bit_for_bit() {
    let x = array![
        [bf16::from_f32(1.5), bf16::from_f32(-0.007_812_5)],
        [bf16::from_f32(3.0), bf16::MAX]
    ];
    let ids = array![[1, 0], [0, 1]];
    let r = moe_init_routing(x.view(), ids.view(), 2, None, ExpertTokensMode::Count).unwrap();
    // Experts: e0 ← i1 (t0), i2 (t1); e1 ← i0 (t0), i3 (t1).
    assert_eq!(r.expanded_row_idx, array![2, 0, 1, 3]);
    assert_eq!(r.expanded_x.row(1), x.row(1));
    assert_eq!(r.expanded_x.row(2), x.row(0));
}

#[test]
fn bad_routing_inputs_are_typed_errors() {
    let x = tagged_x(2, 4);
    let e = moe_init_routing(
        x.view(),
        array![[0, 1], [4, 2]].view(),
        4,
        None,
        ExpertTokensMode::Count,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::IndexOutOfRange {
                op: "moe_init_routing",
                arg: "ids",
                index: 4,
                position: 2,
                bound: 4
            }
        ),
        "{e}"
    );
    let e = moe_init_routing(
        x.view(),
        array![[0, -1], [1, 2]].view(),
        4,
        None,
        ExpertTokensMode::Count,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::IndexOutOfRange {
                index: -1,
                position: 1,
                ..
            }
        ),
        "{e}"
    );
    // An id outside the active range must still be a valid expert.
    let e = moe_init_routing(
        x.view(),
        array![[0, 9], [1, 2]].view(),
        4,
        Some(0..2),
        ExpertTokensMode::Count,
    );
    assert!(matches!(e, Err(OpsError::IndexOutOfRange { index: 9, .. })));
    let e = moe_init_routing(
        x.view(),
        array![[0, 1]].view(),
        4,
        None,
        ExpertTokensMode::Count,
    )
    .unwrap_err();
    assert!(matches!(e, OpsError::Shape { arg: "ids", .. }), "{e}");
    let e = moe_init_routing(
        x.view(),
        array![[0], [1]].view(),
        4,
        Some(3..5),
        ExpertTokensMode::Count,
    )
    .unwrap_err();
    assert!(
        matches!(e, OpsError::InvalidArgument { arg: "active", .. }),
        "{e}"
    );
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 3..2;
    let e = moe_init_routing(
        x.view(),
        array![[0], [1]].view(),
        4,
        Some(backwards),
        ExpertTokensMode::Count,
    );
    assert!(matches!(
        e,
        Err(OpsError::InvalidArgument { arg: "active", .. })
    ));
    let e = moe_init_routing(
        x.view(),
        array![[0], [1]].view(),
        0,
        None,
        ExpertTokensMode::Count,
    );
    assert!(matches!(
        e,
        Err(OpsError::InvalidArgument {
            arg: "num_experts",
            ..
        })
    ));
    let e = moe_init_routing_quant(
        x.view(),
        array![[0], [7]].view(),
        4,
        None,
        ExpertTokensMode::Count,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::IndexOutOfRange {
                op: "moe_init_routing_quant",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn quantization_rounds_half_away_from_zero() {
    // max |x| = 127 → scale 1: codes are x rounded half away from zero (half-to-even would give 2, -2, -64).
    let (q, s) = dynamic_quant_row(array![127.0f32, -63.5, 2.5, -2.5, 0.49, 100.2].view());
    assert_eq!(s, 1.0);
    assert_eq!(q, array![127i8, -64, 3, -3, 0, 100]);
    // max 254 → scale 2: 5/2 = 2.5 → 3, -3/2 = -1.5 → -2, 1/2 → 1.
    let (q, s) = dynamic_quant_row(array![254.0f32, 5.0, -3.0, 1.0].view());
    assert_eq!(s, 2.0);
    assert_eq!(q, array![127i8, 3, -2, 1]);
    // A negative maximum: -254 → -127.
    let (q, _) = dynamic_quant_row(array![-254.0f32, 2.0].view());
    assert_eq!(q, array![-127i8, 1]);
    // A zero row: scale 0, codes 0.
    let (q, s) = dynamic_quant_row(array![0.0f32, -0.0, 0.0].view());
    assert_eq!((s, q), (0.0, array![0i8, 0, 0]));
    // Never outside ±127, NaN maps to 0 without panicking.
    assert_eq!(quantize(1000.0, 1.0), 127);
    assert_eq!(quantize(-1000.0, 1.0), -127);
    assert_eq!(quantize(f32::NAN, 1.0), 0);
}

#[test]
fn quantized_dispatch_matches_the_plain_one() {
    // Token 0 has max 127 (scale 1), token 1 max 254 (scale 2).
    let x = array![[127.0f32, -63.5, 2.5], [254.0, 5.0, -3.0]];
    let ids = array![[1, 0], [0, 1]];
    let q =
        moe_init_routing_quant(x.view(), ids.view(), 2, None, ExpertTokensMode::Cumsum).unwrap();
    // Experts: e0 ← i1 (t0), i2 (t1); e1 ← i0 (t0), i3 (t1).
    assert_eq!(q.expanded_row_idx, array![2, 0, 1, 3]);
    assert_eq!(q.expert_tokens, array![2, 4]);
    assert_eq!(q.scales, array![1.0f32, 2.0, 1.0, 2.0]);
    assert_eq!(
        q.expanded_x,
        array![[127i8, -64, 3], [127, 3, -2], [127, -64, 3], [127, 3, -2]]
    );
    // With an active range the rows, scales and index follow the plain dispatch.
    let q = moe_init_routing_quant(x.view(), ids.view(), 2, Some(1..2), ExpertTokensMode::Count)
        .unwrap();
    let p = moe_init_routing(x.view(), ids.view(), 2, Some(1..2), ExpertTokensMode::Count).unwrap();
    assert_eq!(q.expanded_row_idx, p.expanded_row_idx);
    assert_eq!(q.expert_tokens, p.expert_tokens);
    assert_eq!(q.scales, array![1.0f32, 2.0]);
}

#[test]
fn dequantized_rows_are_within_half_a_step() {
    let mut rng = dsnpu_ops::conformance::cases::CaseRng::new(3);
    let x: Array2<f32> = rng.uniform((6, 7000), -3.0, 3.0);
    let ids = rng.ints((6, 8), 0, 256);
    let q =
        moe_init_routing_quant(x.view(), ids.view(), 256, None, ExpertTokensMode::Count).unwrap();
    for (i, &r) in q.expanded_row_idx.iter().enumerate() {
        let (t, r) = (i / 8, r as usize);
        let s = q.scales[r];
        let max = x.row(t).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(s, max / 127.0);
        for (&c, &v) in q.expanded_x.row(r).iter().zip(x.row(t)) {
            assert!(
                (c as f32 * s - v).abs() <= 0.5 * s * (1.0 + 1e-5),
                "{c}·{s} vs {v}"
            );
        }
    }
}
