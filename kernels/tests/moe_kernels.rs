//! The MoE kernels on hand-worked cases and at DeepSeek-V3 scale, against independent arithmetic and
//! against dsnpu-ops' CPU references: ids, row indices, counts and copied rows exactly; int8 codes and
//! scales exactly (the kernel rounds as `ops::moe::quant` does); combine bit-exactly (the same f32
//! operations in the same order); values of the GEMM paths within `Tolerance`. Every launch is checked
//! clean by the sanitizer (no fault, no warning) inside `moe_common`.
mod common;
mod moe_common;

use dsnpu_kernels::{CoreBudget, GatingParams, MoeInitRoutingTiling, MoeList, MoeScore};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::moe::{
    gating_inputs, routing_ids, well_separated, GatingCase, IdDraw, LogitDraw, RoutingCase,
};
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::half::{bf16, f16};
use dsnpu_ops::moe::{
    self, ExpertTokensMode, GatingConfig, GroupListType, MoeLayerParams, ScoreFunc,
};
use dsnpu_ops::ndarray::{Array1, Array2, Array3, ArrayView2};
use dsnpu_ops::Float;
use moe_common::MoeDevice;

const UB: u32 = common::UB_910B;

/// Eight vector cores and four cube cores: enough to split every case several ways.
const DEV: MoeDevice = MoeDevice {
    vector: CoreBudget {
        cores: 8,
        ub_bytes: UB,
    },
    cube: CoreBudget {
        cores: 4,
        ub_bytes: UB,
    },
};

fn sigmoid_params(
    top_k: u64,
    n_group: u64,
    topk_group: u64,
    has_bias: bool,
    factor: f32,
) -> GatingParams {
    GatingParams {
        top_k,
        n_group,
        topk_group,
        score: MoeScore::Sigmoid,
        has_bias,
        normalize: true,
        routed_scaling_factor: factor,
    }
}

fn params_of(cfg: &GatingConfig, has_bias: bool) -> GatingParams {
    GatingParams {
        top_k: cfg.top_k as u64,
        n_group: cfg.n_group as u64,
        topk_group: cfg.topk_group as u64,
        score: match cfg.score {
            ScoreFunc::Softmax => MoeScore::Softmax,
            ScoreFunc::Sigmoid => MoeScore::Sigmoid,
        },
        has_bias,
        normalize: cfg.normalize,
        routed_scaling_factor: cfg.routed_scaling_factor,
    }
}

fn flat<T: Copy>(a: ArrayView2<T>) -> Vec<T> {
    a.iter().copied().collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn gating_ties_go_to_the_lowest_group_and_expert() {
    // Every logit 0: every score 0.5, every group (2 experts) scores 1.0 with a bias. Groups 0 and 1
    // survive, the top-3 are experts 0, 1, 2, each weighing 0.5 / 1.5 (normalised) x 2.5.
    let p = sigmoid_params(3, 4, 2, true, 2.5);
    let (ids, w, _) = DEV
        .gating(&[0.0f32; 16], 2, 8, Some(&[0.0; 8]), &p)
        .unwrap();
    assert_eq!(ids, vec![0, 1, 2, 0, 1, 2]);
    let want = 0.5f32 / (1.5f32 + 1e-20) * 2.5;
    assert_eq!(w, vec![want; 6]);
}

#[test]
fn gating_group_rules_with_and_without_bias() {
    // Group 0 = [2, 0, 0, 0], group 1 = [1, 1, 0, 0]. With a (zero) bias a group scores its top-2 sum:
    // s(2) + s(0) = 1.381 < 2 s(1) = 1.462, so group 1 survives and the picks are 4 then 5 (a tie, the
    // lower first), 0.5 each. Without a bias a group scores its max: s(2) > s(1), group 0 survives and
    // the picks are 0 then 1 (1, 2, 3 tie at s(0); the lowest wins).
    let logits = [2.0f32, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let (ids, w, _) = DEV
        .gating(
            &logits,
            1,
            8,
            Some(&[0.0; 8]),
            &sigmoid_params(2, 2, 1, true, 1.0),
        )
        .unwrap();
    assert_eq!(ids, vec![4, 5]);
    assert_eq!(w, vec![0.5, 0.5]);
    let (ids, w, _) = DEV
        .gating(&logits, 1, 8, None, &sigmoid_params(2, 2, 1, false, 1.0))
        .unwrap();
    assert_eq!(ids, vec![0, 1]);
    let (s2, s0) = (sigmoid(2.0), sigmoid(0.0));
    for (got, want) in w.iter().zip([s2 / (s2 + s0), s0 / (s2 + s0)]) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
    // A bias steers the choice but never enters the weights: +1 on expert 7 makes it the first pick
    // (group 1 now sums s(1) + s(0) + 1), with its unbiased score.
    let mut bias = [0.0f32; 8];
    bias[7] = 1.0;
    let mut p = sigmoid_params(2, 2, 1, true, 1.0);
    p.normalize = false;
    let (ids, w, _) = DEV.gating(&logits, 1, 8, Some(&bias), &p).unwrap();
    assert_eq!(ids, vec![7, 4]);
    assert!((f64::from(w[0]) - 0.5).abs() < 1e-7 && (f64::from(w[1]) - sigmoid(1.0)).abs() < 1e-6);
}

#[test]
fn gating_softmax_plain_top_k() {
    // Softmax of [1, 3, 2, 3]: experts 1 and 3 tie at the top (1 first); both weigh 1 / (e^-2 + 1 + e^-1 + 1).
    let p = GatingParams {
        top_k: 2,
        n_group: 1,
        topk_group: 1,
        score: MoeScore::Softmax,
        has_bias: false,
        normalize: false,
        routed_scaling_factor: 1.0,
    };
    let (ids, w, _) = DEV
        .gating(&[1.0f32, 3.0, 2.0, 3.0], 1, 4, None, &p)
        .unwrap();
    assert_eq!(ids, vec![1, 3]);
    let want = 1.0 / ((-2.0f64).exp() + 1.0 + (-1.0f64).exp() + 1.0);
    for got in w {
        assert!((f64::from(got) - want).abs() < 1e-7, "{got} vs {want}");
    }
}

fn gating_deepseek<T: Float>(tokens: usize) {
    let case = GatingCase {
        tokens,
        experts: 256,
        cfg: GatingConfig::deepseek_v3(),
        bias: true,
        draw: LogitDraw::Uniform,
    };
    let mut rng = CaseRng::new(0x6A7E);
    let (logits, bias) = gating_inputs::<T>(&mut rng, &case);
    let bias = bias.unwrap();
    let (want_ids, want_w) =
        moe::moe_gating_topk(logits.view(), Some(bias.view()), &case.cfg).unwrap();
    let (ids, w, launch) = DEV
        .gating(
            &flat(logits.view()),
            tokens,
            256,
            bias.as_slice(),
            &params_of(&case.cfg, true),
        )
        .unwrap();
    // ceil(T / 8) tokens per block.
    assert_eq!(launch.blocks as usize, tokens.div_ceil(tokens.div_ceil(8)));
    assert_eq!(ids, flat(want_ids.view()));
    assert_close(
        "weights",
        Array1::from(w).view(),
        Array1::from(flat(want_w.view())).view(),
        Tolerance::of::<T>(),
    );
}

#[test]
fn gating_deepseek_v3_512_tokens() {
    // 256 experts in 8 groups keeping 4, top-8, sigmoid + bias, x2.5: prefill and decode.
    gating_deepseek::<bf16>(512);
    gating_deepseek::<f32>(1);
    gating_deepseek::<f16>(33);
}

/// Dispatch `case` with the kernel and the reference; everything must match exactly.
fn dispatch_matches<T: Float>(
    case: &RoutingCase,
    mode: ExpertTokensMode,
    dev: &MoeDevice,
) -> MoeInitRoutingTiling {
    let mut rng = CaseRng::new(0xD15 + case.tokens as u64);
    let x: Array2<T> = rng.uniform((case.tokens, case.hidden), -2.0, 2.0);
    let ids = routing_ids(&mut rng, case);
    let want = moe::moe_init_routing(
        x.view(),
        ids.view(),
        case.experts,
        case.active.clone(),
        mode,
    )
    .unwrap();
    let list = match mode {
        ExpertTokensMode::Count => MoeList::Count,
        ExpertTokensMode::Cumsum => MoeList::Cumsum,
    };
    let got = dev
        .init_routing(
            &flat(x.view()),
            case.tokens,
            case.hidden,
            &flat(ids.view()),
            case.top_k,
            case.experts,
            case.active.clone(),
            list,
        )
        .unwrap();
    assert_eq!(
        got.expanded_row_idx,
        want.expanded_row_idx.to_vec(),
        "{case:?}"
    );
    assert_eq!(got.expert_tokens, want.expert_tokens.to_vec(), "{case:?}");
    assert_eq!(got.rows, want.expanded_x.nrows(), "{case:?}");
    let same = got
        .expanded_x
        .iter()
        .zip(want.expanded_x.iter())
        .all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
    assert!(same, "{case:?}: expanded_x differs");
    got.tiling
}

fn routing(
    tokens: usize,
    hidden: usize,
    top_k: usize,
    experts: usize,
    active: Option<std::ops::Range<usize>>,
    ids: IdDraw,
) -> RoutingCase {
    RoutingCase {
        tokens,
        hidden,
        top_k,
        experts,
        active,
        ids,
    }
}

#[test]
fn dispatch_deepseek_prefill_and_decode() {
    // 512 tokens x top-8 of 256 experts, hidden 7168: 4096 rows over 8 blocks.
    let t = dispatch_matches::<bf16>(
        &routing(512, 7168, 8, 256, None, IdDraw::Distinct),
        ExpertTokensMode::Count,
        &DEV,
    );
    assert_eq!(t.block_dim(), 8);
    // Decode, hidden 7000 (not a multiple of the 32-byte block), an expert-parallel rank's range.
    dispatch_matches::<f16>(
        &routing(1, 7000, 8, 256, Some(96..128), IdDraw::Distinct),
        ExpertTokensMode::Cumsum,
        &DEV,
    );
    dispatch_matches::<f32>(
        &routing(64, 7000, 8, 256, Some(0..32), IdDraw::Distinct),
        ExpertTokensMode::Cumsum,
        &DEV,
    );
    // K = 1; odd experts get no tokens.
    dispatch_matches::<f32>(
        &routing(37, 33, 1, 16, None, IdDraw::EvenOnly),
        ExpertTokensMode::Count,
        &DEV,
    );
    dispatch_matches::<bf16>(
        &routing(37, 33, 2, 16, Some(3..9), IdDraw::EvenOnly),
        ExpertTokensMode::Cumsum,
        &DEV,
    );
}

#[test]
fn dispatch_all_pairs_on_one_expert_keeps_pair_order() {
    // Every pair on expert 3: row r holds pair r (stable), so expanded_row_idx is 0, 1, 2, ... across
    // every block, and expert 3 counts all 800 pairs.
    let (tokens, top_k, hidden) = (100, 8, 24);
    let x: Vec<f32> = (0..tokens * hidden).map(|i| i as f32).collect();
    let ids = vec![3; tokens * top_k];
    let d = DEV
        .init_routing(&x, tokens, hidden, &ids, top_k, 16, None, MoeList::Count)
        .unwrap();
    assert_eq!(d.expanded_row_idx, (0..800).collect::<Vec<i32>>());
    let mut counts = vec![0i64; 16];
    counts[3] = 800;
    assert_eq!(d.expert_tokens, counts);
    for r in 0..800 {
        let t = r / top_k;
        assert_eq!(
            &d.expanded_x[r * hidden..(r + 1) * hidden],
            &x[t * hidden..(t + 1) * hidden]
        );
    }
    // The same with expert 3 outside the active range: nothing dispatched, every index -1.
    let d = DEV
        .init_routing(
            &x,
            tokens,
            hidden,
            &ids,
            top_k,
            16,
            Some(4..16),
            MoeList::Cumsum,
        )
        .unwrap();
    assert_eq!(d.rows, 0);
    assert_eq!(d.expanded_row_idx, vec![-1; 800]);
    assert_eq!(d.expert_tokens, vec![0; 16]);
}

#[test]
fn dispatch_streams_ids_in_chunks_under_a_tight_budget() {
    // 3000 tokens over 3 blocks with 16 KiB of UB: each block reloads its ids chunk by chunk for the
    // scatter, and moves x in tiles smaller than a chunk.
    let dev = MoeDevice {
        vector: CoreBudget {
            cores: 3,
            ub_bytes: 16 * 1024,
        },
        cube: DEV.cube,
    };
    let t = dispatch_matches::<f16>(
        &routing(3000, 40, 8, 64, Some(8..56), IdDraw::Distinct),
        ExpertTokensMode::Cumsum,
        &dev,
    );
    assert!(t.tokens_per_chunk < t.tokens_per_block, "{t:?}");
    assert!(t.tokens_per_tile < t.tokens_per_chunk, "{t:?}");
}

fn quant_matches<T: Float>(tokens: usize, hidden: usize, active: Option<std::ops::Range<usize>>) {
    let case = routing(tokens, hidden, 8, 256, active, IdDraw::Distinct);
    let mut rng = CaseRng::new(0x18 + tokens as u64);
    let mut x: Array2<T> = rng.uniform((tokens, hidden), -2.0, 2.0);
    // A zero row (scale 0) and a row with one dominant element.
    x.row_mut(0).fill(T::from_f32(0.0));
    if tokens > 1 {
        x[[1, 5]] = T::from_f32(-100.0);
    }
    let ids = routing_ids(&mut rng, &case);
    let want = moe::moe_init_routing_quant(
        x.view(),
        ids.view(),
        256,
        case.active.clone(),
        ExpertTokensMode::Count,
    )
    .unwrap();
    let got = DEV
        .init_routing_quant(
            &flat(x.view()),
            tokens,
            hidden,
            &flat(ids.view()),
            8,
            256,
            case.active.clone(),
            MoeList::Count,
        )
        .unwrap();
    assert_eq!(got.expanded_row_idx, want.expanded_row_idx.to_vec());
    assert_eq!(got.expert_tokens, want.expert_tokens.to_vec());
    assert_eq!(got.expanded_x, flat(want.expanded_x.view()), "codes");
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got.scales), bits(&want.scales.to_vec()), "scales");
}

#[test]
fn int8_dispatch_rounds_like_the_reference() {
    quant_matches::<bf16>(64, 7168, None);
    quant_matches::<f32>(3, 7000, Some(224..256));
    quant_matches::<f16>(1, 7168, None);
}

#[test]
fn expert_ffn_at_deepseek_hidden_size() {
    // 40 rows over 8 experts (some empty), hidden 7168, intermediate 48, against the reference; the
    // intermediate is rounded to T once on both sides, so the tolerance is the suite's (2x T's).
    let (rows, groups, hidden, inter) = (40, 8, 7168, 48);
    let mut rng = CaseRng::new(0xFF);
    let x: Array2<bf16> = rng.uniform((rows, hidden), -1.0, 1.0);
    let sc = 1.0 / (hidden as f32).sqrt();
    let wg: Array3<bf16> = rng.uniform((groups, inter, hidden), -sc, sc);
    let wu: Array3<bf16> = rng.uniform((groups, inter, hidden), -sc, sc);
    let sd = 1.0 / (inter as f32).sqrt();
    let wd: Array3<bf16> = rng.uniform((groups, hidden, inter), -sd, sd);
    let counts: Vec<i64> = vec![0, 17, 0, 3, 1, 0, 19, 0];
    let want = moe::expert_ffn(
        x.view(),
        wg.view(),
        wu.view(),
        wd.view(),
        Array1::from(counts.clone()).view(),
        GroupListType::Counts,
    )
    .unwrap();
    let v = |a: &Array3<bf16>| a.iter().copied().collect::<Vec<_>>();
    let (y, launch) = DEV
        .expert_ffn(
            &flat(x.view()),
            rows,
            hidden,
            &v(&wg),
            &v(&wu),
            &v(&wd),
            groups,
            inter,
            &counts,
            MoeList::Count,
            rows,
        )
        .unwrap();
    assert_close(
        "expert_ffn",
        Array2::from_shape_vec((rows, hidden), y).unwrap().view(),
        want.view(),
        Tolerance::of::<bf16>().widened(2.0),
    );
    // Gate, up and down over the 40 rows: 3 x 40 x 48 x 7168 multiply-adds, nothing for empty experts.
    assert_eq!(launch.outcome.total().cube_macs, 3 * 40 * 48 * 7168);
}

fn finalize_matches<T: Float>(
    case: &RoutingCase,
    extras: bool,
    dev: &MoeDevice,
) -> dsnpu_kernels::MoeFinalizeTiling {
    let mut rng = CaseRng::new(0xC0B + case.tokens as u64);
    let ids = routing_ids(&mut rng, case);
    let empty = Array2::<T>::default((case.tokens, 0));
    let plan = moe::moe_init_routing(
        empty.view(),
        ids.view(),
        case.experts,
        case.active.clone(),
        ExpertTokensMode::Count,
    )
    .unwrap();
    let rows = plan.expert_tokens.sum() as usize;
    let y: Array2<T> = rng.uniform((rows, case.hidden), -1.0, 1.0);
    let w: Array2<f32> = rng.uniform((case.tokens, case.top_k), 0.0, 1.0);
    let shared: Option<Array2<T>> =
        extras.then(|| rng.uniform((case.tokens, case.hidden), -1.0, 1.0));
    let residual: Option<Array2<T>> =
        extras.then(|| rng.uniform((case.tokens, case.hidden), -1.0, 1.0));
    let want = moe::moe_finalize_routing(
        y.view(),
        plan.expanded_row_idx.view(),
        w.view(),
        shared.as_ref().map(|a| a.view()),
        residual.as_ref().map(|a| a.view()),
    )
    .unwrap();
    let (s, r) = (
        shared.as_ref().map(|a| flat(a.view())),
        residual.as_ref().map(|a| flat(a.view())),
    );
    let (out, launch) = dev
        .finalize(
            &flat(y.view()),
            rows,
            case.hidden,
            &plan.expanded_row_idx.to_vec(),
            &flat(w.view()),
            case.tokens,
            case.top_k,
            s.as_deref(),
            r.as_deref(),
        )
        .unwrap();
    // The same f32 products and sums in the same order, rounded once: equal values (0 == -0).
    let differ = out
        .iter()
        .zip(want.iter())
        .filter(|(a, b)| a.to_f32() != b.to_f32())
        .count();
    assert_eq!(differ, 0, "{case:?}: {differ} elements differ");
    let tiling = dsnpu_kernels::MoeFinalizeTiling::new(
        case.tokens as u64,
        case.hidden as u64,
        case.top_k as u64,
        rows as u64,
        extras,
        extras,
        moe_common::kernel_dtype::<T>(),
        dev.vector,
    )
    .unwrap();
    assert_eq!(launch.blocks, tiling.block_dim());
    tiling
}

#[test]
fn combine_is_the_references_arithmetic() {
    finalize_matches::<bf16>(
        &routing(512, 7168, 8, 256, None, IdDraw::Distinct),
        true,
        &DEV,
    );
    // An expert-parallel rank: most indices are -1; one token may have none of its experts here.
    finalize_matches::<f16>(
        &routing(16, 7000, 8, 256, Some(0..32), IdDraw::Distinct),
        false,
        &DEV,
    );
    finalize_matches::<f32>(&routing(1, 7168, 1, 8, None, IdDraw::Distinct), true, &DEV);
    // Nothing routed here at all: out = shared + residual, and y has no rows.
    finalize_matches::<f32>(
        &routing(5, 40, 4, 16, Some(7..7), IdDraw::Distinct),
        true,
        &DEV,
    );
}

#[test]
fn combine_chunks_columns_under_a_tight_budget() {
    let dev = MoeDevice {
        vector: CoreBudget {
            cores: 2,
            ub_bytes: 8 * 1024,
        },
        cube: DEV.cube,
    };
    let t = finalize_matches::<bf16>(&routing(9, 7000, 8, 64, None, IdDraw::Distinct), true, &dev);
    assert!(
        t.cols_per_tile < 7000 && t.cols_per_tile.is_multiple_of(64),
        "{t:?}"
    );
}

#[test]
fn layer_of_an_expert_parallel_rank_at_deepseek_shapes() {
    // Hidden 7168, 256 experts, sigmoid + bias top-8 of 8 groups keeping 4, x2.5, this rank holding
    // experts 0..32 (EP8), expert FFN width 16 (scaled to fit), shared output and residual fused in the
    // combine; eight tokens. Router logits on the host (f32), then the four kernels back to back.
    let (tokens, hidden, experts, inter) = (8, 7168, 256, 16);
    let local = 0..32;
    let gating = GatingConfig::deepseek_v3();
    let mut rng = CaseRng::new(0x1A7E);
    let sr = 1.0 / (hidden as f32).sqrt();
    let router: Array2<bf16> = rng.uniform((experts, hidden), -sr, sr);
    let bias: Array1<f32> = rng.uniform(experts, -0.2, 0.2);
    let mut x = Array2::<bf16>::default((tokens, hidden));
    for t in 0..tokens {
        let row = (0..1000)
            .map(|_| rng.uniform::<bf16, _>((1, hidden), -1.0, 1.0))
            .find(|row| {
                let l = moe::router_logits(row.view(), router.view()).unwrap();
                well_separated(l.as_slice().unwrap(), bias.as_slice(), &gating)
            })
            .expect("a well-separated token");
        x.row_mut(t).assign(&row.row(0));
    }
    let n_local = local.len();
    let wg: Array3<bf16> = rng.uniform((n_local, inter, hidden), -sr, sr);
    let wu: Array3<bf16> = rng.uniform((n_local, inter, hidden), -sr, sr);
    let sd = 1.0 / (inter as f32).sqrt();
    let wd: Array3<bf16> = rng.uniform((n_local, hidden, inter), -sd, sd);
    let shared: Array2<bf16> = rng.uniform((tokens, hidden), -1.0, 1.0);
    let residual: Array2<bf16> = rng.uniform((tokens, hidden), -1.0, 1.0);
    let params = MoeLayerParams {
        router: router.view(),
        bias: Some(bias.view()),
        gating,
        w_gate: wg.view(),
        w_up: wu.view(),
        w_down: wd.view(),
        local: Some(local.clone()),
    };
    let want = moe::moe_layer(
        x.view(),
        &params,
        Some(shared.view()),
        Some(residual.view()),
    )
    .unwrap();

    let logits = moe::router_logits(x.view(), router.view()).unwrap();
    let (ids, w, _) = DEV
        .gating(
            logits.as_slice().unwrap(),
            tokens,
            experts,
            bias.as_slice(),
            &params_of(&gating, true),
        )
        .unwrap();
    let d = DEV
        .init_routing(
            &flat(x.view()),
            tokens,
            hidden,
            &ids,
            8,
            experts,
            Some(local.clone()),
            MoeList::Count,
        )
        .unwrap();
    let v = |a: &Array3<bf16>| a.iter().copied().collect::<Vec<_>>();
    let y = if d.rows == 0 {
        Vec::new()
    } else {
        DEV.expert_ffn(
            &d.expanded_x,
            d.rows,
            hidden,
            &v(&wg),
            &v(&wu),
            &v(&wd),
            n_local,
            inter,
            &d.expert_tokens[local.clone()],
            MoeList::Count,
            d.rows,
        )
        .unwrap()
        .0
    };
    let (out, _) = DEV
        .finalize(
            &y,
            d.rows,
            hidden,
            &d.expanded_row_idx,
            &w,
            tokens,
            8,
            Some(&flat(shared.view())),
            Some(&flat(residual.view())),
        )
        .unwrap();
    assert!(d.rows > 0, "the draw routes something to this rank");
    assert_close(
        "moe layer",
        Array2::from_shape_vec((tokens, hidden), out)
            .unwrap()
            .view(),
        want.view(),
        Tolerance::of::<bf16>().widened(2.0),
    );
    // The chain dispatched exactly the pairs the reference's routing keeps for experts 0..32.
    let (want_ids, _) = moe::moe_gating_topk(logits.view(), Some(bias.view()), &gating).unwrap();
    let kept = want_ids.iter().filter(|&&e| (e as usize) < 32).count();
    assert_eq!(d.rows, kept);
}
