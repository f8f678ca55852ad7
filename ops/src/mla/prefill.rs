//! Causal attention over packed variable-length sequences (non-absorbed MLA prefill).
//!
//! # Semantics
//! Sequence `i` owns the packed tokens `cu_seqlens[i] .. cu_seqlens[i+1]` (flash-attention's varlen
//! layout). Token `t` of a sequence starting at `start` attends, per head `h`, to the tokens
//! `start ..= t` of the same sequence only:
//!
//! - `score_j = scale · q[t,h]·k[j,h]` in `f32` (DeepSeek: `Dqk = qk_nope + qk_rope = 192`);
//! - `out[t,h] = Σ_j softmax(score)_j · v[j,h]`, rounded once to `T` (`Dv` may differ from `Dqk`:
//!   DeepSeek's 128);
//! - `lse[h,t] = ln Σ_j exp(score_j)`, natural log of the scaled scores, `[H,T]` as flash-attention's
//!   varlen forward lays it out.
//!
//! # Validation
//! `q` `[T,H,Dqk]` with `H, Dqk ≥ 1`; `k` the same shape; `v` `[T,H,Dv]` with `Dv ≥ 1`;
//! `cu_seqlens` non-empty, starting at 0, non-decreasing, ending at `T` (empty sequences are allowed);
//! a finite `scale`. Values are trusted: NaN or infinities propagate.
use super::softmax::{axpy, dot, softmax_lse};
use crate::error::{expect_shape, invalid};
use crate::{Float, OpsError, Result};
use ndarray::{Array2, Array3, ArrayView1, ArrayView3};

const OP: &str = "mla_prefill";

/// `q`,`k` `[T,H,Dqk]`, `v` `[T,H,Dv]`, `cu_seqlens` `[B+1]` starting at 0 and ending at T.
/// Returns `(out [T,H,Dv], lse f32 [H,T])`.
pub fn mla_prefill<T: Float>(
    q: ArrayView3<T>,
    k: ArrayView3<T>,
    v: ArrayView3<T>,
    cu_seqlens: ArrayView1<i32>,
    scale: f32,
) -> Result<(Array3<T>, Array2<f32>)> {
    let (tokens, heads, dqk) = q.dim();
    if heads == 0 || dqk == 0 {
        return Err(OpsError::Shape {
            op: OP,
            arg: "q",
            got: q.shape().to_vec(),
            expected: "[T, H ≥ 1, Dqk ≥ 1]".into(),
        });
    }
    expect_shape(OP, "k", k.shape(), q.shape())?;
    let dv = v.dim().2;
    if dv == 0 {
        return Err(OpsError::Shape {
            op: OP,
            arg: "v",
            got: v.shape().to_vec(),
            expected: "[T, H, Dv ≥ 1]".into(),
        });
    }
    expect_shape(OP, "v", v.shape(), &[tokens, heads, dv])?;
    if !scale.is_finite() {
        return Err(invalid(OP, "scale", format!("{scale} is not finite")));
    }
    let bounds = check_cu_seqlens(&cu_seqlens, tokens)?;

    let row = |a: &ArrayView3<T>, t: usize, h: usize| -> Vec<f32> {
        a.slice(ndarray::s![t, h, ..])
            .iter()
            .map(|x| x.to_f32())
            .collect()
    };
    let mut out = Array3::from_elem((tokens, heads, dv), T::default());
    let mut lse = Array2::zeros((heads, tokens));
    for window in bounds.windows(2) {
        let (start, end) = (window[0], window[1]);
        for h in 0..heads {
            let keys: Vec<Vec<f32>> = (start..end).map(|j| row(&k, j, h)).collect();
            let values: Vec<Vec<f32>> = (start..end).map(|j| row(&v, j, h)).collect();
            for t in start..end {
                let qt = row(&q, t, h);
                let mut p: Vec<f32> = keys[..=t - start]
                    .iter()
                    .map(|kj| scale * dot(&qt, kj))
                    .collect();
                lse[[h, t]] = softmax_lse(&mut p);
                let mut acc = vec![0.0f32; dv];
                for (w, vj) in p.iter().zip(&values) {
                    axpy(&mut acc, *w, vj);
                }
                for (d, x) in acc.into_iter().enumerate() {
                    out[[t, h, d]] = T::from_f32(x);
                }
            }
        }
    }
    Ok((out, lse))
}

/// `cu_seqlens` must be `[0, …, tokens]` and non-decreasing; returns it as `usize`s.
fn check_cu_seqlens(cu_seqlens: &ArrayView1<i32>, tokens: usize) -> Result<Vec<usize>> {
    let Some(&first) = cu_seqlens.first() else {
        return Err(OpsError::Shape {
            op: OP,
            arg: "cu_seqlens",
            got: vec![0],
            expected: "[B + 1] with B ≥ 0".into(),
        });
    };
    if first != 0 {
        return Err(invalid(
            OP,
            "cu_seqlens",
            format!("starts at {first}, not 0"),
        ));
    }
    let mut bounds = Vec::with_capacity(cu_seqlens.len());
    let mut prev = 0i32;
    for (i, &c) in cu_seqlens.iter().enumerate() {
        if c < prev {
            return Err(invalid(
                OP,
                "cu_seqlens",
                format!("decreases at position {i}: {prev} then {c}"),
            ));
        }
        prev = c;
        bounds.push(c as usize);
    }
    if prev as usize != tokens {
        return Err(invalid(
            OP,
            "cu_seqlens",
            format!("ends at {prev}, not at the {tokens} packed tokens"),
        ));
    }
    Ok(bounds)
}
