//! `MoeInitRoutingV2`: dispatch of token rows to expert-sorted order.
use crate::{Float, Result};
use ndarray::{Array1, Array2, ArrayView2};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertTokensMode {
    Count,
    Cumsum,
}

#[derive(Debug, Clone)]
pub struct InitRouting<T> {
    /// `[R, H]`: rows sorted stably by expert; R = number of pairs whose expert is active.
    pub expanded_x: Array2<T>,
    /// `[T*K]`: destination row of pair `t*K+k`, or -1 when its expert is outside the active range.
    pub expanded_row_idx: Array1<i32>,
    /// `[E]`: tokens per expert (0 outside the active range), as counts or inclusive cumsum.
    pub expert_tokens: Array1<i64>,
}

pub fn moe_init_routing<T: Float>(
    x: ArrayView2<T>,
    ids: ArrayView2<i32>,
    num_experts: usize,
    active: Option<Range<usize>>,
    mode: ExpertTokensMode,
) -> Result<InitRouting<T>> {
    let _ = (x, ids, num_experts, active, mode);
    todo!("contract stub")
}
