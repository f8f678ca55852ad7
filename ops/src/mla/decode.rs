//! Absorbed MLA decode over the paged latent cache (FlashMLA / FusedInferAttentionScore contract).
use super::PagedLatentCache;
use crate::{Float, Result};
use ndarray::{Array3, Array4, ArrayView1, ArrayView2, ArrayView4};

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
    let _ = (q_nope, q_rope, cache, block_table, seq_lens, scale);
    todo!("contract stub")
}
