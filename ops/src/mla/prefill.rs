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
    mla_prefill_varlen(q, k, v, cu_seqlens, cu_seqlens, scale)
}

/// [`mla_prefill`] with keys of their own: sequence `b` owns the queries `cu_q[b] .. cu_q[b+1]` of
/// `q [Tq,H,Dqk]` and the keys `cu_k[b] .. cu_k[b+1]` of `k [Tk,H,Dqk]`, `v [Tk,H,Dv]`, at least as many
/// keys as queries: the first `Lk − Lq` are a cached prefix every query sees, the last `Lq` the queries'
/// own tokens, seen causally (query `i` sees keys `j ≤ Lk − Lq + i`; flash-attention's bottom-right
/// alignment). Returns `(out [Tq,H,Dv], lse f32 [H,Tq])`.
pub fn mla_prefill_varlen<T: Float>(
    q: ArrayView3<T>,
    k: ArrayView3<T>,
    v: ArrayView3<T>,
    cu_q: ArrayView1<i32>,
    cu_k: ArrayView1<i32>,
    scale: f32,
) -> Result<(Array3<T>, Array2<f32>)> {
    let (bounds, kbounds) = check_mla_prefill_varlen(&q, &k, &v, &cu_q, &cu_k, scale)?;
    let (tokens, heads, _) = q.dim();
    let dv = v.dim().2;
    let row = |a: &ArrayView3<T>, t: usize, h: usize| -> Vec<f32> {
        a.slice(ndarray::s![t, h, ..])
            .iter()
            .map(|x| x.to_f32())
            .collect()
    };
    let mut out = Array3::from_elem((tokens, heads, dv), T::default());
    let mut lse = Array2::zeros((heads, tokens));
    for (window, kw) in bounds.windows(2).zip(kbounds.windows(2)) {
        let (start, end) = (window[0], window[1]);
        let (kstart, kend) = (kw[0], kw[1]);
        let prefix = (kend - kstart) - (end - start);
        for h in 0..heads {
            let keys: Vec<Vec<f32>> = (kstart..kend).map(|j| row(&k, j, h)).collect();
            let values: Vec<Vec<f32>> = (kstart..kend).map(|j| row(&v, j, h)).collect();
            for t in start..end {
                let qt = row(&q, t, h);
                let mut p: Vec<f32> = keys[..=prefix + t - start]
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

/// The checks of [`mla_prefill_varlen`] (see the module docs); returns the query and key bounds.
pub(crate) fn check_mla_prefill_varlen<T: Float>(
    q: &ArrayView3<T>,
    k: &ArrayView3<T>,
    v: &ArrayView3<T>,
    cu_q: &ArrayView1<i32>,
    cu_k: &ArrayView1<i32>,
    scale: f32,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let (tokens, heads, dqk) = q.dim();
    if heads == 0 || dqk == 0 {
        return Err(OpsError::Shape {
            op: OP,
            arg: "q",
            got: q.shape().to_vec(),
            expected: "[T, H ≥ 1, Dqk ≥ 1]".into(),
        });
    }
    let keys = k.dim().0;
    expect_shape(OP, "k", k.shape(), &[keys, heads, dqk])?;
    let dv = v.dim().2;
    if dv == 0 {
        return Err(OpsError::Shape {
            op: OP,
            arg: "v",
            got: v.shape().to_vec(),
            expected: "[T, H, Dv ≥ 1]".into(),
        });
    }
    expect_shape(OP, "v", v.shape(), &[keys, heads, dv])?;
    if !scale.is_finite() {
        return Err(invalid(OP, "scale", format!("{scale} is not finite")));
    }
    let bounds = check_cu_seqlens(cu_q, tokens)?;
    let kbounds = check_cu_seqlens(cu_k, keys)?;
    check_prefix_lengths(&bounds, &kbounds)?;

    Ok((bounds, kbounds))
}

/// Every sequence needs at least as many keys as queries, and both lists the same sequence count.
fn check_prefix_lengths(q: &[usize], k: &[usize]) -> Result<()> {
    if q.len() != k.len() {
        return Err(invalid(
            OP,
            "cu_k",
            format!("{} entries, cu_q has {}", k.len(), q.len()),
        ));
    }
    for (b, (qw, kw)) in q.windows(2).zip(k.windows(2)).enumerate() {
        if kw[1] - kw[0] < qw[1] - qw[0] {
            return Err(invalid(
                OP,
                "cu_k",
                format!(
                    "sequence {b} has {} keys for {} queries",
                    kw[1] - kw[0],
                    qw[1] - qw[0]
                ),
            ));
        }
    }
    Ok(())
}

/// `cu_seqlens` must be `[0, …, tokens]` and non-decreasing; returns it as `usize`s.
pub(crate) fn check_cu_seqlens(cu_seqlens: &ArrayView1<i32>, tokens: usize) -> Result<Vec<usize>> {
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
