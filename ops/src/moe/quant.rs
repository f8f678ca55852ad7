//! Dispatch with per-token dynamic int8 quantization (aclnnMoeInitRoutingV3 with `quantMode = 1` and no
//! smoothing scale): halves the bytes a dispatch moves, as DeepEP does.
//!
//! # Contract
//! Routing (rows, order, `expanded_row_idx`, `expert_tokens`, active range, validation) is exactly that of
//! [`moe_init_routing`](super::moe_init_routing). Each dispatched row is quantized on its own, in `f32`:
//! - `scale = max_h |x[t,h]| / 127` (an `f32` division, as the kernel's `ReduceMax` then `/ 127.0f`);
//! - `q[h] = round_half_away_from_zero(x[t,h] / scale)`, clamped to `[-127, 127]`;
//! - a row of zeros has `scale = 0` and `q = 0` (instead of the kernel's undefined `0/0`).
//!
//! The rounding is what MoeInitRoutingV3's kernel does: `Div` in `f32`, `Cast` to `f16` with
//! `CAST_TRUNC`, then to int8 with `CAST_ROUND` (half away from zero). For `|v| ≤ 127` truncating to `f16`
//! never moves `v` across a `n + 0.5` boundary (those are exact in `f16` below 1024, and truncation moves
//! toward zero), so the two casts equal one round-half-away-from-zero of the `f32` quotient.
//! Dequantized, `q[h] · scale ≈ x[t,h]` within `scale / 2`.
//!
//! Non-finite inputs are not rejected; they give unspecified (but non-panicking) codes and scales.
use super::routing::{ExpertTokensMode, RoutingPlan};
use crate::{Float, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use std::ops::Range;

const OP: &str = "moe_init_routing_quant";

/// The int8 form of [`InitRouting`](super::InitRouting).
#[derive(Debug, Clone)]
pub struct InitRoutingQuant {
    /// `[R, H]` int8 codes, rows in the order of [`moe_init_routing`](super::moe_init_routing).
    pub expanded_x: Array2<i8>,
    /// `[R]`: the dequantization scale of each row (`x ≈ q · scale`); `expandedScaleOut` in aclnn.
    pub scales: Array1<f32>,
    /// `[T*K]`: destination row of pair `t*K+k`, or -1 when its expert is outside the active range.
    pub expanded_row_idx: Array1<i32>,
    /// `[E]`: tokens per expert (0 outside the active range), as counts or inclusive cumsum.
    pub expert_tokens: Array1<i64>,
}

pub fn moe_init_routing_quant<T: Float>(
    x: ArrayView2<T>,
    ids: ArrayView2<i32>,
    num_experts: usize,
    active: Option<Range<usize>>,
    mode: ExpertTokensMode,
) -> Result<InitRoutingQuant> {
    let plan = RoutingPlan::new(OP, x.nrows(), ids, num_experts, active)?;
    // Quantize each token once; its K copies share codes and scale.
    let per_token: Vec<(Array1<i8>, f32)> = x.rows().into_iter().map(dynamic_quant_row).collect();
    let rows = plan.source_token.len();
    let mut expanded_x = Array2::<i8>::zeros((rows, x.ncols()));
    let mut scales = Array1::<f32>::zeros(rows);
    for (r, &t) in plan.source_token.iter().enumerate() {
        expanded_x.row_mut(r).assign(&per_token[t].0);
        scales[r] = per_token[t].1;
    }
    Ok(InitRoutingQuant {
        expanded_x,
        scales,
        expanded_row_idx: Array1::from(plan.dest_row.clone()),
        expert_tokens: plan.expert_tokens(mode),
    })
}

/// Quantize one row: `(codes, scale)` with `row ≈ codes · scale` (see the module docs).
pub fn dynamic_quant_row<T: Float>(row: ArrayView1<T>) -> (Array1<i8>, f32) {
    let max_abs = row.iter().fold(0.0f32, |m, v| m.max(v.to_f32().abs()));
    let scale = max_abs / 127.0;
    if scale == 0.0 {
        return (Array1::zeros(row.len()), 0.0);
    }
    let codes = row.iter().map(|v| quantize(v.to_f32(), scale)).collect();
    (codes, scale)
}

/// `round_half_away_from_zero(v / scale)` clamped to `[-127, 127]`. `f32::round` rounds half away from
/// zero; the `as` cast saturates and maps NaN to 0, so this never panics.
pub fn quantize(v: f32, scale: f32) -> i8 {
    (v / scale).round().clamp(-127.0, 127.0) as i8
}
