//! `MoeGatingTopK`.
use crate::{Float, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFunc {
    Softmax,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatingConfig {
    pub top_k: usize,
    /// Number of expert groups (1 = plain top-k). Must divide E.
    pub n_group: usize,
    /// Groups kept per token.
    pub topk_group: usize,
    pub score: ScoreFunc,
    /// Divide the K weights by their sum (+1e-20) before scaling.
    pub normalize: bool,
    pub routed_scaling_factor: f32,
}

/// Returns `(ids i32 [T,K], weights f32 [T,K])`, ids in descending order of biased score.
pub fn moe_gating_topk<T: Float>(
    logits: ArrayView2<T>,
    bias: Option<ArrayView1<f32>>,
    cfg: &GatingConfig,
) -> Result<(Array2<i32>, Array2<f32>)> {
    let _ = (logits, bias, cfg);
    todo!("contract stub")
}
