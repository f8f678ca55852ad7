//! Dense matrix products.
use crate::{Float, Result};
use ndarray::{Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

/// `y = x · wᵀ (+ bias)`, `x` `[M, K]`, `w` `[N, K]` as stored in Hugging Face checkpoints.
pub fn linear<T: Float>(x: ArrayView2<T>, w: ArrayView2<T>, bias: Option<ArrayView1<T>>) -> Result<Array2<T>> {
    let _ = (x, w, bias);
    todo!("contract stub")
}

/// `c[b] = a[b] · b[b]`, `a` `[B, M, K]`, `b` `[B, K, N]`.
pub fn batched_matmul<T: Float>(a: ArrayView3<T>, b: ArrayView3<T>) -> Result<Array3<T>> {
    let _ = (a, b);
    todo!("contract stub")
}
