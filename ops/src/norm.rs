//! RMSNorm, optionally fused with a residual add.
use crate::{Float, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight`, over the last axis.
pub fn rms_norm<T: Float>(x: ArrayView2<T>, weight: ArrayView1<T>, eps: f32) -> Result<Array2<T>> {
    let _ = (x, weight, eps);
    todo!("contract stub")
}

/// `sum = x + residual` (rounded to `T`), then `rms_norm(sum)`. Returns `(normed, sum)`.
pub fn add_rms_norm<T: Float>(
    x: ArrayView2<T>,
    residual: ArrayView2<T>,
    weight: ArrayView1<T>,
    eps: f32,
) -> Result<(Array2<T>, Array2<T>)> {
    let _ = (x, residual, weight, eps);
    todo!("contract stub")
}
