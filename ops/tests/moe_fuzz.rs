//! Random shapes, indices and configurations through every MoE operator: each returns `Ok` or a typed
//! error, never panics. When an operator accepts its input, the output has the documented shape.
use dsnpu_ops::moe::{
    expert_ffn, grouped_matmul, moe_finalize_routing, moe_gating_topk, moe_init_routing,
    moe_init_routing_quant, moe_layer, ExpertTokensMode, GroupListType, MoeLayerParams,
};
use ndarray::{Array1, Array2, Array3};
use proptest::prelude::*;

mod moe_inputs;
use moe_inputs::{gating_config, matrix};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn gating_never_panics(
        (t, e) in (0usize..5, 0usize..13),
        seed in matrix(5, 13),
        bias_len in 0usize..14,
        cfg in gating_config(),
    ) {
        let logits = seed.slice(ndarray::s![..t, ..e]).to_owned();
        let bias = Array1::from_iter((0..bias_len).map(|i| i as f32 * 0.01));
        let use_bias = bias_len % 2 == 0;
        if let Ok((ids, w)) = moe_gating_topk(logits.view(), use_bias.then(|| bias.view()), &cfg) {
            prop_assert_eq!(ids.dim(), (t, cfg.top_k));
            prop_assert_eq!(w.dim(), (t, cfg.top_k));
            prop_assert!(ids.iter().all(|&i| i >= 0 && (i as usize) < e));
        }
    }

    #[test]
    fn dispatch_never_panics(
        (t, h, k) in (0usize..6, 0usize..5, 0usize..4),
        ids in proptest::collection::vec(-2i32..10, 24),
        experts in 0usize..9,
        active in proptest::option::of((0usize..10, 0usize..10)),
        extra_row in any::<bool>(),
        x in matrix(6, 5),
    ) {
        let x = x.slice(ndarray::s![..t, ..h]).to_owned();
        let id_rows = if extra_row { t + 1 } else { t };
        let ids = Array2::from_shape_vec((id_rows, k), ids[..id_rows * k].to_vec()).unwrap();
        let active = active.map(|(a, b)| a..b);
        let plain = moe_init_routing(x.view(), ids.view(), experts, active.clone(), ExpertTokensMode::Cumsum);
        let quant = moe_init_routing_quant(x.view(), ids.view(), experts, active, ExpertTokensMode::Count);
        prop_assert_eq!(plain.is_ok(), quant.is_ok());
        if let (Ok(p), Ok(q)) = (plain, quant) {
            let rows = p.expert_tokens.last().copied().unwrap_or(0) as usize;
            prop_assert_eq!(p.expanded_x.dim(), (rows, h));
            prop_assert_eq!(q.expanded_x.dim(), (rows, h));
            prop_assert_eq!(p.expanded_row_idx, q.expanded_row_idx);
        }
    }

    #[test]
    fn grouped_never_panics(
        (r, k, n, e) in (0usize..6, 0usize..4, 0usize..4, 0usize..4),
        gl in proptest::collection::vec(-2i64..7, 0..5),
        cumsum in any::<bool>(),
        x in matrix(6, 4),
        wk in 0usize..5,
    ) {
        let x = x.slice(ndarray::s![..r, ..k]).to_owned();
        let w = Array3::<f32>::ones((e, n, wk));
        let gl = Array1::from(gl);
        let lt = if cumsum { GroupListType::Cumsum } else { GroupListType::Counts };
        if let Ok(y) = grouped_matmul(x.view(), w.view(), gl.view(), lt) {
            prop_assert_eq!(y.dim(), (r, n));
        }
        let wd = Array3::<f32>::ones((e, wk, n));
        if let Ok(y) = expert_ffn(x.view(), w.view(), w.view(), wd.view(), gl.view(), lt) {
            prop_assert_eq!(y.dim(), (r, k));
        }
    }

    #[test]
    fn combine_never_panics(
        (r, h, t, k) in (0usize..5, 0usize..4, 0usize..4, 0usize..4),
        idx in proptest::collection::vec(-3i32..7, 0..14),
        shared_rows in proptest::option::of(0usize..5),
        y in matrix(5, 4),
    ) {
        let y = y.slice(ndarray::s![..r, ..h]).to_owned();
        let w = Array2::<f32>::ones((t, k));
        let shared = shared_rows.map(|rows| Array2::<f32>::zeros((rows, h)));
        if let Ok(out) = moe_finalize_routing(y.view(), Array1::from(idx).view(), w.view(), shared.as_ref().map(|s| s.view()), None) {
            prop_assert_eq!(out.dim(), (t, h));
        }
    }

    #[test]
    fn layer_never_panics(
        (t, h, e, i, e_local) in (0usize..4, 1usize..5, 1usize..9, 0usize..3, 0usize..9),
        local in proptest::option::of((0usize..9, 0usize..9)),
        cfg in gating_config(),
        x in matrix(4, 4),
    ) {
        let x = x.slice(ndarray::s![..t, ..h.min(4)]).to_owned();
        let router = Array2::<f32>::ones((e, h));
        let w = Array3::<f32>::ones((e_local, i, h));
        let wd = Array3::<f32>::ones((e_local, h, i));
        let params = MoeLayerParams {
            router: router.view(),
            bias: None,
            gating: cfg,
            w_gate: w.view(),
            w_up: w.view(),
            w_down: wd.view(),
            local: local.map(|(a, b)| a..b),
        };
        if let Ok(out) = moe_layer(x.view(), &params, None, None) {
            prop_assert_eq!(out.dim(), (t, h));
        }
    }
}
