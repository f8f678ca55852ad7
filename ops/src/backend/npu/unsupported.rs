//! The MoE and MLA families on the device: no kernels are wired yet, so every operator is
//! `Unsupported` (the conformance suites report skips). The MoE kernels land in `dsnpu-kernels`
//! separately and will be launched from here.

use std::ops::Range;

use ndarray::{Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4};

use super::Npu;
use crate::backend::{MlaOps, MoeOps};
use crate::mla::PagedLatentCache;
use crate::moe::{
    ExpertTokensMode, GatingConfig, GroupListType, InitRouting, InitRoutingQuant, MoeLayerParams,
};
use crate::{Float, Result};

const WHY: &str = "no device kernel wired yet";

impl MoeOps for Npu {
    fn moe_gating_topk<T: Float>(
        &self,
        _logits: ArrayView2<T>,
        _bias: Option<ArrayView1<f32>>,
        _cfg: &GatingConfig,
    ) -> Result<(Array2<i32>, Array2<f32>)> {
        Err(self.unsupported("moe_gating_topk", WHY))
    }

    fn moe_init_routing<T: Float>(
        &self,
        _x: ArrayView2<T>,
        _ids: ArrayView2<i32>,
        _num_experts: usize,
        _active: Option<Range<usize>>,
        _mode: ExpertTokensMode,
    ) -> Result<InitRouting<T>> {
        Err(self.unsupported("moe_init_routing", WHY))
    }

    fn moe_init_routing_quant<T: Float>(
        &self,
        _x: ArrayView2<T>,
        _ids: ArrayView2<i32>,
        _num_experts: usize,
        _active: Option<Range<usize>>,
        _mode: ExpertTokensMode,
    ) -> Result<InitRoutingQuant> {
        Err(self.unsupported("moe_init_routing_quant", WHY))
    }

    fn grouped_matmul<T: Float>(
        &self,
        _x: ArrayView2<T>,
        _w: ArrayView3<T>,
        _group_list: ArrayView1<i64>,
        _list_type: GroupListType,
    ) -> Result<Array2<T>> {
        Err(self.unsupported("grouped_matmul", WHY))
    }

    fn expert_ffn<T: Float>(
        &self,
        _x: ArrayView2<T>,
        _w_gate: ArrayView3<T>,
        _w_up: ArrayView3<T>,
        _w_down: ArrayView3<T>,
        _group_list: ArrayView1<i64>,
        _list_type: GroupListType,
    ) -> Result<Array2<T>> {
        Err(self.unsupported("expert_ffn", WHY))
    }

    fn moe_finalize_routing<T: Float>(
        &self,
        _y: ArrayView2<T>,
        _expanded_row_idx: ArrayView1<i32>,
        _weights: ArrayView2<f32>,
        _shared: Option<ArrayView2<T>>,
        _residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        Err(self.unsupported("moe_finalize_routing", WHY))
    }

    fn moe_layer<T: Float>(
        &self,
        _x: ArrayView2<T>,
        _params: &MoeLayerParams<T>,
        _shared: Option<ArrayView2<T>>,
        _residual: Option<ArrayView2<T>>,
    ) -> Result<Array2<T>> {
        Err(self.unsupported("moe_layer", WHY))
    }
}

impl MlaOps for Npu {
    fn mla_cache_write<T: Float>(
        &self,
        _cache: &mut PagedLatentCache<T>,
        _latent: ArrayView2<T>,
        _k_rope: ArrayView2<T>,
        _slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        Err(self.unsupported("mla_cache_write", WHY))
    }

    fn mla_decode<T: Float>(
        &self,
        _q_nope: ArrayView4<T>,
        _q_rope: ArrayView4<T>,
        _cache: &PagedLatentCache<T>,
        _block_table: ArrayView2<i32>,
        _seq_lens: ArrayView1<i32>,
        _scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        Err(self.unsupported("mla_decode", WHY))
    }

    fn mla_prefill<T: Float>(
        &self,
        _q: ArrayView3<T>,
        _k: ArrayView3<T>,
        _v: ArrayView3<T>,
        _cu_seqlens: ArrayView1<i32>,
        _scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        Err(self.unsupported("mla_prefill", WHY))
    }
}
