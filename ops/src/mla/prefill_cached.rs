//! Chunked prefill over the paged latent cache: the new tokens of each sequence attend to the
//! sequence's cached prefix and, causally, to each other, in the expanded form.
//!
//! # Semantics
//! The cache already holds every key of sequence `b` — its prefix and its `Lq` new tokens (the cache
//! write runs first) — at positions `0 .. seq_lens[b]`, position `p` in row `p % block_size` of block
//! `block_table[b, p / block_size]`. Each key is expanded per head from its latent row `c` and rope
//! row `r`: `k = [W_UK,h · c ‖ r]`, `v = W_UV,h · c`, with `kv_b [H·(dn + dv), Dl]` (kv_b_proj as stored:
//! per head `dn` key rows then `dv` value rows), accumulated in `f32` and rounded to `T` (what the
//! device's up-projection stores). Then [`mla_prefill_varlen`] with the queries `q [Tq, H, dn + dr]`
//! (`cu_q`) against those keys: query `i` of `Lq` sees positions `≤ seq_lens[b] − Lq + i`.
//!
//! # Validation
//! The cache's invariants; `q` `[Tq, H ≥ 1, dn + dr]` with `dn ≥ 1` (`dr` = the cache's rope width);
//! `kv_b` `[H·(dn + dv), Dl]` with `dv ≥ 1`; `cu_q` as in [`mla_prefill`](super::mla_prefill);
//! `block_table` `[B, max_blocks]` and `seq_lens` `[B]`, each length at least the sequence's query count
//! and within its table row, every used table entry a block of the cache; a finite scale.
use super::prefill::{check_cu_seqlens, mla_prefill_varlen};
use super::PagedLatentCache;
use crate::error::{expect_shape, invalid};
use crate::{Float, OpsError, Result};
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

const OP: &str = "mla_prefill_cached";

/// Every key of a cached prefill, expanded (see the module docs).
#[derive(Debug, Clone)]
pub struct ExpandedKeys<T> {
    /// `[Tk, H, dn + dr]`.
    pub k: Array3<T>,
    /// `[Tk, H, dv]`.
    pub v: Array3<T>,
    /// `[B + 1]`: the keys of sequence b are `cu_k[b] .. cu_k[b + 1]`.
    pub cu_k: Array1<i32>,
    /// `[Tk]`: the cache slot of each key (`block · block_size + offset`).
    pub slots: Vec<i32>,
}

/// Checks a cached prefill's arguments and returns `(dn, dv)`.
#[allow(clippy::too_many_arguments)]
pub fn check_mla_prefill_cached<T: Float>(
    q: &ArrayView3<T>,
    cu_q: &ArrayView1<i32>,
    cache: &PagedLatentCache<T>,
    block_table: &ArrayView2<i32>,
    seq_lens: &ArrayView1<i32>,
    kv_b: &ArrayView2<T>,
    scale: f32,
) -> Result<(usize, usize)> {
    cache.check(OP)?;
    let (tokens, heads, width) = q.dim();
    let (dr, dl) = (cache.rope_dim(), cache.latent_dim());
    if heads == 0 || width <= dr {
        return Err(OpsError::Shape {
            op: OP,
            arg: "q",
            got: q.shape().to_vec(),
            expected: format!("[T, H ≥ 1, dn + {dr}] with dn ≥ 1"),
        });
    }
    let dn = width - dr;
    let rows = kv_b.nrows();
    if !rows.is_multiple_of(heads) || rows / heads <= dn || kv_b.ncols() != dl {
        return Err(OpsError::Shape {
            op: OP,
            arg: "kv_b",
            got: kv_b.shape().to_vec(),
            expected: format!("[{heads}·({dn} + dv), {dl}] with dv ≥ 1"),
        });
    }
    let dv = rows / heads - dn;
    if !scale.is_finite() {
        return Err(invalid(OP, "scale", format!("{scale} is not finite")));
    }
    let bounds = check_cu_seqlens(cu_q, tokens)?;
    let batch = bounds.len() - 1;
    let max_blocks = block_table.ncols();
    expect_shape(OP, "block_table", block_table.shape(), &[batch, max_blocks])?;
    expect_shape(OP, "seq_lens", seq_lens.shape(), &[batch])?;
    let bs = cache.block_size();
    for (b, w) in bounds.windows(2).enumerate() {
        let len = seq_lens[b];
        let lq = (w[1] - w[0]) as i64;
        if i64::from(len) < lq || len as usize > max_blocks * bs {
            return Err(invalid(
                OP,
                "seq_lens",
                format!(
                    "sequence {b}: {len} keys for {lq} queries and {} table slots",
                    max_blocks * bs
                ),
            ));
        }
        for j in 0..(len as usize).div_ceil(bs) {
            let blk = block_table[[b, j]];
            if blk < 0 || blk as usize >= cache.num_blocks() {
                return Err(OpsError::IndexOutOfRange {
                    op: OP,
                    arg: "block_table",
                    index: blk.into(),
                    position: b * max_blocks + j,
                    bound: cache.num_blocks() as i64,
                });
            }
        }
    }
    Ok((dn, dv))
}

/// Expands every key of every sequence from the cache (checked inputs; see the module docs).
pub fn expand_cached_keys<T: Float>(
    cache: &PagedLatentCache<T>,
    block_table: &ArrayView2<i32>,
    seq_lens: &ArrayView1<i32>,
    kv_b: &ArrayView2<T>,
    heads: usize,
    dn: usize,
    dv: usize,
) -> ExpandedKeys<T> {
    let (dr, dl, bs) = (cache.rope_dim(), cache.latent_dim(), cache.block_size());
    let total: usize = seq_lens.iter().map(|&l| l as usize).sum();
    let mut k = Array3::from_elem((total, heads, dn + dr), T::default());
    let mut v = Array3::from_elem((total, heads, dv), T::default());
    let mut cu_k = vec![0i32];
    let mut slots = Vec::with_capacity(total);
    let w: Vec<f32> = kv_b.iter().map(|x| x.to_f32()).collect();
    let mut t = 0;
    for (b, &len) in seq_lens.iter().enumerate() {
        for p in 0..len as usize {
            let (blk, off) = (block_table[[b, p / bs]] as usize, p % bs);
            slots.push((blk * bs + off) as i32);
            let c: Vec<f32> = cache
                .latent
                .slice(s![blk, off, ..])
                .iter()
                .map(|x| x.to_f32())
                .collect();
            for h in 0..heads {
                for r in 0..dn + dv {
                    let wr = &w[(h * (dn + dv) + r) * dl..(h * (dn + dv) + r + 1) * dl];
                    let x = T::from_f32(super::softmax::dot(wr, &c));
                    if r < dn {
                        k[[t, h, r]] = x;
                    } else {
                        v[[t, h, r - dn]] = x;
                    }
                }
                for d in 0..dr {
                    k[[t, h, dn + d]] = cache.rope[[blk, off, d]];
                }
            }
            t += 1;
        }
        cu_k.push(t as i32);
    }
    ExpandedKeys {
        k,
        v,
        cu_k: Array1::from(cu_k),
        slots,
    }
}

/// `q [Tq, H, dn + dr]` (`cu_q` `[B + 1]`) against every cached key of its sequence (see the module
/// docs). Returns `(out [Tq, H, dv], lse f32 [H, Tq])`.
pub fn mla_prefill_cached<T: Float>(
    q: ArrayView3<T>,
    cu_q: ArrayView1<i32>,
    cache: &PagedLatentCache<T>,
    block_table: ArrayView2<i32>,
    seq_lens: ArrayView1<i32>,
    kv_b: ArrayView2<T>,
    scale: f32,
) -> Result<(Array3<T>, Array2<f32>)> {
    let (dn, dv) =
        check_mla_prefill_cached(&q, &cu_q, cache, &block_table, &seq_lens, &kv_b, scale)?;
    let keys = expand_cached_keys(cache, &block_table, &seq_lens, &kv_b, q.dim().1, dn, dv);
    mla_prefill_varlen(
        q,
        keys.k.view(),
        keys.v.view(),
        cu_q,
        keys.cu_k.view(),
        scale,
    )
}
