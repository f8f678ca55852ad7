//! Prefill cases at DeepSeek-V3 widths and the checks that see small systematic errors.
//!
//! A [`PrefillCase`] is a packed varlen prefill in the expanded form (`Dqk = 192`, `Dv = 128` or small
//! odd widths), optionally with a cached prefix per sequence (keys before the sequence's new tokens,
//! seen by every query). A [`CachedCase`] is the chunked prefill over the paged latent cache
//! ([`crate::mla::mla_prefill_cached`]): random latent and rope rows in a shuffled block table (unused
//! rows NaN, so a leak fails), `kv_b` scaled by `1/√Dl`.
//!
//! [`check_prefill`] compares an `(out, lse)` with the `f64` evaluation of the reference on the same
//! rounded inputs ([`PrefillCase::exact`]): element-wise under `T`'s tolerance (`lse` under `f32`'s) and
//! over the whole output with [`SystematicBound`] (relative bias and RMS error; the output's bound counts
//! its rows, see [`check_prefill`]), which catches a 0.1%
//! systematic error in bf16 (`tests/npu_mutation.rs` proves it); and, independent of any reference,
//! that a sequence's first token without a prefix sees only itself (its output is its value row).

use super::cases::CaseRng;
use super::tolerance::{assert_close, assert_unbiased, SystematicBound, Tolerance};
use crate::mla::{expand_cached_keys, PagedLatentCache};
use crate::{Float, Result};
use ndarray::{s, Array1, Array2, Array3};

/// A packed varlen prefill with optional cached prefixes (see the module docs).
#[derive(Debug, Clone)]
pub struct PrefillCase<T> {
    /// `[Tq, H, Dqk]`.
    pub q: Array3<T>,
    /// `[Tk, H, Dqk]`.
    pub k: Array3<T>,
    /// `[Tk, H, Dv]`.
    pub v: Array3<T>,
    pub cu_q: Array1<i32>,
    pub cu_k: Array1<i32>,
    pub scale: f32,
}

fn cumulative(lens: impl Iterator<Item = usize>) -> Array1<i32> {
    let mut cu = vec![0i32];
    for l in lens {
        cu.push(cu.last().copied().unwrap_or(0) + l as i32);
    }
    Array1::from(cu)
}

impl<T: Float> PrefillCase<T> {
    /// Sequences of `lens[b]` new tokens after `prefix[b]` cached keys (`prefix` empty = none).
    pub fn build(
        rng: &mut CaseRng,
        heads: usize,
        (dqk, dv): (usize, usize),
        lens: &[usize],
        prefix: &[usize],
    ) -> PrefillCase<T> {
        let pre = |b: usize| prefix.get(b).copied().unwrap_or(0);
        let tq: usize = lens.iter().sum();
        let tk: usize = tq + (0..lens.len()).map(pre).sum::<usize>();
        PrefillCase {
            q: rng.uniform::<T, _>((tq, heads, dqk), -1.0, 1.0),
            k: rng.uniform::<T, _>((tk, heads, dqk), -1.0, 1.0),
            v: rng.uniform::<T, _>((tk, heads, dv), -1.0, 1.0),
            cu_q: cumulative(lens.iter().copied()),
            cu_k: cumulative(lens.iter().enumerate().map(|(b, &l)| l + pre(b))),
            scale: 1.0 / (dqk as f32).sqrt(),
        }
    }

    /// The reference evaluated in `f64` on the case's (rounded) inputs: `(out [Tq,H,Dv], lse [H,Tq])`.
    pub fn exact(&self) -> (Array3<f64>, Array2<f64>) {
        prefill_exact(
            &self.q,
            &self.k,
            &self.v,
            &self.cu_q,
            &self.cu_k,
            f64::from(self.scale),
        )
    }
}

/// Causal varlen attention with bottom-right alignment in `f64` (see `mla_prefill_varlen`).
pub fn prefill_exact<T: Float>(
    q: &Array3<T>,
    k: &Array3<T>,
    v: &Array3<T>,
    cu_q: &Array1<i32>,
    cu_k: &Array1<i32>,
    scale: f64,
) -> (Array3<f64>, Array2<f64>) {
    let (tq, heads, dqk) = q.dim();
    let dv = v.dim().2;
    // Widened once into row-major f64 rows: the 4096-token case is billions of products, and indexing
    // the arrays element by element made this oracle, not the kernel, most of its test's time.
    let widen = |a: &Array3<T>| -> Vec<f64> { a.iter().map(|x| f64::from(x.to_f32())).collect() };
    let (qf, kf, vf) = (widen(q), widen(k), widen(v));
    let row = |t: usize, h: usize, width: usize| -> std::ops::Range<usize> {
        let start = (t * heads + h) * width;
        start..start + width
    };
    let mut out = Array3::zeros((tq, heads, dv));
    let mut lse = Array2::zeros((heads, tq));
    let mut scores = Vec::new();
    let mut acc = vec![0.0f64; dv];
    for b in 0..cu_q.len() - 1 {
        let (q0, q1) = (cu_q[b] as usize, cu_q[b + 1] as usize);
        let (k0, k1) = (cu_k[b] as usize, cu_k[b + 1] as usize);
        let prefix = (k1 - k0) - (q1 - q0);
        for h in 0..heads {
            for t in q0..q1 {
                let visible = prefix + t - q0 + 1;
                let q_row = &qf[row(t, h, dqk)];
                scores.clear();
                scores.extend((k0..k0 + visible).map(|j| {
                    let k_row = &kf[row(j, h, dqk)];
                    scale * q_row.iter().zip(k_row).map(|(a, b)| a * b).sum::<f64>()
                }));
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                scores.iter_mut().for_each(|s| *s = (*s - m).exp());
                let l: f64 = scores.iter().sum();
                lse[[h, t]] = m + l.ln();
                acc.fill(0.0);
                for (i, w) in scores.iter().enumerate() {
                    let v_row = &vf[row(k0 + i, h, dv)];
                    acc.iter_mut().zip(v_row).for_each(|(a, v)| *a += w * v);
                }
                for (d, a) in acc.iter().enumerate() {
                    out[[t, h, d]] = a / l;
                }
            }
        }
    }
    (out, lse)
}

/// Checks a prefill's `(out, lse)` against the case's exact evaluation (see the module docs).
pub fn check_prefill<T: Float>(
    what: &str,
    case: &PrefillCase<T>,
    (out, lse): (&Array3<T>, &Array2<f32>),
) {
    let (exact_out, exact_lse) = case.exact();
    // The bias bound counts rows, not elements: a row's P is rounded to T once per key and shared by
    // its Dv outputs, so their rounding errors are correlated (an element count would assume Dv times
    // more independent roundings than there are). A 0.1% error still exceeds it from ~300 rows on.
    let (tq, heads, _) = out.dim();
    assert_unbiased(
        &format!("{what} out"),
        out.view(),
        exact_out.view(),
        Tolerance::of::<T>(),
        SystematicBound::of::<T>(tq * heads),
    );
    assert_unbiased(
        &format!("{what} lse"),
        lse.view(),
        exact_lse.view(),
        Tolerance::of::<f32>(),
        SystematicBound::f32(lse.len()),
    );
    // Independent of the reference: without a prefix a sequence's first token sees only itself.
    let tol = Tolerance::of::<T>();
    for b in 0..case.cu_q.len() - 1 {
        let (q0, q1) = (case.cu_q[b] as usize, case.cu_q[b + 1] as usize);
        let (k0, k1) = (case.cu_k[b] as usize, case.cu_k[b + 1] as usize);
        if q1 == q0 || k1 - k0 != q1 - q0 {
            continue;
        }
        for h in 0..out.dim().1 {
            assert_close(
                &format!("{what} first token {q0} h={h}"),
                out.slice(s![q0, h, ..]),
                case.v.slice(s![k0, h, ..]),
                tol,
            );
        }
    }
}

/// A chunked prefill over the paged cache (see the module docs).
#[derive(Debug, Clone)]
pub struct CachedCase<T> {
    /// `[Tq, H, dn + dr]`.
    pub q: Array3<T>,
    pub cu_q: Array1<i32>,
    pub cache: PagedLatentCache<T>,
    pub block_table: Array2<i32>,
    /// Keys per sequence: its prefix and its new tokens.
    pub seq_lens: Array1<i32>,
    /// `[H·(dn + dv), Dl]`.
    pub kv_b: Array2<T>,
    pub scale: f32,
    pub dn: usize,
    pub dv: usize,
}

/// The widths of a [`CachedCase`].
#[derive(Debug, Clone, Copy)]
pub struct CachedSpec {
    pub heads: usize,
    pub dn: usize,
    pub dr: usize,
    pub dv: usize,
    pub latent_dim: usize,
    pub block_size: usize,
}

impl<T: Float> CachedCase<T> {
    /// Sequences of `lens[b]` new tokens after `prefix[b]` cached ones, blocks shuffled.
    pub fn build(
        rng: &mut CaseRng,
        spec: CachedSpec,
        lens: &[usize],
        prefix: &[usize],
    ) -> Result<CachedCase<T>> {
        let CachedSpec {
            heads,
            dn,
            dr,
            dv,
            latent_dim: dl,
            block_size: bs,
        } = spec;
        let totals: Vec<usize> = lens.iter().zip(prefix).map(|(l, p)| l + p).collect();
        let max_blocks = totals
            .iter()
            .map(|t| t.div_ceil(bs))
            .max()
            .unwrap_or(1)
            .max(1);
        let used: usize = totals.iter().map(|t| t.div_ceil(bs)).sum();
        let num_blocks = used + 1;
        let mut cache = PagedLatentCache::<T>::new(num_blocks, bs, dl, dr)?;
        cache.latent.fill(T::from_f32(f32::NAN));
        cache.rope.fill(T::from_f32(f32::NAN));
        let order = rng.permutation(num_blocks);
        let mut table = Array2::from_elem((lens.len(), max_blocks), -1i32);
        let mut next = 0;
        for (b, &t) in totals.iter().enumerate() {
            for j in 0..t.div_ceil(bs) {
                table[[b, j]] = order[next] as i32;
                next += 1;
            }
            for p in 0..t {
                let (blk, off) = (table[[b, p / bs]] as usize, p % bs);
                let lat = rng.uniform::<T, _>(dl, -1.0, 1.0);
                let rope = rng.uniform::<T, _>(dr, -1.0, 1.0);
                cache.latent.slice_mut(s![blk, off, ..]).assign(&lat);
                cache.rope.slice_mut(s![blk, off, ..]).assign(&rope);
            }
        }
        let w = 1.0 / (dl as f32).sqrt();
        let kv_b = rng.uniform::<T, _>((heads * (dn + dv), dl), -w * 1.7, w * 1.7);
        let tq: usize = lens.iter().sum();
        Ok(CachedCase {
            q: rng.uniform::<T, _>((tq, heads, dn + dr), -1.0, 1.0),
            cu_q: cumulative(lens.iter().copied()),
            cache,
            block_table: table,
            seq_lens: Array1::from(totals.iter().map(|&t| t as i32).collect::<Vec<_>>()),
            kv_b,
            scale: 1.0 / ((dn + dr) as f32).sqrt(),
            dn,
            dv,
        })
    }

    /// The same prefill with the keys expanded as the reference expands them.
    pub fn expanded(&self) -> PrefillCase<T> {
        let keys = expand_cached_keys(
            &self.cache,
            &self.block_table.view(),
            &self.seq_lens.view(),
            &self.kv_b.view(),
            self.q.dim().1,
            self.dn,
            self.dv,
        );
        PrefillCase {
            q: self.q.clone(),
            k: keys.k,
            v: keys.v,
            cu_q: self.cu_q.clone(),
            cu_k: keys.cu_k,
            scale: self.scale,
        }
    }
}
