//! The feed-forward half of a layer: the dense SwiGLU MLP, or mixture-of-experts with shared experts.
//!
//! MoE follows transformers' `DeepseekV3MoE`: router logits `x·Wᵀ` in f32; gating (V3: sigmoid scores, the
//! correction bias for selection only, group-limited top-k, weights from unbiased scores normalised and
//! scaled; V2: softmax and greedy top-k, scaled) → dispatch rows to experts → grouped expert SwiGLU →
//! weighted combine, plus the shared experts, plus the residual (fused into the combine operator).

use crate::backend::ModelBackend;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::{MlpWeights, MoeWeights};
use dsnpu_ops::moe::{ExpertTokensMode, GroupListType};
use ndarray::{Array2, ArrayView2};

/// `down(silu(gate(x)) · up(x))`.
pub(crate) fn dense_mlp<B: ModelBackend>(
    be: &B,
    w: &MlpWeights,
    x: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let gate_up = be.linear(x, w.gate_up.view(), None)?;
    let act = be.silu_mul(gate_up.view())?;
    Ok(be.linear(act.view(), w.down.view(), None)?)
}

/// `residual + Σ_k w_k·expert_k(x) + shared(x)`.
pub(crate) fn moe<B: ModelBackend>(
    be: &B,
    w: &MoeWeights,
    cfg: &ModelConfig,
    x: ArrayView2<f32>,
    residual: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let logits = be.linear(x, w.router.view(), None)?;
    let (ids, weights) = be.moe_gating_topk(
        logits.view(),
        w.bias.as_ref().map(|b| b.view()),
        &cfg.gating(),
    )?;
    let routed = be.moe_init_routing(
        x,
        ids.view(),
        cfg.n_routed_experts,
        None,
        ExpertTokensMode::Count,
    )?;
    let y = be.expert_ffn(
        routed.expanded_x.view(),
        w.gate.view(),
        w.up.view(),
        w.down.view(),
        routed.expert_tokens.view(),
        GroupListType::Counts,
    )?;
    let shared = dense_mlp(be, &w.shared, x)?;
    Ok(be.moe_finalize_routing(
        y.view(),
        routed.expanded_row_idx.view(),
        weights.view(),
        Some(shared.view()),
        Some(residual),
    )?)
}
