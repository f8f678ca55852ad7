//! [`MlaOps`] on the device: `mla_decode` plans the split-KV work ([`MlaDecodePlan`]; or takes one,
//! checked against the lengths, in [`Npu::mla_decode_with_plan`]) and runs the `mla_decode_<t>` kernel
//! ([`dsnpu_kernels::launch::mla_decode`]; cube and vector cores); `mla_prefill`
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
use crate::error::invalid;
use crate::mla::decode::check_mla_decode;
use crate::mla::{CacheWriteParams, PagedLatentCache};
use crate::{Float, Result};

const NO_KERNEL: &str = "no device kernel yet (the Fallback backend runs it on the CPU)";

impl Npu {
    /// [`MlaOps::mla_decode`] with the split-KV work plan given (made from these `seq_lens`; checked)
    /// instead of [`MlaDecodePlan::for_shape`]'s when `plan` is `Some`: to pin the kernel's pipeline
    /// ([`MlaDecodePlan::for_shape_pinned`]) or reuse one plan for every layer of a step.
    #[allow(clippy::too_many_arguments)]
    pub fn mla_decode_with_plan<T: Float>(
        &self,
        q_nope: ArrayView4<T>,
        q_rope: ArrayView4<T>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        scale: f32,
        plan: Option<&MlaDecodePlan>,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        const OP: &str = "mla_decode";
        check_mla_decode(&q_nope, &q_rope, cache, &block_table, &seq_lens, scale)?;
        if let Some(plan) = plan {
            check_plan(plan, seq_lens)?;
        }
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
            mla_decode_as(q_nope, q_rope, cache, block_table, seq_lens, scale, plan)
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn mla_decode_as<T: Float, E: DevElem>(
        &self,
        q_nope: ArrayView4<T>,
        q_rope: ArrayView4<T>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        scale: f32,
        plan: Option<&MlaDecodePlan>,
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
        // Extents past u32 are beyond the kernel (its tiling says so for a given plan, too).
        let narrow = |what: &str, v: usize| {
            u32::try_from(v).map_err(|_| self.unsupported(OP, format!("{what} = {v} exceeds u32")))
        };
        let plan_shape = MlaPlanShape {
            query_rows: narrow("s_q * heads", s_q.saturating_mul(heads))?,
            latent_dim: narrow("latent_dim", dl)?,
            rope_dim: narrow("rope_dim", cache.rope_dim())?,
            dtype: <E as dsnpu_kernels::launch::KernelElem>::DTYPE,
        };
        let planned;
        let plan = match plan {
            Some(p) => p,
            None => {
                planned = MlaDecodePlan::for_shape(
                    &host_lens,
                    plan_shape,
                    self.lib.hardware().cube.cores,
                )
                // A shape no plan fits (L1) is one the kernel cannot take: Unsupported, as for the
                // launcher's own shape errors, so a Fallback backend answers it on the CPU.
                .map_err(|e| self.kernel_error(OP, e))?;
                &planned
            }
        };
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
                plan,
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

/// A given plan covers exactly the given sequences: each one's tasks tile `[0, seq_len)` in order (the
/// kernel trusts the plan; one made for other lengths would skip or repeat keys).
fn check_plan(plan: &MlaDecodePlan, seq_lens: ArrayView1<i32>) -> Result<()> {
    let bad = |reason: String| invalid("mla_decode", "plan", reason);
    if plan.batch() as usize != seq_lens.len() {
        return Err(bad(format!(
            "made for {} sequences, the call has {}",
            plan.batch(),
            seq_lens.len()
        )));
    }
    let words = plan.words();
    let mut k = 0;
    for (b, &len) in seq_lens.iter().enumerate() {
        let count = words[2 * b + 1].max(0) as u32;
        let mut next = 0;
        for _ in 0..count {
            match plan.task(k) {
                Some((tb, c0, c1)) if tb as usize == b && c0 == next => next = c1,
                _ => return Err(bad(format!("task {k} does not continue sequence {b}"))),
            }
            k += 1;
        }
        if next as i64 != i64::from(len) {
            return Err(bad(format!(
                "sequence {b} of {len} tokens is planned to {next}"
            )));
        }
    }
    Ok(())
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
        self.mla_decode_with_plan(q_nope, q_rope, cache, block_table, seq_lens, scale, None)
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
