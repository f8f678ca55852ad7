//! `moe_finalize_routing` and the whole chain: hand-worked combine, `finalize(init_routing(x)) = K·x`,
//! and `moe_layer` against a direct per-token formula.
use dsnpu_ops::moe::{
    grouped_matmul, moe_finalize_routing, moe_gating_topk, moe_init_routing, moe_layer,
    router_logits, ExpertTokensMode, GatingConfig, GroupListType, MoeLayerParams, ScoreFunc,
};
use dsnpu_ops::OpsError;
use half::bf16;
use ndarray::{array, s, Array1, Array2, Array3};

#[test]
fn hand_worked_combine() {
    // t0: 0.5·y[2] + 0.25·y[0] = [2.5 + 0.25, 3 + 0.5] = [2.75, 3.5]
    // t1: pair 0 dropped (-1), 2·y[1] = [6, 8]
    let y = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let idx = array![2, 0, -1, 1];
    let w = array![[0.5f32, 0.25], [0.9, 2.0]];
    let out = moe_finalize_routing(y.view(), idx.view(), w.view(), None, None).unwrap();
    assert_eq!(out, array![[2.75f32, 3.5], [6.0, 8.0]]);
    // + shared [[1, 1], [1, 1]] + residual [[0.5, 0], [0, -8]].
    let shared = array![[1.0f32, 1.0], [1.0, 1.0]];
    let residual = array![[0.5f32, 0.0], [0.0, -8.0]];
    let out = moe_finalize_routing(
        y.view(),
        idx.view(),
        w.view(),
        Some(shared.view()),
        Some(residual.view()),
    )
    .unwrap();
    assert_eq!(out, array![[4.25f32, 4.5], [7.0, 1.0]]);
    let out =
        moe_finalize_routing(y.view(), idx.view(), w.view(), None, Some(residual.view())).unwrap();
    assert_eq!(out, array![[3.25f32, 3.5], [6.0, 0.0]]);
}

#[test]
fn combine_accumulates_in_f32_and_rounds_once() {
    // bf16 steps by 2^-7 at 1. Four pairs each add 2^-9 · 1.0 and the residual adds 1: the f32 sum is
    // 1 + 2^-7, representable. Rounding to bf16 after every add would drop each 2^-9 (a quarter step)
    // and give 1.
    let y = array![[bf16::from_f32(1.0)]];
    let idx = array![0, 0, 0, 0];
    let w = array![[1.0f32 / 512.0; 4]];
    let residual = array![[bf16::from_f32(1.0)]];
    let out =
        moe_finalize_routing(y.view(), idx.view(), w.view(), None, Some(residual.view())).unwrap();
    assert_eq!(out[[0, 0]].to_f32(), 1.0 + 1.0 / 128.0);
}

#[test]
fn bad_combine_inputs_are_typed_errors() {
    let y = Array2::<f32>::zeros((3, 2));
    let w = Array2::<f32>::ones((2, 2));
    let e = moe_finalize_routing(y.view(), array![0, 1, 3, 2].view(), w.view(), None, None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::IndexOutOfRange {
                op: "moe_finalize_routing",
                index: 3,
                position: 2,
                bound: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = moe_finalize_routing(y.view(), array![0, 1, -2, 2].view(), w.view(), None, None)
        .unwrap_err();
    assert!(
        matches!(e, OpsError::IndexOutOfRange { index: -2, .. }),
        "{e}"
    );
    let e =
        moe_finalize_routing(y.view(), array![0, 1, 2].view(), w.view(), None, None).unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::Shape {
                arg: "expanded_row_idx",
                ..
            }
        ),
        "{e}"
    );
    let bad = Array2::<f32>::zeros((2, 3));
    let e = moe_finalize_routing(
        y.view(),
        array![0, 1, 1, 2].view(),
        w.view(),
        Some(bad.view()),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, OpsError::Shape { arg: "shared", .. }), "{e}");
    let e = moe_finalize_routing(
        y.view(),
        array![0, 1, 1, 2].view(),
        w.view(),
        None,
        Some(bad.view()),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            OpsError::Shape {
                arg: "residual",
                ..
            }
        ),
        "{e}"
    );
}

/// `E` identity matrices `[E, H, H]`: experts that return their input.
fn identity_experts(experts: usize, hidden: usize) -> Array3<f32> {
    Array3::from_shape_fn(
        (experts, hidden, hidden),
        |(_, n, k)| if n == k { 1.0 } else { 0.0 },
    )
}

#[test]
fn dispatch_identity_experts_combine_gives_k_times_x() {
    let mut rng = dsnpu_ops::conformance::cases::CaseRng::new(21);
    let (tokens, hidden, experts, k) = (13, 7, 16, 4);
    let x: Array2<f32> = rng.uniform((tokens, hidden), -2.0, 2.0);
    let mut ids = Array2::<i32>::zeros((tokens, k));
    for mut row in ids.rows_mut() {
        row.assign(&Array1::from_iter(
            rng.distinct(experts, k).into_iter().map(|e| e as i32),
        ));
    }
    for mode in [ExpertTokensMode::Count, ExpertTokensMode::Cumsum] {
        let r = moe_init_routing(x.view(), ids.view(), experts, None, mode).unwrap();
        let list_type = if mode == ExpertTokensMode::Count {
            GroupListType::Counts
        } else {
            GroupListType::Cumsum
        };
        let y = grouped_matmul(
            r.expanded_x.view(),
            identity_experts(experts, hidden).view(),
            r.expert_tokens.view(),
            list_type,
        )
        .unwrap();
        let ones = Array2::<f32>::ones((tokens, k));
        let out =
            moe_finalize_routing(y.view(), r.expanded_row_idx.view(), ones.view(), None, None)
                .unwrap();
        // K copies of small multiples of x: exact in f32 for K = 4.
        assert_eq!(out, &x * k as f32);
    }
    // With an active range, each token gets one copy per pair whose expert is active.
    let r = moe_init_routing(
        x.view(),
        ids.view(),
        experts,
        Some(4..10),
        ExpertTokensMode::Count,
    )
    .unwrap();
    let y = grouped_matmul(
        r.expanded_x.view(),
        identity_experts(6, hidden).view(),
        r.expert_tokens.slice(s![4..10]),
        GroupListType::Counts,
    )
    .unwrap();
    let out = moe_finalize_routing(
        y.view(),
        r.expanded_row_idx.view(),
        Array2::ones((tokens, k)).view(),
        None,
        None,
    )
    .unwrap();
    for t in 0..tokens {
        let active = ids.row(t).iter().filter(|&&e| (4..10).contains(&e)).count() as f32;
        assert_eq!(out.row(t), &x.row(t) * active);
    }
}

/// DeepSeek's expert in f64 for one token: down(silu(gate x) * up x), with the intermediate rounded to f32.
fn expert_f64(x: &[f64], wg: &Array2<f32>, wu: &Array2<f32>, wd: &Array2<f32>) -> Vec<f64> {
    let dot = |w: ndarray::ArrayView1<f32>, v: &[f64]| {
        w.iter().zip(v).map(|(a, b)| *a as f64 * b).sum::<f64>()
    };
    let h: Vec<f64> = wg
        .rows()
        .into_iter()
        .zip(wu.rows())
        .map(|(g, u)| {
            let g = dot(g, x);
            g / (1.0 + (-g).exp()) * dot(u, x)
        })
        .collect();
    wd.rows().into_iter().map(|d| dot(d, &h)).collect()
}

#[test]
fn moe_layer_matches_a_direct_per_token_formula() {
    let mut rng = dsnpu_ops::conformance::cases::CaseRng::new(33);
    let (tokens, hidden, experts, inter) = (6, 12, 8, 5);
    let x: Array2<f32> = rng.uniform((tokens, hidden), -1.0, 1.0);
    let router: Array2<f32> = rng.uniform((experts, hidden), -1.0, 1.0);
    let bias: Array1<f32> = rng.uniform(experts, -0.1, 0.1);
    let wg: Array3<f32> = rng.uniform((experts, inter, hidden), -0.5, 0.5);
    let wu: Array3<f32> = rng.uniform((experts, inter, hidden), -0.5, 0.5);
    let wd: Array3<f32> = rng.uniform((experts, hidden, inter), -0.5, 0.5);
    let shared: Array2<f32> = rng.uniform((tokens, hidden), -1.0, 1.0);
    let gating = GatingConfig {
        top_k: 3,
        n_group: 4,
        topk_group: 2,
        score: ScoreFunc::Sigmoid,
        normalize: true,
        routed_scaling_factor: 2.5,
    };
    for local in [None, Some(2..6)] {
        let n_local = local.as_ref().map_or(experts, |r| r.len());
        let first = local.as_ref().map_or(0, |r| r.start);
        let params = MoeLayerParams {
            router: router.view(),
            bias: Some(bias.view()),
            gating,
            w_gate: wg.slice(s![first..first + n_local, .., ..]),
            w_up: wu.slice(s![first..first + n_local, .., ..]),
            w_down: wd.slice(s![first..first + n_local, .., ..]),
            local: local.clone(),
        };
        let out = moe_layer(x.view(), &params, Some(shared.view()), None).unwrap();

        // The routing decision through the (separately tested) gate, then every expert applied per token.
        let logits = router_logits(x.view(), router.view()).unwrap();
        let (ids, w) = moe_gating_topk(logits.view(), Some(bias.view()), &gating).unwrap();
        for t in 0..tokens {
            let xt: Vec<f64> = x.row(t).iter().map(|&v| v as f64).collect();
            let mut want: Vec<f64> = shared.row(t).iter().map(|&v| v as f64).collect();
            for k in 0..3 {
                let e = ids[[t, k]] as usize;
                if local.as_ref().is_some_and(|r| !r.contains(&e)) {
                    continue;
                }
                let ye = expert_f64(
                    &xt,
                    &wg.slice(s![e, .., ..]).to_owned(),
                    &wu.slice(s![e, .., ..]).to_owned(),
                    &wd.slice(s![e, .., ..]).to_owned(),
                );
                for (acc, v) in want.iter_mut().zip(ye) {
                    *acc += w[[t, k]] as f64 * v;
                }
            }
            for (h, (&got, want)) in out.row(t).iter().zip(&want).enumerate() {
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "local {local:?} [{t},{h}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn router_logits_are_f32_products_of_the_rows() {
    // [1, 2] · [[3, 4], [-1, 0.5]]ᵀ = [11, 0]; bf16 inputs, f32 result without rounding to bf16.
    let x = array![[1.0f32, 2.0]].mapv(bf16::from_f32);
    let router = array![[3.0f32, 4.0], [-1.0, 0.5]].mapv(bf16::from_f32);
    assert_eq!(
        router_logits(x.view(), router.view()).unwrap(),
        array![[11.0f32, 0.0]]
    );
    let x = array![[1.0f32, 1.0 / 256.0]].mapv(bf16::from_f32);
    let router = array![[1.0f32, 1.0]].mapv(bf16::from_f32);
    // 1 + 2^-8 is not a bf16 but is kept as f32.
    assert_eq!(
        router_logits(x.view(), router.view()).unwrap(),
        array![[1.0 + 1.0 / 256.0]]
    );
    let bad = Array2::<bf16>::zeros((2, 3));
    assert!(matches!(
        router_logits(x.view(), bad.view()),
        Err(OpsError::Shape { arg: "router", .. })
    ));
}

#[test]
fn moe_layer_rejects_weights_for_the_wrong_number_of_experts() {
    let x = Array2::<f32>::zeros((2, 4));
    let router = Array2::<f32>::zeros((8, 4));
    let w = Array3::<f32>::zeros((3, 2, 4));
    let wd = Array3::<f32>::zeros((3, 4, 2));
    let gating = GatingConfig {
        top_k: 2,
        n_group: 1,
        topk_group: 1,
        score: ScoreFunc::Softmax,
        normalize: true,
        routed_scaling_factor: 1.0,
    };
    let mut params = MoeLayerParams {
        router: router.view(),
        bias: None,
        gating,
        w_gate: w.view(),
        w_up: w.view(),
        w_down: wd.view(),
        local: None,
    };
    assert!(matches!(
        moe_layer(x.view(), &params, None, None),
        Err(OpsError::Shape { arg: "w_gate", .. })
    ));
    params.local = Some(0..3);
    assert!(moe_layer(x.view(), &params, None, None).is_ok());
    params.local = Some(6..9);
    assert!(matches!(
        moe_layer(x.view(), &params, None, None),
        Err(OpsError::InvalidArgument { arg: "local", .. })
    ));
    let router4 = Array2::<f32>::zeros((8, 5));
    params.router = router4.view();
    params.local = Some(0..3);
    assert!(matches!(
        moe_layer(x.view(), &params, None, None),
        Err(OpsError::Shape { arg: "router", .. })
    ));
}
