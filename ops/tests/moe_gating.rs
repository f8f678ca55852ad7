//! `moe_gating_topk`: hand-worked cases, the group-routing cross-checks, and bad input.
use dsnpu_ops::moe::{moe_gating_topk, GatingConfig, ScoreFunc};
use dsnpu_ops::OpsError;
use ndarray::{array, Array1, Array2};

fn cfg(
    top_k: usize,
    n_group: usize,
    topk_group: usize,
    score: ScoreFunc,
    normalize: bool,
    factor: f32,
) -> GatingConfig {
    GatingConfig {
        top_k,
        n_group,
        topk_group,
        score,
        normalize,
        routed_scaling_factor: factor,
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn assert_weights(got: &Array2<f32>, want: &[&[f64]]) {
    for (t, row) in want.iter().enumerate() {
        for (k, &w) in row.iter().enumerate() {
            let g = got[[t, k]] as f64;
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "weight [{t},{k}]: got {g}, want {w}"
            );
        }
    }
}

#[test]
fn softmax_top2_normalized_and_scaled() {
    // exp(logits) = [1, 2, 4, 1], sum 8: scores [1/8, 1/4, 1/2, 1/8]. Top-2 = experts 2 (1/2) and 1 (1/4).
    // Normalized: (1/2)/(3/4) = 2/3 and 1/3; ×2 → 4/3, 2/3.
    let logits = array![[0.0f32, 2f32.ln(), 4f32.ln(), 0.0]];
    let (ids, w) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(2, 1, 1, ScoreFunc::Softmax, true, 2.0),
    )
    .unwrap();
    assert_eq!(ids, array![[2, 1]]);
    assert_weights(&w, &[&[4.0 / 3.0, 2.0 / 3.0]]);
    // Not normalized: the raw probabilities times the factor.
    let (_, w) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(2, 1, 1, ScoreFunc::Softmax, false, 2.0),
    )
    .unwrap();
    assert_weights(&w, &[&[1.0, 0.5]]);
}

#[test]
fn ties_go_to_the_lowest_expert() {
    // All scores equal 1/4: the first two experts win, in index order; normalized weights 1/2 each.
    let logits = array![[1.0f32, 1.0, 1.0, 1.0], [0.0, 3.0, 3.0, 3.0]];
    let (ids, w) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(2, 1, 1, ScoreFunc::Softmax, true, 1.0),
    )
    .unwrap();
    assert_eq!(ids, array![[0, 1], [1, 2]]);
    assert_weights(&w, &[&[0.5, 0.5], &[0.5, 0.5]]);
}

#[test]
fn bias_changes_the_selection_but_not_the_weights() {
    // sigmoid([2, 0, 1, -1]) = [0.8808, 0.5, 0.7311, 0.2689].
    let logits = array![[2.0f32, 0.0, 1.0, -1.0]];
    let c = cfg(2, 1, 1, ScoreFunc::Sigmoid, true, 1.0);
    let (ids, w) = moe_gating_topk(logits.view(), None, &c).unwrap();
    assert_eq!(ids, array![[0, 2]]);
    let (s0, s1, s2) = (sigmoid(2.0), sigmoid(0.0), sigmoid(1.0));
    assert_weights(&w, &[&[s0 / (s0 + s2), s2 / (s0 + s2)]]);
    // Bias +0.5 on expert 1: selection scores [0.8808, 1.0, 0.7311, 0.2689] pick 1 then 0, but the weights
    // are the *unbiased* 0.5 and 0.8808, normalized.
    let bias = array![0.0f32, 0.5, 0.0, 0.0];
    let (ids, w) = moe_gating_topk(logits.view(), Some(bias.view()), &c).unwrap();
    assert_eq!(ids, array![[1, 0]]);
    assert_weights(&w, &[&[s1 / (s1 + s0), s0 / (s1 + s0)]]);
}

#[test]
fn group_limited_with_bias_uses_top2_sums() {
    // Logits 0 → every score 0.5; selection = 0.5 + bias. Groups of 2:
    //   g0 {0.6, 0.5} sum 1.10 | g1 {0.8, 0.2} sum 1.00 | g2 {0.55, 0.54} sum 1.09 | g3 {0.7, 0.3} sum 1.00
    // Keep 2 groups: g0, g2. Among experts {0, 1, 4, 5}: 0.6 (e0), 0.55 (e4) win, although e2 (0.8) and
    // e6 (0.7) are the global best. Weights 0.5/(0.5+0.5) × 2.5 = 1.25 each.
    let logits = Array2::<f32>::zeros((1, 8));
    let bias = array![0.1f32, 0.0, 0.3, -0.3, 0.05, 0.04, 0.2, -0.2];
    let (ids, w) = moe_gating_topk(
        logits.view(),
        Some(bias.view()),
        &cfg(2, 4, 2, ScoreFunc::Sigmoid, true, 2.5),
    )
    .unwrap();
    assert_eq!(ids, array![[0, 4]]);
    assert_weights(&w, &[&[1.25, 1.25]]);
    // Without the group limit the global best win.
    let (ids, _) = moe_gating_topk(
        logits.view(),
        Some(bias.view()),
        &cfg(2, 1, 1, ScoreFunc::Sigmoid, true, 2.5),
    )
    .unwrap();
    assert_eq!(ids, array![[2, 6]]);
}

#[test]
fn group_score_is_the_max_without_bias_and_the_top2_sum_with_one() {
    // Groups of 2: g0 logits {0, 3}, g1 {2, 2.5}, g2 {-1, 2.9}.
    let logits = array![[0.0f32, 3.0, 2.0, 2.5, -1.0, 2.9]];
    // No bias, group score = max: g0 (σ3) > g2 (σ2.9) > g1 (σ2.5). Keep 1 group → experts 1, 0.
    let (ids, w) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(2, 3, 1, ScoreFunc::Sigmoid, false, 1.0),
    )
    .unwrap();
    assert_eq!(ids, array![[1, 0]]);
    assert_weights(&w, &[&[sigmoid(3.0), sigmoid(0.0)]]);
    // Keep 2 groups → g0 and g2: experts 1 (σ3) and 5 (σ2.9).
    let (ids, _) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(2, 3, 2, ScoreFunc::Sigmoid, false, 1.0),
    )
    .unwrap();
    assert_eq!(ids, array![[1, 5]]);
    // A (zero) bias switches to top-2 sums: g0 0.5+0.9526 = 1.4526, g1 0.8808+0.9241 = 1.8049,
    // g2 0.2689+0.9478 = 1.2167 → keep g1 → experts 3 (σ2.5), 2 (σ2).
    let zero = Array1::<f32>::zeros(6);
    let (ids, w) = moe_gating_topk(
        logits.view(),
        Some(zero.view()),
        &cfg(2, 3, 1, ScoreFunc::Sigmoid, false, 1.0),
    )
    .unwrap();
    assert_eq!(ids, array![[3, 2]]);
    assert_weights(&w, &[&[sigmoid(2.5), sigmoid(2.0)]]);
}

#[test]
fn group_ties_go_to_the_lower_group() {
    // Both groups have max σ(1): keep group 0, so expert 1 is chosen rather than expert 2.
    let logits = array![[0.0f32, 1.0, 1.0, 0.0]];
    let (ids, _) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(1, 2, 1, ScoreFunc::Sigmoid, false, 1.0),
    )
    .unwrap();
    assert_eq!(ids, array![[1]]);
}

/// Plain top-k by an independent route: a stable sort of (score desc), which keeps ties in index order.
fn plain_topk(scores: &[f64], k: usize) -> Vec<i32> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
    idx[..k].iter().map(|&i| i as i32).collect()
}

#[test]
fn one_group_or_all_groups_kept_equals_plain_topk() {
    let mut rng = dsnpu_ops::conformance::cases::CaseRng::new(11);
    // Values on a 1/8 grid: many exact ties, no near-ties.
    let logits = rng.ints((20, 32), -16, 17).mapv(|v| v as f32 / 8.0);
    let bias = rng.ints(32, -2, 3).mapv(|v| v as f32 / 16.0);
    for (n_group, topk_group) in [(1, 1), (4, 4), (32, 32)] {
        let c = cfg(6, n_group, topk_group, ScoreFunc::Sigmoid, true, 1.0);
        let (ids, _) = moe_gating_topk(logits.view(), Some(bias.view()), &c).unwrap();
        for t in 0..20 {
            // The contract's f32 selection score; the ranking below is independent of the reference's.
            let sel: Vec<f64> = (0..32)
                .map(|e| (1.0 / (1.0 + (-logits[[t, e]]).exp()) + bias[e]) as f64)
                .collect();
            assert_eq!(
                ids.row(t).to_vec(),
                plain_topk(&sel, 6),
                "token {t}, {n_group} groups"
            );
        }
    }
}

#[test]
fn deepseek_v3_shape_picks_from_four_groups() {
    let mut rng = dsnpu_ops::conformance::cases::CaseRng::new(5);
    let logits: Array2<f32> = rng.uniform((8, 256), -4.0, 4.0);
    let bias: Array1<f32> = rng.uniform(256, -0.1, 0.1);
    let c = GatingConfig::deepseek_v3();
    let (ids, w) = moe_gating_topk(logits.view(), Some(bias.view()), &c).unwrap();
    for t in 0..8 {
        let mut groups: Vec<i32> = ids.row(t).iter().map(|&e| e / 32).collect();
        groups.sort_unstable();
        groups.dedup();
        assert!(groups.len() <= 4, "token {t} uses groups {groups:?}");
        // Normalized then ×2.5: the weights sum to 2.5.
        assert!((w.row(t).sum() - 2.5).abs() < 1e-5);
        let mut distinct = ids.row(t).to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 8);
    }
}

#[test]
fn half_precision_logits_are_read_exactly() {
    let logits = array![[
        half::bf16::from_f32(2.0),
        half::bf16::from_f32(0.0),
        half::bf16::from_f32(1.0)
    ]];
    let (ids, w) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(1, 1, 1, ScoreFunc::Sigmoid, false, 1.0),
    )
    .unwrap();
    assert_eq!(ids, array![[0]]);
    assert_weights(&w, &[&[sigmoid(2.0)]]);
}

#[test]
fn bad_configurations_are_typed_errors() {
    let logits = Array2::<f32>::zeros((2, 12));
    let bad = |c: GatingConfig, arg: &str| {
        let e = moe_gating_topk(logits.view(), None, &c).unwrap_err();
        assert!(
            matches!(&e, OpsError::InvalidArgument { op: "moe_gating_topk", arg: a, .. } if *a == arg),
            "{c:?}: {e}"
        );
    };
    bad(cfg(2, 5, 1, ScoreFunc::Sigmoid, true, 1.0), "n_group");
    bad(cfg(2, 0, 1, ScoreFunc::Sigmoid, true, 1.0), "n_group");
    bad(cfg(2, 4, 0, ScoreFunc::Sigmoid, true, 1.0), "topk_group");
    bad(cfg(2, 4, 5, ScoreFunc::Sigmoid, true, 1.0), "topk_group");
    bad(cfg(0, 1, 1, ScoreFunc::Sigmoid, true, 1.0), "top_k");
    bad(cfg(7, 4, 2, ScoreFunc::Sigmoid, true, 1.0), "top_k"); // only 2 groups × 3 experts survive
    bad(cfg(13, 1, 1, ScoreFunc::Sigmoid, true, 1.0), "top_k");
    bad(
        cfg(2, 1, 1, ScoreFunc::Sigmoid, true, f32::NAN),
        "routed_scaling_factor",
    );

    let c = cfg(2, 1, 1, ScoreFunc::Sigmoid, true, 1.0);
    let short = Array1::<f32>::zeros(11);
    let e = moe_gating_topk(logits.view(), Some(short.view()), &c).unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::Shape {
                op: "moe_gating_topk",
                arg: "bias",
                ..
            }
        ),
        "{e}"
    );
    let mut nan = logits.clone();
    nan[[1, 3]] = f32::NAN;
    let e = moe_gating_topk(nan.view(), None, &c).unwrap_err();
    assert!(
        matches!(e, OpsError::InvalidArgument { arg: "logits", .. }),
        "{e}"
    );
    let no_experts = Array2::<f32>::zeros((2, 0));
    assert!(moe_gating_topk(no_experts.view(), None, &c).is_err());
}

#[test]
fn zero_tokens_give_empty_outputs() {
    let logits = Array2::<f32>::zeros((0, 8));
    let (ids, w) = moe_gating_topk(
        logits.view(),
        None,
        &cfg(2, 2, 1, ScoreFunc::Softmax, true, 1.0),
    )
    .unwrap();
    assert_eq!((ids.dim(), w.dim()), ((0, 2), (0, 2)));
}
