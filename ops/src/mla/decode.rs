//! Absorbed MLA decode over the paged latent cache (FlashMLA / FusedInferAttentionScore contract).
//!
//! # Semantics
//! Each sequence `b` has `seq_lens[b]` cached tokens, the last `S` of which are the new query tokens
//! (S > 1 is multi-token prediction). Position `j < seq_lens[b]` lives in block
//! `block_table[b, j / block_size]` at row `j % block_size`. For query `s` and head `h`:
//!
//! - `score_j = scale · (q_nope[b,s,h]·latent_j + q_rope[b,s,h]·rope_j)`, computed in `f32`;
//! - causal among the S query tokens: query `s` sees positions `j < seq_lens[b] − S + s + 1`
//!   (FlashMLA's `tril(diagonal = s_k − s_q)`);
//! - `p = softmax(score)` in `f32`; `out[b,s,h] = Σ_j p_j · latent_j` (values are the latent itself),
//!   rounded once to `T`;
//! - `lse[b,h,s] = ln Σ_j exp(score_j)`: natural log of the *scaled* scores, laid out `[B,H,S]` as
//!   FlashMLA's `flash_mla_with_kvcache` returns it (its test reference is `torch.logsumexp` over
//!   `q·kᵀ·scale`).
//!
//! # Validation
//! [`check_mla_decode`], shared by the reference and the device backends, before anything is computed: the cache ([`PagedLatentCache::check`]); `q_nope` `[B,S,H,Dl]` with
//! `S ≥ 1`, `H ≥ 1` and `Dl` the cache's latent width; `q_rope` `[B,S,H,Dr]` with `Dr` the cache's
//! rope width; `block_table` `[B, max_blocks]`; `seq_lens` `[B]` with
//! `max(1, S) ≤ seq_lens[b] ≤ max_blocks · block_size`; a finite `scale`; and every block-table
//! entry a sequence uses (the first `⌈seq_lens[b] / block_size⌉` of its row) in `[0, num_blocks)`.
//! Entries past the used blocks are ignored and may hold anything (`-1` by convention).
//!
//! Trusted: the cache contents. Rows of a used block past `seq_lens[b]` are never read, so they may
//! hold garbage (even NaN); NaN or infinite values inside the attended rows propagate to the output.
use super::softmax::{axpy, dot, softmax_lse};
use super::PagedLatentCache;
use crate::error::{expect_shape, invalid};
use crate::{Float, OpsError, Result};
use ndarray::{Array3, Array4, ArrayView1, ArrayView2, ArrayView4};

const OP: &str = "mla_decode";

/// `q_nope` `[B,S,H,Dl]` (already multiplied by W_UK), `q_rope` `[B,S,H,Dr]`. `seq_lens[b]` counts
/// the cached tokens including the S new ones; query `s` attends to positions `< seq_lens[b] - S + s + 1`.
/// Returns `(out [B,S,H,Dl], lse f32 [B,H,S])` with `lse` the natural-log sum of exp of scaled scores.
pub fn mla_decode<T: Float>(
    q_nope: ArrayView4<T>,
    q_rope: ArrayView4<T>,
    cache: &PagedLatentCache<T>,
    block_table: ArrayView2<i32>,
    seq_lens: ArrayView1<i32>,
    scale: f32,
) -> Result<(Array4<T>, Array3<f32>)> {
    let seq_lens = check_mla_decode(&q_nope, &q_rope, cache, &block_table, &seq_lens, scale)?;
    let (batch, s_q, heads, dl) = q_nope.dim();
    let dr = cache.rope_dim();
    let bs = cache.block_size();
    let mut out = Array4::from_elem((batch, s_q, heads, dl), T::default());
    let mut lse = Array3::zeros((batch, heads, s_q));
    for (b, &len) in seq_lens.iter().enumerate() {
        // Gather the sequence's keys through the block table once, in f32.
        let mut latent = Vec::with_capacity(len * dl);
        let mut rope = Vec::with_capacity(len * dr);
        for j in 0..len {
            let block = block_table[[b, j / bs]] as usize;
            latent.extend(
                cache
                    .latent
                    .slice(ndarray::s![block, j % bs, ..])
                    .iter()
                    .map(|v| v.to_f32()),
            );
            rope.extend(
                cache
                    .rope
                    .slice(ndarray::s![block, j % bs, ..])
                    .iter()
                    .map(|v| v.to_f32()),
            );
        }
        for s in 0..s_q {
            let visible = len - s_q + s + 1;
            for h in 0..heads {
                let qn: Vec<f32> = (0..dl).map(|d| q_nope[[b, s, h, d]].to_f32()).collect();
                let qr: Vec<f32> = (0..dr).map(|d| q_rope[[b, s, h, d]].to_f32()).collect();
                let mut p: Vec<f32> = (0..visible)
                    .map(|j| {
                        scale
                            * (dot(&qn, &latent[j * dl..(j + 1) * dl])
                                + dot(&qr, &rope[j * dr..(j + 1) * dr]))
                    })
                    .collect();
                lse[[b, h, s]] = softmax_lse(&mut p);
                let mut acc = vec![0.0f32; dl];
                for (j, &w) in p.iter().enumerate() {
                    axpy(&mut acc, w, &latent[j * dl..(j + 1) * dl]);
                }
                for (d, v) in acc.into_iter().enumerate() {
                    out[[b, s, h, d]] = T::from_f32(v);
                }
            }
        }
    }
    Ok((out, lse))
}

/// Check every argument of [`mla_decode`] (module docs); returns `seq_lens` as `usize`s. Backends call
/// it before they upload anything, so they reject exactly what the reference rejects.
pub fn check_mla_decode<T: Float>(
    q_nope: &ArrayView4<T>,
    q_rope: &ArrayView4<T>,
    cache: &PagedLatentCache<T>,
    block_table: &ArrayView2<i32>,
    seq_lens: &ArrayView1<i32>,
    scale: f32,
) -> Result<Vec<usize>> {
    cache.check(OP)?;
    let (batch, s_q, heads, dl) = q_nope.dim();
    if s_q == 0 || heads == 0 || dl != cache.latent_dim() {
        return Err(OpsError::Shape {
            op: OP,
            arg: "q_nope",
            got: q_nope.shape().to_vec(),
            expected: format!("[B, S ≥ 1, H ≥ 1, {}]", cache.latent_dim()),
        });
    }
    expect_shape(
        OP,
        "q_rope",
        q_rope.shape(),
        &[batch, s_q, heads, cache.rope_dim()],
    )?;
    let max_blocks = block_table.ncols();
    expect_shape(OP, "block_table", block_table.shape(), &[batch, max_blocks])?;
    expect_shape(OP, "seq_lens", seq_lens.shape(), &[batch])?;
    if !scale.is_finite() {
        return Err(invalid(OP, "scale", format!("{scale} is not finite")));
    }
    let bs = cache.block_size();
    let slots = max_blocks.saturating_mul(bs);
    let mut lens = Vec::with_capacity(batch);
    for (b, &len) in seq_lens.iter().enumerate() {
        let min = s_q.max(1);
        if len < 0 || (len as usize) < min {
            return Err(invalid(
                OP,
                "seq_lens",
                format!(
                    "seq_lens[{b}] = {len} is below {min}: it must count the {s_q} query tokens"
                ),
            ));
        }
        let len = len as usize;
        if len > slots {
            return Err(invalid(
                OP,
                "seq_lens",
                format!(
                    "seq_lens[{b}] = {len} exceeds the {max_blocks} blocks · {bs} slots the block table gives"
                ),
            ));
        }
        for k in 0..len.div_ceil(bs) {
            let block = block_table[[b, k]];
            if block < 0 || block as usize >= cache.num_blocks() {
                return Err(OpsError::IndexOutOfRange {
                    op: OP,
                    arg: "block_table",
                    index: block.into(),
                    position: b * max_blocks + k,
                    bound: cache.num_blocks() as i64,
                });
            }
        }
        lens.push(len);
    }
    Ok(lens)
}
