//! The whole routed-expert part of a DeepSeek-V3 MoE layer as one call:
//! router → [`moe_gating_topk`] → [`moe_init_routing`] → [`expert_ffn`] → [`moe_finalize_routing`].
//!
//! # Contract
//! - **Router**: `logits[t,e] = Σ_h x[t,h] · router[e,h]` in `f32`, kept in `f32` (Hugging Face's
//!   `DeepseekV3TopkRouter` casts both operands to `f32`); `router` is `[E,H]`.
//! - **Experts**: the layer holds the weights of experts `local` (all `E` when `None`), stacked
//!   `[E_local, I, H]` / `[E_local, H, I]` in expert order. Pairs routed to other experts are dropped
//!   (expert parallelism: another rank computes them), so the output is this rank's partial sum.
//! - **Shared experts and residual** are passed in already computed (`[T,H]`) and added once by the
//!   combine. With expert parallelism only one rank should pass them.
//!
//! Validation is that of each stage, plus: `router` is `[E, H]`, and the expert weights hold exactly
//! `len(local)` experts.
use super::{
    expert_ffn, moe_finalize_routing, moe_gating_topk, moe_init_routing, ExpertTokensMode,
    GatingConfig, GroupListType,
};
use crate::error::{expect_shape, invalid};
use crate::{Float, Result};
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayView3};
use std::ops::Range;

/// The weights and configuration of one MoE layer's routed experts.
#[derive(Debug, Clone)]
pub struct MoeLayerParams<'a, T> {
    /// `[E, H]`: the router (`gate.weight` in DeepSeek-V3 checkpoints).
    pub router: ArrayView2<'a, T>,
    /// `[E]`: `e_score_correction_bias` (selection only).
    pub bias: Option<ArrayView1<'a, f32>>,
    pub gating: GatingConfig,
    /// `[E_local, I, H]`.
    pub w_gate: ArrayView3<'a, T>,
    /// `[E_local, I, H]`.
    pub w_up: ArrayView3<'a, T>,
    /// `[E_local, H, I]`.
    pub w_down: ArrayView3<'a, T>,
    /// The experts whose weights are given; `None` = all `E`.
    pub local: Option<Range<usize>>,
}

impl<T> MoeLayerParams<'_, T> {
    /// Number of routed experts `E` (rows of the router).
    pub fn num_experts(&self) -> usize {
        self.router.nrows()
    }

    /// The local expert range, `0..E` when none was given.
    pub fn local_range(&self) -> Range<usize> {
        self.local.clone().unwrap_or(0..self.num_experts())
    }

    /// Check the parts no single stage checks: `router` against `x`, weights against `local`.
    pub fn validate(&self, op: &'static str, hidden: usize) -> Result<()> {
        let experts = self.num_experts();
        expect_shape(op, "router", self.router.shape(), &[experts, hidden])?;
        let local = self.local_range();
        if local.start > local.end || local.end > experts {
            return Err(invalid(
                op,
                "local",
                format!(
                    "range {}..{} is not within 0..{experts}",
                    local.start, local.end
                ),
            ));
        }
        let n_local = local.end - local.start;
        expect_shape(op, "w_gate", &self.w_gate.shape()[..1], &[n_local])?;
        Ok(())
    }
}

/// `out = Σ_k w·expert_{id}(x) (+ shared + residual)` over this layer's local experts (see module docs).
pub fn moe_layer<T: Float>(
    x: ArrayView2<T>,
    params: &MoeLayerParams<T>,
    shared: Option<ArrayView2<T>>,
    residual: Option<ArrayView2<T>>,
) -> Result<Array2<T>> {
    const OP: &str = "moe_layer";
    params.validate(OP, x.ncols())?;
    let logits = router_logits(x, params.router)?;
    let (ids, weights) = moe_gating_topk(logits.view(), params.bias, &params.gating)?;
    let local = params.local_range();
    let routed = moe_init_routing(
        x,
        ids.view(),
        params.num_experts(),
        Some(local.clone()),
        ExpertTokensMode::Count,
    )?;
    let counts = routed.expert_tokens.slice(s![local]);
    let y = expert_ffn(
        routed.expanded_x.view(),
        params.w_gate,
        params.w_up,
        params.w_down,
        counts,
        GroupListType::Counts,
    )?;
    moe_finalize_routing(
        y.view(),
        routed.expanded_row_idx.view(),
        weights.view(),
        shared,
        residual,
    )
}

/// `x [T,H] · routerᵀ [H,E]` in `f32`, not rounded.
pub fn router_logits<T: Float>(x: ArrayView2<T>, router: ArrayView2<T>) -> Result<Array2<f32>> {
    let experts = router.nrows();
    expect_shape(
        "router_logits",
        "router",
        router.shape(),
        &[experts, x.ncols()],
    )?;
    let mut out = Array2::<f32>::zeros((x.nrows(), experts));
    for (t, xr) in x.rows().into_iter().enumerate() {
        let xf: Vec<f32> = xr.iter().map(|v| v.to_f32()).collect();
        for (e, wr) in router.rows().into_iter().enumerate() {
            out[[t, e]] = xf.iter().zip(wr).map(|(a, b)| a * b.to_f32()).sum();
        }
    }
    Ok(out)
}
