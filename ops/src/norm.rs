//! RMSNorm, optionally fused with a residual add (`aclnnRmsNorm`, `aclnnAddRmsNorm`).
//!
//! Validates: `x` is `[T, H]` with `H >= 1`, `weight` is `[H]`, the residual has `x`'s shape, `eps` is
//! finite and `>= 0`. Trusts the values: a zero row with `eps = 0` yields NaN (0/0), as in PyTorch.
//!
//! Numerics: the mean of squares, the reciprocal square root and the products are computed in `f32`;
//! the result is rounded to `T` once. (Hugging Face's `DeepseekV3RMSNorm` instead rounds the normalised
//! row to the input dtype before multiplying by the weight, a second rounding; the two agree within one
//! ulp of `T`, inside the conformance tolerance.)
use crate::error::{expect_shape, invalid};
use crate::{Float, Result};
use ndarray::{Array2, ArrayView1, ArrayView2, Zip};

/// The checks of [`rms_norm`] (see the module docs); the device backend runs the same ones.
pub fn check_rms_norm<T>(x: &ArrayView2<T>, weight: &ArrayView1<T>, eps: f32) -> Result<()> {
    const OP: &str = "rms_norm";
    check_x_weight(OP, x, weight)?;
    check_eps(OP, eps)
}

/// The checks of [`add_rms_norm`] (see the module docs); the device backend runs the same ones.
pub fn check_add_rms_norm<T>(
    x: &ArrayView2<T>,
    residual: &ArrayView2<T>,
    weight: &ArrayView1<T>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "add_rms_norm";
    check_x_weight(OP, x, weight)?;
    expect_shape(OP, "residual", residual.shape(), x.shape())?;
    check_eps(OP, eps)
}

fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            op,
            "eps",
            format!("must be finite and >= 0, got {eps}"),
        ))
    }
}

fn check_x_weight<T>(op: &'static str, x: &ArrayView2<T>, weight: &ArrayView1<T>) -> Result<()> {
    let h = x.ncols();
    if h == 0 {
        return Err(crate::error::shape_error(
            op,
            "x",
            x.shape(),
            "[T, H] with H >= 1",
        ));
    }
    expect_shape(op, "weight", weight.shape(), &[h])
}

/// Normalise one row (given as `f32` values) into `out`.
fn norm_row<T: Float>(row: &[f32], weight: &[f32], eps: f32, out: ndarray::ArrayViewMut1<T>) {
    // Eight interleaved partial sums (the order `linear` documents): vectorisable and deterministic.
    let sum_sq = crate::linear::dot(row, row);
    let inv_rms = 1.0 / (sum_sq / row.len() as f32 + eps).sqrt();
    Zip::from(out)
        .and(row)
        .and(weight)
        .for_each(|o, &v, &w| *o = T::from_f32(v * inv_rms * w));
}

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight`, over the last axis.
pub fn rms_norm<T: Float>(x: ArrayView2<T>, weight: ArrayView1<T>, eps: f32) -> Result<Array2<T>> {
    check_rms_norm(&x, &weight, eps)?;
    let w: Vec<f32> = weight.iter().map(|v| v.to_f32()).collect();
    let mut y = Array2::<T>::default(x.raw_dim());
    let mut row = vec![0f32; x.ncols()];
    for (xr, yr) in x.rows().into_iter().zip(y.rows_mut()) {
        row.iter_mut().zip(xr).for_each(|(r, v)| *r = v.to_f32());
        norm_row(&row, &w, eps, yr);
    }
    Ok(y)
}

/// `sum = x + residual` (rounded to `T`), then `rms_norm(sum)`. Returns `(normed, sum)`.
///
/// The norm is taken of the **rounded** sum, i.e. of exactly the `sum` returned, which is what the next
/// layer adds its output to. This matches an unfused `x + residual` in the model's dtype followed by
/// RMSNorm, as Hugging Face and vLLM compute it.
pub fn add_rms_norm<T: Float>(
    x: ArrayView2<T>,
    residual: ArrayView2<T>,
    weight: ArrayView1<T>,
    eps: f32,
) -> Result<(Array2<T>, Array2<T>)> {
    check_add_rms_norm(&x, &residual, &weight, eps)?;
    let w: Vec<f32> = weight.iter().map(|v| v.to_f32()).collect();
    let sum = Zip::from(&x)
        .and(&residual)
        .map_collect(|&a, &b| T::from_f32(a.to_f32() + b.to_f32()));
    let mut y = Array2::<T>::default(x.raw_dim());
    let mut row = vec![0f32; x.ncols()];
    for (sr, yr) in sum.rows().into_iter().zip(y.rows_mut()) {
        row.iter_mut().zip(sr).for_each(|(r, v)| *r = v.to_f32());
        norm_row(&row, &w, eps, yr);
    }
    Ok((y, sum))
}
