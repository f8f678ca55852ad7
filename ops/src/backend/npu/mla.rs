//! [`MlaOps`] on the device: `mla_decode` plans the split-KV work ([`MlaDecodePlan`]) and runs the
//! `mla_decode_<t>` kernel ([`dsnpu_kernels::launch::mla_decode`]; cube and vector cores); `mla_prefill`
//! runs `mla_prefill_<t>` (`mla_prefill.rs`); `mla_cache_write_fused` runs `mla_cache_write_<t>`
//! ([`Npu::mla_cache_write_fused`], `mla_cache_write.rs`). `mla_cache_write` is
//! [`OpsError::Unsupported`](crate::OpsError) here (the [`Fallback`](crate::backend::Fallback) backend
//! routes it to the CPU): it takes the already normalised and rotated rows, while the device kernel is
//! the fused one, which the device-resident model calls.
//!
//! Validation is the reference's own: `mla_decode` first calls [`check_mla_decode`], before anything is
//! uploaded, so the same inputs are rejected with the same errors and the kernel only gets what it
//! trusts (every used block-table entry inside the cache, lengths within the table). Each call uploads
//! the whole host cache (the trait passes the cache as host arrays); a batch of no sequences is answered
//! on the host. With a launch-blocking stream the launch is checked against the simulator's counters
//! like the MoE family's (no fault, zero sanitizer warnings).

use dsnpu_kernels::launch::{self, MlaDecodeInputs, MlaDecodeShape};
use dsnpu_kernels::{MlaDecodePlan, MlaPlanShape};
use ndarray::{Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4};

use super::{by_dtype, DevElem, Npu};
use crate::backend::MlaOps;
use crate::mla::decode::check_mla_decode;
use crate::mla::{CacheWriteParams, PagedLatentCache};
use crate::{Float, Result};

const NO_KERNEL: &str = "no device kernel yet (the Fallback backend runs it on the CPU)";

impl Npu {
    #[allow(clippy::too_many_arguments)]
    fn mla_decode_as<T: Float, E: DevElem>(
        &self,
        q_nope: ArrayView4<T>,
        q_rope: ArrayView4<T>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        const OP: &str = "mla_decode";
        let (batch, s_q, heads, dl) = q_nope.dim();
        let shape = MlaDecodeShape {
            batch,
            s_q,
            heads,
            latent_dim: dl,
            rope_dim: cache.rope_dim(),
            block_size: cache.block_size(),
            num_blocks: cache.num_blocks(),
            max_blocks: block_table.ncols(),
        };
        let qn = self.upload::<T, E>(OP, q_nope.iter())?;
        let qr = self.upload::<T, E>(OP, q_rope.iter())?;
        let lat = self.upload::<T, E>(OP, cache.latent.iter())?;
        let rope = self.upload::<T, E>(OP, cache.rope.iter())?;
        let table: Vec<i32> = block_table.iter().copied().collect();
        let table = self.upload_raw(OP, &table)?;
        let lens = self.upload_raw(OP, &seq_lens.to_vec())?;
        let host_lens: Vec<usize> = seq_lens.iter().map(|&l| l as usize).collect();
        let plan_shape = MlaPlanShape {
            query_rows: (s_q * heads) as u32,
            latent_dim: dl as u32,
            rope_dim: cache.rope_dim() as u32,
            dtype: <E as dsnpu_kernels::launch::KernelElem>::DTYPE,
        };
        let plan = MlaDecodePlan::for_shape(&host_lens, plan_shape, self.lib.hardware().cube.cores)
            .map_err(|e| self.fail(OP, e))?;
        let words = self.upload_raw(OP, plan.words())?;
        let rows = batch * s_q * heads;
        let mut out = self.alloc::<E>(OP, rows * dl)?;
        let mut lse = self.alloc::<f32>(OP, rows)?;
        let r = launch::mla_decode(
            &self.lib,
            &self.stream,
            MlaDecodeInputs {
                q_nope: &qn,
                q_rope: &qr,
                latent: &lat,
                rope: &rope,
                block_table: &table,
                seq_lens: &lens,
                plan: &plan,
                plan_words: &words,
            },
            &mut out,
            &mut lse,
            shape,
            scale,
        );
        self.launched(OP, r)?;
        self.finish(OP)?;
        let out = self.download::<T, E>(OP, &out)?;
        let lse = lse.to_vec().map_err(|e| self.fail(OP, e))?;
        let out = Array4::from_shape_vec((batch, s_q, heads, dl), out)
            .expect("the kernel output holds B x S x H x Dl elements");
        let lse = Array3::from_shape_vec((batch, heads, s_q), lse)
            .expect("the lse output holds B x H x S elements");
        Ok((out, lse))
    }
}

impl MlaOps for Npu {
    fn mla_cache_write<T: Float>(
        &self,
        _cache: &mut PagedLatentCache<T>,
        _latent: ArrayView2<T>,
        _k_rope: ArrayView2<T>,
        _slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        Err(self.unsupported("mla_cache_write", NO_KERNEL))
    }

    /// The inherent [`Npu::mla_cache_write_fused`] (`mla_cache_write_<t>`).
    fn mla_cache_write_fused<T: Float>(
        &self,
        cache: &mut PagedLatentCache<T>,
        kv: ArrayView2<T>,
        params: CacheWriteParams<'_, T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        Npu::mla_cache_write_fused(self, cache, kv, params, slot_mapping)
    }

    fn mla_decode<T: Float>(
        &self,
        q_nope: ArrayView4<T>,
        q_rope: ArrayView4<T>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        const OP: &str = "mla_decode";
        check_mla_decode(&q_nope, &q_rope, cache, &block_table, &seq_lens, scale)?;
        let (batch, s_q, heads, dl) = q_nope.dim();
        if batch == 0 {
            return Ok((
                Array4::default((0, s_q, heads, dl)),
                Array3::zeros((0, heads, s_q)),
            ));
        }
        by_dtype!(
            self,
            OP,
            T,
            mla_decode_as(q_nope, q_rope, cache, block_table, seq_lens, scale)
        )
    }

    fn mla_prefill<T: Float>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu_seqlens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        self.mla_prefill_dense(q, k, v, cu_seqlens, scale)
    }
}
