//! The MoE operator family as a backend trait, with its [`Cpu`](super::Cpu) (the references) and
//! [`Fallback`](super::Fallback) implementations (made by `op_family!`).
//!
//! Each method has the arguments and result of the free function of the same name in [`crate::moe`]; see
//! those for the contracts. [`MoeOps::moe_layer`] has a default body ([`chain_moe_layer`]) that chains
//! the backend's own stages (with the router product computed on the host by [`router_logits`]), so a
//! backend gets the whole layer as soon as it implements the stages and may override it with a fused
//! path.
use super::family::op_family;
use crate::moe::{
    self, router_logits, ExpertTokensMode, GatingConfig, GroupListType, InitRouting,
    InitRoutingQuant, MoeLayerParams,
};
use crate::{Float, Result};
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayView3};
use std::ops::Range;

op_family! {
    /// Mixture-of-experts operators: gating, dispatch (plain and int8), grouped matmul, expert FFN,
    /// combine.
    pub trait MoeOps {
        /// See [`moe::moe_gating_topk`].
        fn moe_gating_topk(
            logits: ArrayView2<T>,
            bias: Option<ArrayView1<f32>>,
            cfg: &GatingConfig,
        ) -> (Array2<i32>, Array2<f32>) = moe::moe_gating_topk, MoeGatingTopk;

        /// See [`moe::moe_init_routing`].
        fn moe_init_routing(
            x: ArrayView2<T>,
            ids: ArrayView2<i32>,
            num_experts: usize,
            active: Option<Range<usize>>,
            mode: ExpertTokensMode,
        ) -> InitRouting<T> = moe::moe_init_routing, MoeInitRouting;

        /// See [`moe::moe_init_routing_quant`].
        fn moe_init_routing_quant(
            x: ArrayView2<T>,
            ids: ArrayView2<i32>,
            num_experts: usize,
            active: Option<Range<usize>>,
            mode: ExpertTokensMode,
        ) -> InitRoutingQuant = moe::moe_init_routing_quant, MoeInitRoutingQuant;

        /// See [`moe::grouped_matmul`].
        fn grouped_matmul(
            x: ArrayView2<T>,
            w: ArrayView3<T>,
            group_list: ArrayView1<i64>,
            list_type: GroupListType,
        ) -> Array2<T> = moe::grouped_matmul, GroupedMatmul;

        /// See [`moe::expert_ffn`].
        fn expert_ffn(
            x: ArrayView2<T>,
            w_gate: ArrayView3<T>,
            w_up: ArrayView3<T>,
            w_down: ArrayView3<T>,
            group_list: ArrayView1<i64>,
            list_type: GroupListType,
        ) -> Array2<T> = moe::expert_ffn, ExpertFfn;

        /// See [`moe::moe_finalize_routing`].
        fn moe_finalize_routing(
            y: ArrayView2<T>,
            expanded_row_idx: ArrayView1<i32>,
            weights: ArrayView2<f32>,
            shared: Option<ArrayView2<T>>,
            residual: Option<ArrayView2<T>>,
        ) -> Array2<T> = moe::moe_finalize_routing, MoeFinalizeRouting;

        /// See [`moe::moe_layer`]. The default ([`chain_moe_layer`]) chains this backend's stages
        /// exactly as the reference does.
        fn moe_layer(
            x: ArrayView2<T>,
            params: &MoeLayerParams<T>,
            shared: Option<ArrayView2<T>>,
            residual: Option<ArrayView2<T>>,
        ) -> Array2<T> = moe::moe_layer, MoeLayer, default chain_moe_layer;
    }
}

/// [`MoeOps::moe_layer`]'s default: `b`'s own stages chained as [`moe::moe_layer`] chains the
/// references.
pub fn chain_moe_layer<B: MoeOps + ?Sized, T: Float>(
    b: &B,
    x: ArrayView2<T>,
    params: &MoeLayerParams<T>,
    shared: Option<ArrayView2<T>>,
    residual: Option<ArrayView2<T>>,
) -> Result<Array2<T>> {
    params.validate("moe_layer", x.ncols())?;
    let logits = router_logits(x, params.router)?;
    let (ids, weights) = b.moe_gating_topk(logits.view(), params.bias, &params.gating)?;
    let local = params.local_range();
    let routed = b.moe_init_routing(
        x,
        ids.view(),
        params.num_experts(),
        Some(local.clone()),
        ExpertTokensMode::Count,
    )?;
    let y = b.expert_ffn(
        routed.expanded_x.view(),
        params.w_gate,
        params.w_up,
        params.w_down,
        routed.expert_tokens.slice(s![local]),
        GroupListType::Counts,
    )?;
    b.moe_finalize_routing(
        y.view(),
        routed.expanded_row_idx.view(),
        weights.view(),
        shared,
        residual,
    )
}
