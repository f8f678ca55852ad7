//! `GroupedMatmul` along M and the expert FFN built on it.
use crate::{Float, Result};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayView3};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupListType {
    /// Inclusive cumulative sums (aclnn group_list_type 0).
    Cumsum,
    /// Per-group counts (group_list_type 1).
    Counts,
}

/// `y[rows of group e] = x[rows of group e] · w[e]ᵀ`, `x` `[R,K]`, `w` `[E,N,K]`, `group_list` `[E]`.
pub fn grouped_matmul<T: Float>(
    x: ArrayView2<T>,
    w: ArrayView3<T>,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
) -> Result<Array2<T>> {
    let _ = (x, w, group_list, list_type);
    todo!("contract stub")
}

/// `down(silu(gate(x)) * up(x))` per expert group; `w_gate`,`w_up` `[E,I,H]`, `w_down` `[E,H,I]`.
pub fn expert_ffn<T: Float>(
    x: ArrayView2<T>,
    w_gate: ArrayView3<T>,
    w_up: ArrayView3<T>,
    w_down: ArrayView3<T>,
    group_list: ArrayView1<i64>,
    list_type: GroupListType,
) -> Result<Array2<T>> {
    let _ = (x, w_gate, w_up, w_down, group_list, list_type);
    todo!("contract stub")
}
