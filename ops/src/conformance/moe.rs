//! Conformance suites for the MoE operators: run a backend over a seeded case matrix and compare with the
//! CPU reference.
//!
//! Comparison rules: expert ids, row indices and token counts must match **exactly**; copied rows
//! (`expanded_x`) are bit-identical; values use [`Tolerance::of::<T>()`](Tolerance::of) (gating weights are
//! `f32` computed from `T` logits and use `T`'s tolerance too); the chained expert FFN and whole layer
//! widen it 2× (two GEMMs with an intermediate rounded to `T` between them); int8 codes may differ by one
//! step (a device `Div` need not be correctly rounded at the `.5` boundary) and must dequantize to within
//! 1.5 steps of the input.
//!
//! **Robust ids.** An exact comparison of top-k ids is only meaningful if the reference's decision does
//! not hinge on a near-tie that an equally valid `f32` computation (another `exp`, another summation
//! order) could flip. Every gating case is therefore drawn row by row and redrawn until each ranking
//! boundary the decision depends on (kept vs dropped group, and consecutive positions `0..=K` of the
//! expert order) is either separated by at least [`SEPARATION`] or an exact tie between identical inputs
//! (same logit and bias), which every implementation must break by index. Ties are common by design:
//! one case draws logits from a five-value grid, and `f16`/`bf16` rounding produces many more.
//!
//! Cases cover T = 1 (decode), K = 1 and K = 8 (and K = 16 of 512), all tokens on one expert, experts with
//! no tokens, hidden sizes 7 and 7000 (not multiples of 16) and 7168, an active expert range, ties in
//! scores, and E = 256 with 8 groups keeping 4. Each suite also checks that the backend rejects a malformed input.
//!
//! [`moe_conformance!`](crate::moe_conformance) turns the suites into `#[test]` functions.
use super::cases::CaseRng;
use super::dense::{ran, rejects};
use super::tolerance::{assert_close, assert_equal, assert_unbiased, SystematicBound, Tolerance};
use crate::backend::moe::MoeOps;
use crate::backend::Cpu;
use crate::moe::gating::{scores, selection_scores};
use crate::moe::{
    router_logits, ExpertTokensMode, GatingConfig, GroupListType, InitRouting, InitRoutingQuant,
    MoeLayerParams, ScoreFunc,
};
use crate::{Float, Result};
use ndarray::{Array1, Array2, Array3, ArrayView2};
use std::ops::Range;

/// Minimum gap between the selection scores on either side of a routing boundary (see module docs):
/// ~1000× the `f32` rounding of a score near 1, far below the spread of scores in the cases.
pub const SEPARATION: f32 = 1e-4;

/// The reference must accept every generated case; an error there is a bug in the reference.
#[track_caller]
fn reference<R>(what: &str, r: Result<R>) -> R {
    r.unwrap_or_else(|e| panic!("{what}: reference rejected a valid case: {e}"))
}

/// How the logits of a gating case are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogitDraw {
    /// Uniform in `[-4, 4)`, rounded to `T`.
    Uniform,
    /// From `{-1, -0.5, 0, 0.5, 1}`: many exact ties.
    Grid,
}

/// One gating case: `tokens` rows of `cfg` routing, with or without a correction bias.
#[derive(Debug, Clone, Copy)]
pub struct GatingCase {
    pub tokens: usize,
    pub experts: usize,
    pub cfg: GatingConfig,
    pub bias: bool,
    pub draw: LogitDraw,
}

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

/// The gating case matrix.
pub fn gating_cases() -> Vec<GatingCase> {
    use LogitDraw::*;
    use ScoreFunc::*;
    let case = |tokens, experts, cfg, bias, draw| GatingCase {
        tokens,
        experts,
        cfg,
        bias,
        draw,
    };
    vec![
        // T = 1, K = 1, plain softmax top-1.
        case(1, 8, cfg(1, 1, 1, Softmax, false, 1.0), false, Uniform),
        // Mixtral-like: softmax top-2 of 8, renormalized.
        case(5, 8, cfg(2, 1, 1, Softmax, true, 1.0), false, Uniform),
        // DeepSeek-V2: softmax, 160 experts in 10 groups keeping 3 by group max, top-6, ×16.
        case(16, 160, cfg(6, 10, 3, Softmax, false, 16.0), false, Uniform),
        // DeepSeek-V3: sigmoid + bias, 256 experts in 8 groups keeping 4 by top-2 sum, top-8, ×2.5.
        case(1, 256, GatingConfig::deepseek_v3(), true, Uniform),
        case(37, 256, GatingConfig::deepseek_v3(), true, Uniform),
        // The same without groups, and without a bias (group score = max).
        case(4, 256, cfg(8, 1, 1, Sigmoid, true, 2.5), true, Uniform),
        case(6, 256, cfg(8, 8, 4, Sigmoid, true, 1.0), false, Uniform),
        // Ties everywhere, with and without groups and bias.
        case(16, 64, cfg(8, 8, 4, Sigmoid, true, 2.5), true, Grid),
        case(16, 64, cfg(8, 1, 1, Sigmoid, false, 1.0), false, Grid),
        case(8, 32, cfg(4, 4, 2, Softmax, false, 1.0), false, Grid),
        // Single-expert groups (the top-2 sum degenerates to the one score), and K = E.
        case(5, 8, cfg(3, 8, 3, Sigmoid, false, 1.0), true, Uniform),
        case(3, 16, cfg(16, 1, 1, Sigmoid, true, 1.0), false, Uniform),
        // The device limits: E = 512, K = 16; softmax with a (small) bias.
        case(4, 512, cfg(16, 16, 8, Sigmoid, true, 2.5), true, Uniform),
        case(3, 64, cfg(4, 1, 1, Softmax, true, 1.0), true, Uniform),
    ]
}

/// The group score exactly as the reference defines it, with the experts it depends on.
fn group_score(b: &[f32], members: Range<usize>, has_bias: bool) -> (f32, Vec<usize>) {
    let mut idx: Vec<usize> = members.collect();
    idx.sort_by(|&x, &y| b[y].total_cmp(&b[x]).then(x.cmp(&y)));
    let take = if has_bias { 2.min(idx.len()) } else { 1 };
    idx.truncate(take);
    (idx.iter().map(|&e| b[e]).sum(), idx)
}

/// Whether the routing of one token is robust (see the module docs).
/// An invalid `cfg` (or a bias of the wrong length) is never well separated.
pub fn well_separated(logits: &[f32], bias: Option<&[f32]>, cfg: &GatingConfig) -> bool {
    if cfg.validate("well_separated", logits.len()).is_err()
        || bias.is_some_and(|b| b.len() != logits.len())
    {
        return false;
    }
    let s = scores(logits, cfg.score);
    let b = selection_scores(&s, bias);
    let key = |e: usize| (logits[e].to_bits(), bias.map_or(0, |b| b[e].to_bits()));
    let same_inputs = |x: &[usize], y: &[usize]| {
        let mut kx: Vec<_> = x.iter().map(|&e| key(e)).collect();
        let mut ky: Vec<_> = y.iter().map(|&e| key(e)).collect();
        kx.sort_unstable();
        ky.sort_unstable();
        kx == ky
    };
    let ok =
        |gap: f32, x: &[usize], y: &[usize]| gap >= SEPARATION || (gap == 0.0 && same_inputs(x, y));

    let size = logits.len() / cfg.n_group;
    let mut groups: Vec<(usize, f32, Vec<usize>)> = (0..cfg.n_group)
        .map(|g| {
            let (score, members) = group_score(&b, g * size..(g + 1) * size, bias.is_some());
            (g, score, members)
        })
        .collect();
    groups.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    if cfg.topk_group < cfg.n_group {
        let (kept, dropped) = (&groups[cfg.topk_group - 1], &groups[cfg.topk_group]);
        if !ok(kept.1 - dropped.1, &kept.2, &dropped.2) {
            return false;
        }
    }
    let mut eligible: Vec<usize> = groups[..cfg.topk_group]
        .iter()
        .flat_map(|g| g.0 * size..(g.0 + 1) * size)
        .collect();
    eligible.sort_by(|&x, &y| b[y].total_cmp(&b[x]).then(x.cmp(&y)));
    (0..cfg.top_k.min(eligible.len() - 1)).all(|j| {
        let (x, y) = (eligible[j], eligible[j + 1]);
        ok(b[x] - b[y], &[x], &[y])
    })
}

/// Draw one row of logits for `case`, redrawing until [`well_separated`] holds.
fn gating_row<T: Float>(rng: &mut CaseRng, case: &GatingCase, bias: Option<&[f32]>) -> Array1<T> {
    for _ in 0..1000 {
        let row: Array1<T> = match case.draw {
            LogitDraw::Uniform => rng.uniform(case.experts, -4.0, 4.0),
            LogitDraw::Grid => rng
                .ints(case.experts, -2, 3)
                .mapv(|v| T::from_f32(v as f32 * 0.5)),
        };
        let f: Vec<f32> = row.iter().map(|v| v.to_f32()).collect();
        if well_separated(&f, bias, &case.cfg) {
            return row;
        }
    }
    panic!("gating case {case:?}: no well-separated row in 1000 draws (suite bug)");
}

/// Logits `[T,E]` and optional bias `[E]` for `case`.
pub fn gating_inputs<T: Float>(
    rng: &mut CaseRng,
    case: &GatingCase,
) -> (Array2<T>, Option<Array1<f32>>) {
    let bias: Option<Array1<f32>> = case.bias.then(|| match (case.draw, case.cfg.score) {
        (LogitDraw::Grid, _) => rng.ints(case.experts, 0, 2).mapv(|v| v as f32 * 0.25),
        // Softmax scores are ~1/E, so a bias that steers without swamping them is ~1/E as well.
        (_, ScoreFunc::Softmax) => rng.uniform(
            case.experts,
            -0.5 / case.experts as f32,
            0.5 / case.experts as f32,
        ),
        (_, ScoreFunc::Sigmoid) => rng.uniform(case.experts, -0.2, 0.2),
    });
    let mut logits = Array2::<T>::default((case.tokens, case.experts));
    for t in 0..case.tokens {
        let row = gating_row::<T>(rng, case, bias.as_ref().and_then(|b| b.as_slice()));
        logits.row_mut(t).assign(&row);
    }
    (logits, bias)
}

pub fn moe_gating_topk<B: MoeOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x30E_0001);
    for case in gating_cases() {
        let (logits, bias) = gating_inputs::<T>(&mut rng, &case);
        let what = format!("moe_gating_topk<{}> {case:?}", T::DTYPE);
        let (want_ids, want_w) = reference(
            &what,
            Cpu.moe_gating_topk(logits.view(), bias.as_ref().map(|b| b.view()), &case.cfg),
        );
        if let Some((ids, w)) = ran(
            b,
            &what,
            b.moe_gating_topk(logits.view(), bias.as_ref().map(|b| b.view()), &case.cfg),
        ) {
            assert_equal(&format!("{what} (ids)"), ids.view(), want_ids.view());
            assert_close(&format!("{what} (weights)"), w.view(), want_w.view(), tol);
        }
    }
    let logits = rng.uniform::<T, _>((2, 12), -1.0, 1.0);
    rejects(
        b,
        "moe_gating_topk with n_group 5 for E = 12",
        b.moe_gating_topk(
            logits.view(),
            None,
            &cfg(2, 5, 1, ScoreFunc::Sigmoid, true, 1.0),
        ),
    );
    rejects(
        b,
        "moe_gating_topk with top_k 7 > 2 groups × 3",
        b.moe_gating_topk(
            logits.view(),
            None,
            &cfg(7, 4, 2, ScoreFunc::Sigmoid, true, 1.0),
        ),
    );
    let short_bias = Array1::<f32>::zeros(11);
    rejects(
        b,
        "moe_gating_topk with bias [11] for E = 12",
        b.moe_gating_topk(
            logits.view(),
            Some(short_bias.view()),
            &cfg(2, 1, 1, ScoreFunc::Sigmoid, true, 1.0),
        ),
    );
}

/// How the expert ids of a dispatch case are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdDraw {
    /// K distinct experts per token, uniformly (what gating produces).
    Distinct,
    /// Every pair on one expert.
    AllOn(i32),
    /// K distinct experts per token among the even ones only: odd experts get no tokens.
    EvenOnly,
}

/// One dispatch case (also used by the combine suite).
#[derive(Debug, Clone)]
pub struct RoutingCase {
    pub tokens: usize,
    pub hidden: usize,
    pub top_k: usize,
    pub experts: usize,
    pub active: Option<Range<usize>>,
    pub ids: IdDraw,
}

/// The dispatch case matrix.
pub fn routing_cases() -> Vec<RoutingCase> {
    use IdDraw::*;
    let case = |tokens, hidden, top_k, experts, active, ids| RoutingCase {
        tokens,
        hidden,
        top_k,
        experts,
        active,
        ids,
    };
    vec![
        case(1, 7, 1, 8, None, Distinct),
        case(1, 7000, 8, 256, None, Distinct),
        case(5, 33, 8, 16, None, AllOn(3)),
        case(16, 7, 1, 4, None, AllOn(0)),
        case(37, 7, 2, 8, None, EvenOnly),
        case(37, 16, 8, 64, Some(8..24), Distinct),
        case(16, 128, 8, 256, Some(0..32), Distinct),
        case(3, 7000, 8, 256, Some(224..256), Distinct),
        case(9, 64, 4, 16, Some(5..5), Distinct),
        case(64, 48, 8, 256, None, Distinct),
        case(2, 7168, 8, 256, Some(0..128), Distinct),
    ]
}

/// `ids [T,K]` for `case`.
pub fn routing_ids(rng: &mut CaseRng, case: &RoutingCase) -> Array2<i32> {
    let mut ids = Array2::<i32>::zeros((case.tokens, case.top_k));
    for mut row in ids.rows_mut() {
        let picks: Vec<i32> = match case.ids {
            IdDraw::Distinct => rng
                .distinct(case.experts, case.top_k)
                .into_iter()
                .map(|e| e as i32)
                .collect(),
            IdDraw::AllOn(e) => vec![e; case.top_k],
            IdDraw::EvenOnly => rng
                .distinct(case.experts / 2, case.top_k)
                .into_iter()
                .map(|e| 2 * e as i32)
                .collect(),
        };
        row.assign(&Array1::from(picks));
    }
    ids
}

/// Alternate the two list forms across cases.
fn mode_for(i: usize) -> ExpertTokensMode {
    if i % 2 == 1 {
        ExpertTokensMode::Cumsum
    } else {
        ExpertTokensMode::Count
    }
}

/// A dispatch `got` against the reference's `want`: row indices and token counts exactly, the copied
/// rows bit-exactly.
pub fn assert_dispatch<T: Float>(what: &str, got: &InitRouting<T>, want: &InitRouting<T>) {
    assert_equal(
        &format!("{what} (expanded_row_idx)"),
        got.expanded_row_idx.view(),
        want.expanded_row_idx.view(),
    );
    assert_equal(
        &format!("{what} (expert_tokens)"),
        got.expert_tokens.view(),
        want.expert_tokens.view(),
    );
    assert_close(
        &format!("{what} (expanded_x)"),
        got.expanded_x.view(),
        want.expanded_x.view(),
        Tolerance::EXACT,
    );
}

/// An int8 dispatch `got` of `x` (`top_k` pairs a token) against the reference's `want`: row indices
/// and token counts exactly, scales within `scale_tol`, codes within `code_tol`; and, independent of
/// the reference, every dispatched row dequantizes to its token's row within 1.5 steps.
pub fn assert_quant_dispatch<T: Float>(
    what: &str,
    got: &InitRoutingQuant,
    want: &InitRoutingQuant,
    x: ArrayView2<T>,
    top_k: usize,
    scale_tol: Tolerance,
    code_tol: Tolerance,
) {
    assert_equal(
        &format!("{what} (expanded_row_idx)"),
        got.expanded_row_idx.view(),
        want.expanded_row_idx.view(),
    );
    assert_equal(
        &format!("{what} (expert_tokens)"),
        got.expert_tokens.view(),
        want.expert_tokens.view(),
    );
    assert_close(
        &format!("{what} (scales)"),
        got.scales.view(),
        want.scales.view(),
        scale_tol,
    );
    let codes = |q: &Array2<i8>| q.mapv(|v| v as f32);
    assert_close(
        &format!("{what} (codes)"),
        codes(&got.expanded_x).view(),
        codes(&want.expanded_x).view(),
        code_tol,
    );
    for (pair, &r) in got.expanded_row_idx.iter().enumerate() {
        if r < 0 {
            continue;
        }
        let (t, r) = (pair / top_k, r as usize);
        let s = got.scales[r];
        for (q, v) in got.expanded_x.row(r).iter().zip(x.row(t)) {
            let err = (*q as f32 * s - v.to_f32()).abs();
            assert!(
                err <= 1.5 * s + 1e-6,
                "{what}: row {r} dequantizes {q}·{s} for {}",
                v.to_f32()
            );
        }
    }
}

pub fn moe_init_routing<B: MoeOps, T: Float>(b: &B) {
    let mut rng = CaseRng::new(0x30E_0002);
    for (i, case) in routing_cases().into_iter().enumerate() {
        let x = rng.uniform::<T, _>((case.tokens, case.hidden), -2.0, 2.0);
        let ids = routing_ids(&mut rng, &case);
        let mode = mode_for(i);
        let what = format!("moe_init_routing<{}> {case:?} {mode:?}", T::DTYPE);
        let want = reference(
            &what,
            Cpu.moe_init_routing(
                x.view(),
                ids.view(),
                case.experts,
                case.active.clone(),
                mode,
            ),
        );
        if let Some(got) = ran(
            b,
            &what,
            b.moe_init_routing(
                x.view(),
                ids.view(),
                case.experts,
                case.active.clone(),
                mode,
            ),
        ) {
            assert_dispatch(&what, &got, &want);
        }
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let bad = ndarray::array![[0, 1], [2, 4]];
    rejects(
        b,
        "moe_init_routing with expert id 4 for E = 4",
        b.moe_init_routing(x.view(), bad.view(), 4, None, ExpertTokensMode::Count),
    );
    let short = ndarray::array![[0, 1]];
    rejects(
        b,
        "moe_init_routing with ids [1,2] for x [2,8]",
        b.moe_init_routing(x.view(), short.view(), 4, None, ExpertTokensMode::Count),
    );
}

pub fn moe_init_routing_quant<B: MoeOps, T: Float>(b: &B) {
    // One step of the code; the scale of a row is f32 arithmetic on identical inputs.
    let code_tol = Tolerance {
        atol: 1.0,
        rtol: 0.0,
    };
    let scale_tol = Tolerance::for_dtype(crate::DType::F32);
    let mut rng = CaseRng::new(0x30E_0003);
    for (i, case) in routing_cases().into_iter().enumerate() {
        let mut x = rng.uniform::<T, _>((case.tokens, case.hidden), -2.0, 2.0);
        // A zero row (scale 0) and a row with one dominant element.
        x.row_mut(0).fill(T::from_f32(0.0));
        if case.tokens > 1 {
            x[[1, 0]] = T::from_f32(-100.0);
        }
        let ids = routing_ids(&mut rng, &case);
        let mode = mode_for(i);
        let what = format!("moe_init_routing_quant<{}> {case:?} {mode:?}", T::DTYPE);
        let want = reference(
            &what,
            Cpu.moe_init_routing_quant(
                x.view(),
                ids.view(),
                case.experts,
                case.active.clone(),
                mode,
            ),
        );
        let Some(got) = ran(
            b,
            &what,
            b.moe_init_routing_quant(
                x.view(),
                ids.view(),
                case.experts,
                case.active.clone(),
                mode,
            ),
        ) else {
            continue;
        };
        assert_quant_dispatch(
            &what,
            &got,
            &want,
            x.view(),
            case.top_k,
            scale_tol,
            code_tol,
        );
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let bad = ndarray::array![[0], [-1]];
    rejects(
        b,
        "moe_init_routing_quant with expert id -1",
        b.moe_init_routing_quant(x.view(), bad.view(), 4, None, ExpertTokensMode::Count),
    );
}

/// One grouped-matmul case: `rows` split over `groups` by `split`.
#[derive(Debug, Clone, Copy)]
pub struct GroupedCase {
    pub rows: usize,
    pub groups: usize,
    pub n: usize,
    pub k: usize,
    pub split: GroupSplit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GroupSplit {
    /// A random split, empty groups allowed.
    Ragged,
    /// Every row in group `g`.
    AllIn(usize),
}

pub fn grouped_cases() -> Vec<GroupedCase> {
    use GroupSplit::*;
    let case = |rows, groups, n, k, split| GroupedCase {
        rows,
        groups,
        n,
        k,
        split,
    };
    vec![
        case(1, 1, 3, 7, Ragged),
        case(8, 8, 16, 7, Ragged),
        case(37, 8, 17, 33, Ragged),
        case(16, 4, 16, 16, AllIn(2)),
        case(5, 3, 5, 7000, Ragged),
        case(24, 16, 8, 64, Ragged),
        case(9, 6, 12, 20, AllIn(5)),
    ]
}

/// The `[E]` group counts for `case`.
pub fn group_counts(rng: &mut CaseRng, case: &GroupedCase) -> Vec<i64> {
    match case.split {
        GroupSplit::Ragged => rng
            .split(case.rows, case.groups)
            .into_iter()
            .map(|c| c as i64)
            .collect(),
        GroupSplit::AllIn(g) => (0..case.groups)
            .map(|e| if e == g { case.rows as i64 } else { 0 })
            .collect(),
    }
}

/// `counts` in the requested list form.
pub fn group_list(counts: &[i64], list_type: GroupListType) -> Array1<i64> {
    match list_type {
        GroupListType::Counts => Array1::from(counts.to_vec()),
        GroupListType::Cumsum => {
            let mut acc = 0;
            counts
                .iter()
                .map(|c| {
                    acc += c;
                    acc
                })
                .collect()
        }
    }
}

/// Weights `[E, out, in]` scaled by `1/sqrt(in)` so products of order-one inputs stay of order one.
fn weights<T: Float>(rng: &mut CaseRng, e: usize, out: usize, inp: usize) -> Array3<T> {
    let s = 1.0 / (inp.max(1) as f32).sqrt();
    rng.uniform((e, out, inp), -s, s)
}

pub fn grouped_matmul<B: MoeOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x30E_0004);
    for (i, case) in grouped_cases().into_iter().enumerate() {
        let x = rng.uniform::<T, _>((case.rows, case.k), -1.0, 1.0);
        let w = weights::<T>(&mut rng, case.groups, case.n, case.k);
        let list_type = if i % 2 == 0 {
            GroupListType::Counts
        } else {
            GroupListType::Cumsum
        };
        let gl = group_list(&group_counts(&mut rng, &case), list_type);
        let what = format!("grouped_matmul<{}> {case:?} {list_type:?}", T::DTYPE);
        let want = reference(
            &what,
            Cpu.grouped_matmul(x.view(), w.view(), gl.view(), list_type),
        );
        if let Some(got) = ran(
            b,
            &what,
            b.grouped_matmul(x.view(), w.view(), gl.view(), list_type),
        ) {
            assert_close(&what, got.view(), want.view(), tol);
        }
    }
    let x = rng.uniform::<T, _>((4, 8), -1.0, 1.0);
    let w = weights::<T>(&mut rng, 2, 3, 8);
    rejects(
        b,
        "grouped_matmul with counts summing to 5 for R = 4",
        b.grouped_matmul(
            x.view(),
            w.view(),
            ndarray::array![2, 3].view(),
            GroupListType::Counts,
        ),
    );
    rejects(
        b,
        "grouped_matmul with a decreasing cumsum",
        b.grouped_matmul(
            x.view(),
            w.view(),
            ndarray::array![3, 2].view(),
            GroupListType::Cumsum,
        ),
    );
    rejects(
        b,
        "grouped_matmul with 3 groups for 2 weights",
        b.grouped_matmul(
            x.view(),
            w.view(),
            ndarray::array![1, 1, 2].view(),
            GroupListType::Counts,
        ),
    );
}

pub fn expert_ffn<B: MoeOps, T: Float>(b: &B) {
    // Two GEMMs with the SwiGLU intermediate rounded to T between them: one flipped rounding of the
    // intermediate propagates through the second GEMM.
    let tol = Tolerance::of::<T>().widened(2.0);
    let mut rng = CaseRng::new(0x30E_0005);
    // (rows, experts, hidden, intermediate, split)
    let shapes: &[(usize, usize, usize, usize, GroupSplit)] = &[
        (1, 1, 7, 3, GroupSplit::Ragged),
        (37, 8, 33, 17, GroupSplit::Ragged),
        (16, 4, 16, 32, GroupSplit::AllIn(1)),
        (3, 2, 7000, 8, GroupSplit::Ragged),
        (20, 16, 64, 24, GroupSplit::Ragged),
    ];
    for (i, &(rows, groups, hidden, inter, split)) in shapes.iter().enumerate() {
        let x = rng.uniform::<T, _>((rows, hidden), -1.0, 1.0);
        let wg = weights::<T>(&mut rng, groups, inter, hidden);
        let wu = weights::<T>(&mut rng, groups, inter, hidden);
        let wd = weights::<T>(&mut rng, groups, hidden, inter);
        let gcase = GroupedCase {
            rows,
            groups,
            n: inter,
            k: hidden,
            split,
        };
        let list_type = if i % 2 == 0 {
            GroupListType::Cumsum
        } else {
            GroupListType::Counts
        };
        let gl = group_list(&group_counts(&mut rng, &gcase), list_type);
        let what = format!(
            "expert_ffn<{}> R={rows} E={groups} H={hidden} I={inter} {split:?} {list_type:?}",
            T::DTYPE
        );
        let want = reference(
            &what,
            Cpu.expert_ffn(
                x.view(),
                wg.view(),
                wu.view(),
                wd.view(),
                gl.view(),
                list_type,
            ),
        );
        if let Some(got) = ran(
            b,
            &what,
            b.expert_ffn(
                x.view(),
                wg.view(),
                wu.view(),
                wd.view(),
                gl.view(),
                list_type,
            ),
        ) {
            assert_close(&what, got.view(), want.view(), tol);
        }
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let wg = weights::<T>(&mut rng, 1, 4, 8);
    let wd = weights::<T>(&mut rng, 1, 4, 8);
    rejects(
        b,
        "expert_ffn with w_down [1,4,8] for H=8, I=4",
        b.expert_ffn(
            x.view(),
            wg.view(),
            wg.view(),
            wd.view(),
            ndarray::array![2].view(),
            GroupListType::Counts,
        ),
    );
}

pub fn moe_finalize_routing<B: MoeOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>();
    let mut rng = CaseRng::new(0x30E_0006);
    for (i, case) in routing_cases().into_iter().enumerate() {
        // The index comes from a real dispatch of random ids (with -1 for an active range).
        let ids = routing_ids(&mut rng, &case);
        let x = Array2::<T>::default((case.tokens, 0));
        let plan = reference(
            "dispatch",
            Cpu.moe_init_routing(
                x.view(),
                ids.view(),
                case.experts,
                case.active.clone(),
                ExpertTokensMode::Count,
            ),
        );
        let rows = plan.expert_tokens.sum() as usize;
        let y = rng.uniform::<T, _>((rows, case.hidden), -1.0, 1.0);
        let w = rng.uniform::<f32, _>((case.tokens, case.top_k), 0.0, 1.0);
        let shared =
            (i % 2 == 1).then(|| rng.uniform::<T, _>((case.tokens, case.hidden), -1.0, 1.0));
        let residual =
            (i % 3 != 0).then(|| rng.uniform::<T, _>((case.tokens, case.hidden), -1.0, 1.0));
        let what = format!(
            "moe_finalize_routing<{}> {case:?} shared={} residual={}",
            T::DTYPE,
            shared.is_some(),
            residual.is_some()
        );
        let (sv, rv) = (
            shared.as_ref().map(|s| s.view()),
            residual.as_ref().map(|r| r.view()),
        );
        let want = reference(
            &what,
            Cpu.moe_finalize_routing(y.view(), plan.expanded_row_idx.view(), w.view(), sv, rv),
        );
        let (sv, rv) = (
            shared.as_ref().map(|s| s.view()),
            residual.as_ref().map(|r| r.view()),
        );
        if let Some(got) = ran(
            b,
            &what,
            b.moe_finalize_routing(y.view(), plan.expanded_row_idx.view(), w.view(), sv, rv),
        ) {
            assert_close(&what, got.view(), want.view(), tol);
            // Against the f64 evaluation on the same values, over the whole output too.
            let k = case.top_k;
            let exact = Array2::from_shape_fn((case.tokens, case.hidden), |(t, d)| {
                let mut v = 0.0f64;
                for j in 0..k {
                    let r = plan.expanded_row_idx[t * k + j];
                    if r >= 0 {
                        v += f64::from(w[[t, j]]) * f64::from(y[[r as usize, d]].to_f32());
                    }
                }
                for extra in [&shared, &residual].into_iter().flatten() {
                    v += f64::from(extra[[t, d]].to_f32());
                }
                v
            });
            assert_unbiased(
                &format!("{what} vs f64"),
                got.view(),
                exact.view(),
                tol,
                SystematicBound::of::<T>(got.len()),
            );
        }
    }
    let y = rng.uniform::<T, _>((2, 4), -1.0, 1.0);
    let w = Array2::<f32>::ones((1, 2));
    rejects(
        b,
        "moe_finalize_routing with row index 2 for R = 2",
        b.moe_finalize_routing(y.view(), ndarray::array![0, 2].view(), w.view(), None, None),
    );
    rejects(
        b,
        "moe_finalize_routing with 3 indices for T*K = 2",
        b.moe_finalize_routing(
            y.view(),
            ndarray::array![0, 1, 1].view(),
            w.view(),
            None,
            None,
        ),
    );
}

/// One whole-layer case.
#[derive(Debug, Clone)]
pub struct LayerCase {
    pub tokens: usize,
    pub hidden: usize,
    pub experts: usize,
    pub inter: usize,
    pub gating: GatingConfig,
    /// The experts this "rank" holds.
    pub local: Option<Range<usize>>,
    /// Pass a shared-expert output and a residual.
    pub extras: bool,
}

pub fn layer_cases() -> Vec<LayerCase> {
    let sigmoid = cfg(4, 4, 2, ScoreFunc::Sigmoid, true, 2.5);
    let softmax = cfg(2, 1, 1, ScoreFunc::Softmax, true, 1.0);
    let case = |tokens, hidden, experts, inter, gating, local, extras| LayerCase {
        tokens,
        hidden,
        experts,
        inter,
        gating,
        local,
        extras,
    };
    vec![
        case(1, 32, 16, 8, sigmoid, None, true),
        case(7, 33, 16, 16, sigmoid, Some(4..12), false),
        case(12, 16, 8, 8, softmax, None, false),
    ]
}

pub fn moe_layer<B: MoeOps, T: Float>(b: &B) {
    let tol = Tolerance::of::<T>().widened(2.0);
    let mut rng = CaseRng::new(0x30E_0007);
    for LayerCase {
        tokens,
        hidden,
        experts,
        inter,
        gating,
        local,
        extras,
    } in layer_cases()
    {
        let n_local = local.as_ref().map_or(experts, |r| r.len());
        let router =
            weights::<T>(&mut rng, 1, experts, hidden).index_axis_move(ndarray::Axis(0), 0);
        let bias =
            (gating.score == ScoreFunc::Sigmoid).then(|| rng.uniform::<f32, _>(experts, -0.2, 0.2));
        // Redraw token rows whose routing would hinge on a near-tie of the f32 router logits.
        let mut x = Array2::<T>::default((tokens, hidden));
        for t in 0..tokens {
            let row = (0..1000)
                .map(|_| rng.uniform::<T, _>((1, hidden), -1.0, 1.0))
                .find(|row| {
                    let l = reference("router_logits", router_logits(row.view(), router.view()));
                    let l: Vec<f32> = l.iter().copied().collect();
                    well_separated(&l, bias.as_ref().and_then(|b| b.as_slice()), &gating)
                })
                .unwrap_or_else(|| {
                    panic!("moe_layer: no well-separated token in 1000 draws (suite bug)")
                });
            x.row_mut(t).assign(&row.row(0));
        }
        let wg = weights::<T>(&mut rng, n_local, inter, hidden);
        let wu = weights::<T>(&mut rng, n_local, inter, hidden);
        let wd = weights::<T>(&mut rng, n_local, hidden, inter);
        let shared = extras.then(|| rng.uniform::<T, _>((tokens, hidden), -1.0, 1.0));
        let residual = extras.then(|| rng.uniform::<T, _>((tokens, hidden), -1.0, 1.0));
        let params = MoeLayerParams {
            router: router.view(),
            bias: bias.as_ref().map(|b| b.view()),
            gating,
            w_gate: wg.view(),
            w_up: wu.view(),
            w_down: wd.view(),
            local: local.clone(),
        };
        let what = format!(
            "moe_layer<{}> T={tokens} H={hidden} E={experts} I={inter} local={local:?} shared+residual={extras}",
            T::DTYPE
        );
        let (sv, rv) = (
            shared.as_ref().map(|s| s.view()),
            residual.as_ref().map(|r| r.view()),
        );
        let want = reference(&what, Cpu.moe_layer(x.view(), &params, sv, rv));
        let (sv, rv) = (
            shared.as_ref().map(|s| s.view()),
            residual.as_ref().map(|r| r.view()),
        );
        if let Some(got) = ran(b, &what, b.moe_layer(x.view(), &params, sv, rv)) {
            assert_close(&what, got.view(), want.view(), tol);
        }
    }
    let x = rng.uniform::<T, _>((2, 8), -1.0, 1.0);
    let router = weights::<T>(&mut rng, 1, 4, 8).index_axis_move(ndarray::Axis(0), 0);
    let w = weights::<T>(&mut rng, 3, 4, 8);
    let wd = weights::<T>(&mut rng, 3, 8, 4);
    let params = MoeLayerParams {
        router: router.view(),
        bias: None,
        gating: cfg(2, 1, 1, ScoreFunc::Softmax, true, 1.0),
        w_gate: w.view(),
        w_up: w.view(),
        w_down: wd.view(),
        local: None,
    };
    rejects(
        b,
        "moe_layer with 3 experts' weights for E = 4",
        b.moe_layer(x.view(), &params, None, None),
    );
}

/// The MoE suites for one backend and the three float dtypes, as `#[test]` functions in modules
/// `moe_f32`, `moe_f16`, `moe_bf16`.
#[macro_export]
macro_rules! moe_conformance {
    ($backend:expr) => {
        mod moe_f32 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__moe_conformance_tests!($backend, f32);
        }
        mod moe_f16 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__moe_conformance_tests!($backend, $crate::half::f16);
        }
        mod moe_bf16 {
            #[allow(unused_imports)]
            use super::*;
            $crate::__moe_conformance_tests!($backend, $crate::half::bf16);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __moe_conformance_tests {
    ($backend:expr, $t:ty) => {
        $crate::__moe_conformance_tests!(@each $backend, $t,
            moe_gating_topk, moe_init_routing, moe_init_routing_quant, grouped_matmul, expert_ffn,
            moe_finalize_routing, moe_layer);
    };
    (@each $backend:expr, $t:ty, $($suite:ident),*) => {
        $(
            #[test]
            fn $suite() {
                $crate::conformance::moe::$suite::<_, $t>(&$backend);
            }
        )*
    };
}
