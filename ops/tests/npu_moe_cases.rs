//! The MoE kernels on the device backend at the shapes issue 6 names, against the CPU references, in
//! f32, f16 and bf16, every launch checked clean (no fault, zero sanitizer warnings; `npu_moe_common`):
//! T = 1 decode and T = 4096 prefill (gating, dispatch and combine; prefill rows are 256 wide, and 7168
//! wide in bf16 in the ignored [`prefill_at_full_width`]), K = 1 and K = 8, every pair on one expert, experts with no tokens, hidden
//! 7168 and 7000, an active expert range, ties in the scores, and the int8 dispatch.
//!
//! Comparison rules are the conformance suites': ids, row indices and token counts exactly, copied rows
//! bit-exactly, int8 codes within one step (and every code dequantizing to within 1.5 steps of its
//! input), values within the dtype's tolerance (twice it for the two chained GEMMs of the FFN).

mod npu_backend;
mod npu_moe_common;

use std::ops::Range;

use dsnpu_ops::backend::{Cpu, MoeOps};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::conformance::moe::{
    assert_dispatch, assert_quant_dispatch, gating_inputs, group_list, routing_ids, GatingCase,
    IdDraw, LogitDraw, RoutingCase,
};
use dsnpu_ops::conformance::tolerance::{assert_close, assert_equal, Tolerance};
use dsnpu_ops::half::{bf16, f16};
use dsnpu_ops::moe::{ExpertTokensMode, GatingConfig, GroupListType, ScoreFunc};
use dsnpu_ops::ndarray::{Array2, Array3};
use dsnpu_ops::{DType, Float};
use npu_backend::checked_npu;

const E: usize = 256;

fn routing(
    tokens: usize,
    hidden: usize,
    top_k: usize,
    active: Option<Range<usize>>,
    ids: IdDraw,
) -> RoutingCase {
    RoutingCase {
        tokens,
        hidden,
        top_k,
        experts: E,
        active,
        ids,
    }
}

/// The dispatch and combine cases of the issue (prefill with narrow rows: full-width prefill is
/// [`prefill_at_full_width`]).
fn routing_cases() -> Vec<RoutingCase> {
    use IdDraw::*;
    vec![
        routing(4096, 256, 8, None, Distinct),
        routing(1, 7168, 8, None, Distinct),
        routing(64, 7000, 1, None, Distinct),
        routing(512, 7168, 8, None, AllOn(7)),
        routing(64, 7168, 8, None, EvenOnly),
        routing(64, 7000, 8, Some(32..64), Distinct),
        routing(37, 7168, 8, Some(250..256), Distinct),
    ]
}

fn gating_case(
    tokens: usize,
    experts: usize,
    cfg: GatingConfig,
    bias: bool,
    draw: LogitDraw,
) -> GatingCase {
    GatingCase {
        tokens,
        experts,
        cfg,
        bias,
        draw,
    }
}

fn cfg(top_k: usize, n_group: usize, topk_group: usize, score: ScoreFunc) -> GatingConfig {
    GatingConfig {
        top_k,
        n_group,
        topk_group,
        score,
        normalize: true,
        routed_scaling_factor: 2.5,
    }
}

fn gating<T: Float>() {
    let ds = GatingConfig::deepseek_v3();
    let cases = [
        gating_case(4096, E, ds, true, LogitDraw::Uniform),
        gating_case(1, E, ds, true, LogitDraw::Uniform),
        gating_case(
            64,
            E,
            cfg(1, 1, 1, ScoreFunc::Softmax),
            false,
            LogitDraw::Uniform,
        ),
        gating_case(
            64,
            64,
            cfg(8, 8, 4, ScoreFunc::Sigmoid),
            true,
            LogitDraw::Grid,
        ),
        gating_case(
            64,
            E,
            cfg(8, 1, 1, ScoreFunc::Sigmoid),
            false,
            LogitDraw::Grid,
        ),
    ];
    let npu = checked_npu();
    let mut rng = CaseRng::new(0x6A7E);
    for case in cases {
        let (logits, bias) = gating_inputs::<T>(&mut rng, &case);
        let what = format!("moe_gating_topk<{}> {case:?}", T::DTYPE);
        let bias = bias.as_ref().map(|b| b.view());
        let (want_ids, want_w) = Cpu.moe_gating_topk(logits.view(), bias, &case.cfg).unwrap();
        let (ids, w) = npu
            .moe_gating_topk(logits.view(), bias, &case.cfg)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_equal(&format!("{what} (ids)"), ids.view(), want_ids.view());
        assert_close(
            &format!("{what} (weights)"),
            w.view(),
            want_w.view(),
            Tolerance::of::<T>(),
        );
    }
}

fn mode_for(i: usize) -> ExpertTokensMode {
    if i.is_multiple_of(2) {
        ExpertTokensMode::Count
    } else {
        ExpertTokensMode::Cumsum
    }
}

fn dispatch<T: Float>(cases: Vec<RoutingCase>) {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0xD15);
    for (i, case) in cases.into_iter().enumerate() {
        let x = rng.uniform::<T, _>((case.tokens, case.hidden), -2.0, 2.0);
        let ids = routing_ids(&mut rng, &case);
        let mode = mode_for(i);
        let what = format!("moe_init_routing<{}> {case:?} {mode:?}", T::DTYPE);
        let want = Cpu
            .moe_init_routing(x.view(), ids.view(), E, case.active.clone(), mode)
            .unwrap();
        let got = npu
            .moe_init_routing(x.view(), ids.view(), E, case.active.clone(), mode)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_dispatch(&what, &got, &want);
    }
}

fn dispatch_int8<T: Float>(cases: Vec<RoutingCase>) {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0x1278);
    let code_tol = Tolerance {
        atol: 1.0,
        rtol: 0.0,
    };
    for (i, case) in cases.into_iter().enumerate() {
        let mut x = rng.uniform::<T, _>((case.tokens, case.hidden), -2.0, 2.0);
        // A zero row (scale 0) and one dominated by a single element.
        x.row_mut(0).fill(T::from_f32(0.0));
        if case.tokens > 1 {
            x[[1, 3]] = T::from_f32(-100.0);
        }
        let ids = routing_ids(&mut rng, &case);
        let mode = mode_for(i);
        let what = format!("moe_init_routing_quant<{}> {case:?} {mode:?}", T::DTYPE);
        let want = Cpu
            .moe_init_routing_quant(x.view(), ids.view(), E, case.active.clone(), mode)
            .unwrap();
        let got = npu
            .moe_init_routing_quant(x.view(), ids.view(), E, case.active.clone(), mode)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_quant_dispatch(
            &what,
            &got,
            &want,
            x.view(),
            case.top_k,
            Tolerance::for_dtype(DType::F32),
            code_tol,
        );
    }
}

fn combine<T: Float>(cases: Vec<RoutingCase>) {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0xC0B);
    for (i, case) in cases.into_iter().enumerate() {
        // The indices of a real dispatch of the case's ids (with -1 outside an active range).
        let ids = routing_ids(&mut rng, &case);
        let empty = Array2::<T>::default((case.tokens, 0));
        let plan = Cpu
            .moe_init_routing(
                empty.view(),
                ids.view(),
                E,
                case.active.clone(),
                ExpertTokensMode::Count,
            )
            .unwrap();
        let rows = plan.expert_tokens.sum() as usize;
        let y = rng.uniform::<T, _>((rows, case.hidden), -1.0, 1.0);
        let w = rng.uniform::<f32, _>((case.tokens, case.top_k), 0.0, 1.0);
        let shared =
            (i % 2 == 0).then(|| rng.uniform::<T, _>((case.tokens, case.hidden), -1.0, 1.0));
        let residual =
            (i % 3 != 2).then(|| rng.uniform::<T, _>((case.tokens, case.hidden), -1.0, 1.0));
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
        let idx = plan.expanded_row_idx.view();
        let want = Cpu
            .moe_finalize_routing(y.view(), idx, w.view(), sv, rv)
            .unwrap();
        let got = npu
            .moe_finalize_routing(y.view(), idx, w.view(), sv, rv)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_close(&what, got.view(), want.view(), Tolerance::of::<T>());
    }
}

/// Per-group row counts of `rows` rows over `groups` groups: all in `hot`, or spread over the even
/// groups only (the odd ones empty).
fn counts(rng: &mut CaseRng, rows: usize, groups: usize, hot: Option<usize>) -> Vec<i64> {
    match hot {
        Some(h) => (0..groups)
            .map(|g| if g == h { rows as i64 } else { 0 })
            .collect(),
        None => {
            let even = rng.split(rows, groups.div_ceil(2));
            (0..groups)
                .map(|g| if g % 2 == 0 { even[g / 2] as i64 } else { 0 })
                .collect()
        }
    }
}

fn weights<T: Float>(rng: &mut CaseRng, e: usize, out: usize, inp: usize) -> Array3<T> {
    let s = 1.0 / (inp as f32).sqrt();
    rng.uniform((e, out, inp), -s, s)
}

fn grouped<T: Float>() {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0x6E0);
    // (rows, groups, n, k, hot group)
    for (i, (rows, groups, n, k, hot)) in [
        (64, 8, 256, 7168, Some(3)),
        (37, 16, 64, 7000, None),
        (8, 4, 16, 7168, None),
    ]
    .into_iter()
    .enumerate()
    {
        let x = rng.uniform::<T, _>((rows, k), -1.0, 1.0);
        let w = weights::<T>(&mut rng, groups, n, k);
        let lt = [GroupListType::Counts, GroupListType::Cumsum][i % 2];
        let gl = group_list(&counts(&mut rng, rows, groups, hot), lt);
        let what = format!(
            "grouped_matmul<{}> R={rows} G={groups} N={n} K={k} hot={hot:?} {lt:?}",
            T::DTYPE
        );
        let want = Cpu
            .grouped_matmul(x.view(), w.view(), gl.view(), lt)
            .unwrap();
        let got = npu
            .grouped_matmul(x.view(), w.view(), gl.view(), lt)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_close(&what, got.view(), want.view(), Tolerance::of::<T>());
    }
}

fn ffn<T: Float>() {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0xFF4);
    // Two chained GEMMs with h rounded to T between them (the suites' rule).
    let tol = Tolerance::of::<T>().widened(2.0);
    // (rows, groups, hidden, inter, hot group)
    for (i, (rows, groups, hidden, inter, hot)) in [
        (32, 4, 7168, 128, Some(2)),
        (24, 8, 7000, 64, None),
        (1, 8, 7168, 32, None),
    ]
    .into_iter()
    .enumerate()
    {
        let x = rng.uniform::<T, _>((rows, hidden), -1.0, 1.0);
        let wg = weights::<T>(&mut rng, groups, inter, hidden);
        let wu = weights::<T>(&mut rng, groups, inter, hidden);
        let wd = weights::<T>(&mut rng, groups, hidden, inter);
        let lt = [GroupListType::Cumsum, GroupListType::Counts][i % 2];
        let gl = group_list(&counts(&mut rng, rows, groups, hot), lt);
        let what = format!(
            "expert_ffn<{}> R={rows} G={groups} H={hidden} I={inter} hot={hot:?} {lt:?}",
            T::DTYPE
        );
        let want = Cpu
            .expert_ffn(x.view(), wg.view(), wu.view(), wd.view(), gl.view(), lt)
            .unwrap();
        let got = npu
            .expert_ffn(x.view(), wg.view(), wu.view(), wd.view(), gl.view(), lt)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_close(&what, got.view(), want.view(), tol);
    }
}

/// Shapes with nothing to launch (answered on the host) and a layer whose rank holds no expert give
/// what the reference gives.
#[test]
fn empty_and_degenerate_shapes_match_the_reference() {
    let npu = checked_npu();
    let mut rng = CaseRng::new(0xE0);
    let cfg = GatingConfig::deepseek_v3();
    let logits = Array2::<bf16>::zeros((0, E));
    let (ids, w) = npu.moe_gating_topk(logits.view(), None, &cfg).unwrap();
    assert_eq!((ids.dim(), w.dim()), ((0, 8), (0, 8)));

    // Zero-width rows and zero pairs still route.
    let ids = dsnpu_ops::ndarray::array![[3, 1], [1, 0]];
    let x = Array2::<f32>::zeros((2, 0));
    let got = npu
        .moe_init_routing(
            x.view(),
            ids.view(),
            4,
            Some(1..4),
            ExpertTokensMode::Cumsum,
        )
        .unwrap();
    let want = Cpu
        .moe_init_routing(
            x.view(),
            ids.view(),
            4,
            Some(1..4),
            ExpertTokensMode::Cumsum,
        )
        .unwrap();
    assert_eq!(got.expanded_row_idx, want.expanded_row_idx);
    assert_eq!(got.expert_tokens, want.expert_tokens);
    assert_eq!(got.expanded_x.dim(), (3, 0));
    let no_pairs = Array2::<i32>::zeros((2, 0));
    let x = rng.uniform::<f32, _>((2, 8), -1.0, 1.0);
    let got = npu
        .moe_init_routing_quant(x.view(), no_pairs.view(), 4, None, ExpertTokensMode::Count)
        .unwrap();
    assert_eq!(
        (got.expanded_x.dim(), got.expert_tokens.to_vec()),
        ((0, 8), vec![0; 4])
    );

    // An empty intermediate: the FFN outputs zeros.
    let xf = rng.uniform::<f16, _>((3, 8), -1.0, 1.0);
    let (wg, wd) = (
        Array3::<f16>::zeros((2, 0, 8)),
        Array3::<f16>::zeros((2, 8, 0)),
    );
    let gl = dsnpu_ops::ndarray::array![1i64, 2];
    let y = npu
        .expert_ffn(
            xf.view(),
            wg.view(),
            wg.view(),
            wd.view(),
            gl.view(),
            GroupListType::Counts,
        )
        .unwrap();
    assert!(y.iter().all(|v| v.to_f32() == 0.0) && y.dim() == (3, 8));

    // A combine of no pairs is shared + residual.
    let (s, r) = (
        rng.uniform::<bf16, _>((2, 8), -1.0, 1.0),
        rng.uniform::<bf16, _>((2, 8), -1.0, 1.0),
    );
    let y0 = Array2::<bf16>::zeros((0, 8));
    let idx = dsnpu_ops::ndarray::Array1::<i32>::zeros(0);
    let w0 = Array2::<f32>::zeros((2, 0));
    let got = npu
        .moe_finalize_routing(
            y0.view(),
            idx.view(),
            w0.view(),
            Some(s.view()),
            Some(r.view()),
        )
        .unwrap();
    let want = Cpu
        .moe_finalize_routing(
            y0.view(),
            idx.view(),
            w0.view(),
            Some(s.view()),
            Some(r.view()),
        )
        .unwrap();
    assert_eq!(got, want);
}

macro_rules! per_dtype {
    ($($m:ident: $t:ty),*) => {$(
        mod $m {
            use super::*;
            #[test]
            fn gating_topk() {
                gating::<$t>();
            }
            #[test]
            fn init_routing() {
                dispatch::<$t>(routing_cases());
            }
            #[test]
            fn init_routing_int8() {
                dispatch_int8::<$t>(routing_cases());
            }
            #[test]
            fn finalize_routing() {
                combine::<$t>(routing_cases());
            }
            #[test]
            fn grouped_matmul() {
                grouped::<$t>();
            }
            #[test]
            fn expert_ffn() {
                ffn::<$t>();
            }
        }
    )*};
}

per_dtype!(f32_: f32, f16_: f16, bf16_: bf16);

/// Prefill at DeepSeek-V3's full width in bf16: T = 4096 tokens of 7168 through dispatch (plain and
/// int8) and combine. About 15 s and 3 GB in a debug build, so not in the default run:
/// `cargo test -p dsnpu-ops --test npu_moe_cases -- --ignored`.
#[test]
#[ignore]
fn prefill_at_full_width() {
    let case = || vec![routing(4096, 7168, 8, None, IdDraw::Distinct)];
    dispatch::<bf16>(case());
    dispatch_int8::<bf16>(case());
    combine::<bf16>(case());
}
