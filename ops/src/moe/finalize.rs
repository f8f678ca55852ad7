//! `MoeFinalizeRouting` / `MoeTokenUnpermute`: combine.
use crate::{Float, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};

/// `out[t] = Σ_k weights[t,k]·y[expanded_row_idx[t*K+k]] (+ shared[t] + residual[t])`; index -1 contributes 0.
pub fn moe_finalize_routing<T: Float>(
    y: ArrayView2<T>,
    expanded_row_idx: ArrayView1<i32>,
    weights: ArrayView2<f32>,
    shared: Option<ArrayView2<T>>,
    residual: Option<ArrayView2<T>>,
) -> Result<Array2<T>> {
    let _ = (y, expanded_row_idx, weights, shared, residual);
    todo!("contract stub")
}
