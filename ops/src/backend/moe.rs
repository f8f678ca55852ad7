//! The MoE operator family as a backend trait, and its [`Cpu`] implementation (the references).
//!
//! Each method has the arguments and result of the free function of the same name in [`crate::moe`]; see
//! those for the contracts. [`MoeOps::moe_layer`] has a default body that chains the backend's own
//! stages (with the router product computed on the host by [`router_logits`]), so a backend gets the whole
//! layer as soon as it implements the stages and may override it with a fused path.
use super::{Backend, Cpu};
use crate::moe::{
    self, router_logits, ExpertTokensMode, GatingConfig, GroupListType, InitRouting,
    InitRoutingQuant, MoeLayerParams,
};
use crate::{Float, Result};
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayView3};
use std::ops::Range;

/// Mixture-of-experts operators: gating, dispatch (plain and int8), grouped matmul, expert FFN, combine.
pub trait MoeOps: Backend {
    /// See [`moe::moe_gating_topk`].
    fn moe_gating_topk<T: Float>(
        &self,
        logits: ArrayView2<T>,
        bias: Option<ArrayView1<f32>>,
        cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)>;

    /// See [`moe::moe_init_routing`].
    fn moe_init_routing<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRouting<T>>;

    /// See [`moe::moe_init_routing_quant`].
    fn moe_init_routing_quant<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRoutingQuant>;

    /// See [`moe::grouped_matmul`].
    fn grouped_matmul<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>>;

    /// See [`moe::expert_ffn`].
    fn expert_ffn<T: Float>(
        &self,
        x: ArrayView2<T>,
        w_gate: ArrayView3<T>,
        w_up: ArrayView3<T>,
        w_down: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>>;

    /// See [`moe::moe_finalize_routing`].
    fn moe_finalize_routing<T: Float>(
        &self,
        y: ArrayView2<T>,
        expanded_row_idx: ArrayView1<i32>,
        weights: ArrayView2<f32>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>>;

    /// See [`moe::moe_layer`]. The default chains this backend's stages exactly as the reference does.
    fn moe_layer<T: Float>(
        &self,
        x: ArrayView2<T>,
        params: &MoeLayerParams<T>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        params.validate("moe_layer", x.ncols())?;
        let logits = router_logits(x, params.router)?;
        let (ids, weights) = self.moe_gating_topk(logits.view(), params.bias, &params.gating)?;
        let local = params.local_range();
        let routed = self.moe_init_routing(
            x,
            ids.view(),
            params.num_experts(),
            Some(local.clone()),
            ExpertTokensMode::Count,
        )?;
        let y = self.expert_ffn(
            routed.expanded_x.view(),
            params.w_gate,
            params.w_up,
            params.w_down,
            routed.expert_tokens.slice(s![local]),
            GroupListType::Counts,
        )?;
        self.moe_finalize_routing(
            y.view(),
            routed.expanded_row_idx.view(),
            weights.view(),
            shared,
            residual,
        )
    }
}

impl MoeOps for Cpu {
    fn moe_gating_topk<T: Float>(
        &self,
        logits: ArrayView2<T>,
        bias: Option<ArrayView1<f32>>,
        cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        moe::moe_gating_topk(logits, bias, cfg)
    }

    fn moe_init_routing<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        moe::moe_init_routing(x, ids, num_experts, active, mode)
    }

    fn moe_init_routing_quant<T: Float>(
        &self,
        x: ArrayView2<T>,
        ids: ArrayView2<i32>,
        num_experts: usize,
        active: Option<Range<usize>>,
        mode: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        moe::moe_init_routing_quant(x, ids, num_experts, active, mode)
    }

    fn grouped_matmul<T: Float>(
        &self,
        x: ArrayView2<T>,
        w: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        moe::grouped_matmul(x, w, group_list, list_type)
    }

    fn expert_ffn<T: Float>(
        &self,
        x: ArrayView2<T>,
        w_gate: ArrayView3<T>,
        w_up: ArrayView3<T>,
        w_down: ArrayView3<T>,
        group_list: ArrayView1<i64>,
        list_type: GroupListType,
    ) -> Result<Array2<T>> {
        moe::expert_ffn(x, w_gate, w_up, w_down, group_list, list_type)
    }

    fn moe_finalize_routing<T: Float>(
        &self,
        y: ArrayView2<T>,
        expanded_row_idx: ArrayView1<i32>,
        weights: ArrayView2<f32>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        moe::moe_finalize_routing(y, expanded_row_idx, weights, shared, residual)
    }

    fn moe_layer<T: Float>(
        &self,
        x: ArrayView2<T>,
        params: &MoeLayerParams<T>,
        shared: Option<ArrayView2<T>>,
        residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        moe::moe_layer(x, params, shared, residual)
    }
}
