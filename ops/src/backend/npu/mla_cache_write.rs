//! The fused MLA cache write on the device (`mla_cache_write_<t>`, [`launch::mla_cache_write`]), on
//! host arrays: [`Npu::mla_cache_write_fused`] (also the backend's
//! [`MlaOps::mla_cache_write_fused`](crate::backend::MlaOps::mla_cache_write_fused)) has the reference's arguments
//! ([`crate::mla::mla_cache_write_fused`]) and runs the reference's checks first
//! ([`check_mla_cache_write_fused`]), so the same inputs are rejected with the same errors and the
//! kernel only gets slots and positions it can trust. A slot that repeats keeps the last token's row,
//! as in the reference: the earlier tokens of that slot are skipped before the launch. The host cache is uploaded, written on the device
//! and downloaded whole (for conformance; the device-resident model keeps its cache on the device and
//! calls the launcher directly).

use dsnpu_kernels::launch::{self, MlaCacheWriteInputs, MlaCacheWriteShape};
use ndarray::{Array1, Array3, ArrayView1, ArrayView2};

use super::{by_dtype, DevElem, Npu};
use crate::mla::cache_write::{check_mla_cache_write_fused, CacheWriteParams};
use crate::mla::PagedLatentCache;
use crate::rope::RopeLayout;
use crate::{Float, Result};

const OP: &str = "mla_cache_write_fused";

/// The kernels' name for a rope layout.
pub(crate) fn kernel_layout(layout: RopeLayout) -> dsnpu_kernels::RopeLayout {
    match layout {
        RopeLayout::Interleaved => dsnpu_kernels::RopeLayout::Interleaved,
        RopeLayout::HalfSplit => dsnpu_kernels::RopeLayout::HalfSplit,
    }
}

/// `slot_mapping` with every token but the last one of a repeated slot skipped (-1): the reference
/// writes rows in token order, so the last row of a slot wins, while the kernel's blocks scatter in
/// parallel (a repeated slot would be a race between them).
fn last_writers(slot_mapping: ArrayView1<i32>) -> Array1<i32> {
    let mut seen = std::collections::HashSet::with_capacity(slot_mapping.len());
    let mut slots = slot_mapping.to_owned();
    for s in slots.iter_mut().rev() {
        if *s >= 0 && !seen.insert(*s) {
            *s = -1;
        }
    }
    slots
}

impl Npu {
    /// See [`crate::mla::mla_cache_write_fused`]: RMSNorm of `kv[:, :Dl]`, rope of `kv[:, Dl:]`, both
    /// scattered into `cache` at `slot_mapping` (−1 skips), by the fused kernel.
    pub fn mla_cache_write_fused<T: Float>(
        &self,
        cache: &mut PagedLatentCache<T>,
        kv: ArrayView2<T>,
        params: CacheWriteParams<'_, T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        check_mla_cache_write_fused(cache, &kv, &params, &slot_mapping)?;
        if slot_mapping.is_empty() {
            return Ok(());
        }
        let slots = last_writers(slot_mapping);
        by_dtype!(self, OP, T, cache_write_as(cache, kv, params, slots.view()))
    }

    fn cache_write_as<T: Float, E: DevElem>(
        &self,
        cache: &mut PagedLatentCache<T>,
        kv: ArrayView2<T>,
        p: CacheWriteParams<'_, T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        let (blocks, block_size, dl) = cache.latent.dim();
        let dr = cache.rope_dim();
        let kvd = self.upload::<T, E>(OP, kv.iter())?;
        let wd = self.upload::<T, E>(OP, p.norm_weight.iter())?;
        let pos = self.upload_raw(OP, &p.positions.to_vec())?;
        let slots = self.upload_raw(OP, &slot_mapping.to_vec())?;
        let cos: Vec<f32> = p.table.cos.iter().copied().collect();
        let sin: Vec<f32> = p.table.sin.iter().copied().collect();
        let (cd, sd) = (self.upload_raw(OP, &cos)?, self.upload_raw(OP, &sin)?);
        let mut lat = self.upload::<T, E>(OP, cache.latent.iter())?;
        let mut rope = self.upload::<T, E>(OP, cache.rope.iter())?;
        let r = launch::mla_cache_write(
            &self.lib,
            &self.stream,
            MlaCacheWriteInputs {
                kv: &kvd,
                norm_weight: &wd,
                positions: &pos,
                cos: &cd,
                sin: &sd,
                slot_mapping: &slots,
            },
            &mut lat,
            &mut rope,
            MlaCacheWriteShape {
                tokens: slot_mapping.len(),
                latent_dim: dl,
                rope_dim: dr,
                num_slots: blocks * block_size,
                table_rows: p.table.max_positions(),
                layout: kernel_layout(p.layout),
            },
            p.eps,
        );
        self.launched(OP, r)?;
        self.finish(OP)?;
        let lat = self.download::<T, E>(OP, &lat)?;
        let rope = self.download::<T, E>(OP, &rope)?;
        cache.latent = Array3::from_shape_vec((blocks, block_size, dl), lat)
            .expect("the latent cache holds blocks x block_size x Dl elements");
        cache.rope = Array3::from_shape_vec((blocks, block_size, dr), rope)
            .expect("the rope cache holds blocks x block_size x Dr elements");
        Ok(())
    }
}
