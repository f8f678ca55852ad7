//! The fused MLA cache write (reference): from the `kv_a_proj_with_mqa` output `kv [T, Dl + Dr]`, the
//! RMSNorm of the latent part (`kv_a_layernorm` weight, `eps`) and the rope of the rope part at each
//! token's position, scattered into the paged cache at `slot_mapping[t]` (−1 = skip).
//!
//! # Contract
//! It is exactly the unfused composition the model runs: [`norm::rms_norm`] of `kv[:, :Dl]`,
//! [`rope::rope`] of `kv[:, Dl:]` as one head, then [`PagedLatentCache::write`] — so each result is
//! rounded to `T` once, and every check of those three runs (shapes, eps, positions inside the table,
//! slots inside the cache) before anything is written: a rejected call leaves the cache untouched.
use crate::mla::PagedLatentCache;
use crate::rope::{RopeLayout, RopeTable};
use crate::{norm, rope, Float, OpsError, Result};
use ndarray::{s, ArrayView1, ArrayView2, Axis};

/// What one fused cache write reads besides `kv`: the norm and the rope parameters.
#[derive(Debug, Clone, Copy)]
pub struct CacheWriteParams<'a, T> {
    /// `kv_a_layernorm` weight `[Dl]`.
    pub norm_weight: ArrayView1<'a, T>,
    pub eps: f32,
    /// One position per token.
    pub positions: ArrayView1<'a, i32>,
    pub table: &'a RopeTable,
    pub layout: RopeLayout,
}

/// The checks of [`mla_cache_write_fused`] (the device backend runs the same ones): `kv` is
/// `[T, Dl + Dr]` for the cache's widths, the table's dim is `Dr`, then the norm's, the rope's and the
/// cache write's own checks.
pub fn check_mla_cache_write_fused<T: Float>(
    cache: &PagedLatentCache<T>,
    kv: &ArrayView2<T>,
    p: &CacheWriteParams<'_, T>,
    slot_mapping: &ArrayView1<i32>,
) -> Result<()> {
    const OP: &str = "mla_cache_write_fused";
    cache.check(OP)?;
    let (dl, dr) = (cache.latent_dim(), cache.rope_dim());
    crate::error::expect_shape(OP, "kv", kv.shape(), &[slot_mapping.len(), dl + dr])?;
    norm::check_rms_norm(&kv.slice(s![.., ..dl]), &p.norm_weight, p.eps)?;
    rope::check_rope(
        &kv.slice(s![.., dl..]).insert_axis(Axis(1)),
        &p.positions,
        p.table,
    )?;
    let capacity = cache.capacity();
    for (position, &slot) in slot_mapping.iter().enumerate() {
        if slot != -1 && (slot < 0 || slot as usize >= capacity) {
            return Err(OpsError::IndexOutOfRange {
                op: OP,
                arg: "slot_mapping",
                index: slot.into(),
                position,
                bound: capacity as i64,
            });
        }
    }
    Ok(())
}

/// RMSNorm + rope + scatter of `kv [T, Dl + Dr]` into `cache` (see the module docs).
pub fn mla_cache_write_fused<T: Float>(
    cache: &mut PagedLatentCache<T>,
    kv: ArrayView2<T>,
    p: CacheWriteParams<'_, T>,
    slot_mapping: ArrayView1<i32>,
) -> Result<()> {
    check_mla_cache_write_fused(cache, &kv, &p, &slot_mapping)?;
    let dl = cache.latent_dim();
    let latent = norm::rms_norm(kv.slice(s![.., ..dl]), p.norm_weight, p.eps)?;
    let k_pe = rope::rope(
        kv.slice(s![.., dl..]).insert_axis(Axis(1)),
        p.positions,
        p.table,
        p.layout,
    )?;
    cache.write(latent.view(), k_pe.index_axis(Axis(1), 0), slot_mapping)
}
