//! `MoeFinalizeRouting` / `MoeTokenUnpermute`: combine.
//!
//! # Contract
//! With `T, K` from `weights [T,K]` and `y [R,H]` the expert outputs in dispatch order:
//! `out[t] = Σ_k weights[t,k] · y[expanded_row_idx[t*K+k]] + shared[t] + residual[t]`,
//! accumulated in `f32` (the K products in `k` order, then `shared`, then `residual`) and rounded once to
//! `T`. An index of `-1` (a pair dropped by the active expert range) contributes nothing. Several pairs may
//! name the same row.
//!
//! # Validation
//! `expanded_row_idx` has `T*K` entries, each in `[-1, R)`; `shared` and `residual`, when given, are
//! `[T,H]`. Weights are not checked (any finite or non-finite value is used as is).
use crate::error::expect_shape;
use crate::{Float, OpsError, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};

const OP: &str = "moe_finalize_routing";

/// The checks of [`moe_finalize_routing`] for `y [rows, hidden]` (see the module docs):
/// `expanded_row_idx [T*K]` with every entry in `[-1, rows)`, then the extras. The device backend
/// runs the same ones.
pub fn check_finalize<T>(
    rows: usize,
    hidden: usize,
    expanded_row_idx: &ArrayView1<i32>,
    weights: &ArrayView2<f32>,
    shared: Option<&ArrayView2<T>>,
    residual: Option<&ArrayView2<T>>,
) -> Result<()> {
    let (tokens, k) = weights.dim();
    expect_shape(
        OP,
        "expanded_row_idx",
        expanded_row_idx.shape(),
        &[tokens * k],
    )?;
    if let Some((i, &r)) = expanded_row_idx
        .iter()
        .enumerate()
        .find(|(_, &r)| r < -1 || r as i64 >= rows as i64)
    {
        return Err(OpsError::IndexOutOfRange {
            op: OP,
            arg: "expanded_row_idx",
            index: r.into(),
            position: i,
            bound: rows as i64,
        });
    }
    check_extras(tokens, hidden, shared, residual)
}

/// `shared` and `residual`, when given, are `[tokens, hidden]` (errors name `moe_finalize_routing`).
pub fn check_extras<T>(
    tokens: usize,
    hidden: usize,
    shared: Option<&ArrayView2<T>>,
    residual: Option<&ArrayView2<T>>,
) -> Result<()> {
    if let Some(s) = shared {
        expect_shape(OP, "shared", s.shape(), &[tokens, hidden])?;
    }
    if let Some(r) = residual {
        expect_shape(OP, "residual", r.shape(), &[tokens, hidden])?;
    }
    Ok(())
}

/// `out[t] = Σ_k weights[t,k]·y[expanded_row_idx[t*K+k]] (+ shared[t] + residual[t])`; index -1 contributes 0.
pub fn moe_finalize_routing<T: Float>(
    y: ArrayView2<T>,
    expanded_row_idx: ArrayView1<i32>,
    weights: ArrayView2<f32>,
    shared: Option<ArrayView2<T>>,
    residual: Option<ArrayView2<T>>,
) -> Result<Array2<T>> {
    let (tokens, k) = weights.dim();
    let (rows, hidden) = y.dim();
    check_finalize(
        rows,
        hidden,
        &expanded_row_idx,
        &weights,
        shared.as_ref(),
        residual.as_ref(),
    )?;

    let mut out = Array2::<T>::default((tokens, hidden));
    let mut acc = vec![0.0f32; hidden];
    for t in 0..tokens {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for j in 0..k {
            let r = expanded_row_idx[t * k + j];
            if r < 0 {
                continue;
            }
            let w = weights[[t, j]];
            for (a, v) in acc.iter_mut().zip(y.row(r as usize)) {
                *a += w * v.to_f32();
            }
        }
        for extra in [
            shared.as_ref().map(|s| s.row(t)),
            residual.as_ref().map(|r| r.row(t)),
        ]
        .into_iter()
        .flatten()
        {
            for (a, v) in acc.iter_mut().zip(extra) {
                *a += v.to_f32();
            }
        }
        for (o, &a) in out.row_mut(t).iter_mut().zip(&acc) {
            *o = T::from_f32(a);
        }
    }
    Ok(out)
}
