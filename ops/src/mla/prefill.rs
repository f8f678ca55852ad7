//! Causal attention over packed variable-length sequences (non-absorbed MLA prefill).
use crate::{Float, Result};
use ndarray::{Array2, Array3, ArrayView1, ArrayView3};

/// `q`,`k` `[T,H,Dqk]`, `v` `[T,H,Dv]`, `cu_seqlens` `[B+1]` starting at 0 and ending at T.
/// Returns `(out [T,H,Dv], lse f32 [H,T])`.
pub fn mla_prefill<T: Float>(
    q: ArrayView3<T>,
    k: ArrayView3<T>,
    v: ArrayView3<T>,
    cu_seqlens: ArrayView1<i32>,
    scale: f32,
) -> Result<(Array3<T>, Array2<f32>)> {
    let _ = (q, k, v, cu_seqlens, scale);
    todo!("contract stub")
}
