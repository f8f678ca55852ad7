//! MLA prefill on the device (`mla_prefill_<t>`, [`launch::mla_prefill`]), on host arrays:
//! - the [`MlaOps::mla_prefill`](crate::backend::MlaOps) of the trait (expanded `q`, `k`, `v`) runs the
//!   kernel on dense views (`dn = Dqk`, no rope part);
//! - [`Npu::mla_prefill_cached`] has the arguments of [`crate::mla::mla_prefill_cached`] (chunked
//!   prefill over the paged cache) and runs [`launch::mla_prefill_from_cache`]: the keys' latent and
//!   rope rows gathered by slot and the latent up-projected on the device (the launcher's docs say why).
//!
//! Validation is the reference's own, before anything is uploaded, so the same inputs are rejected with
//! the same errors and the kernels only get what they trust (slots inside the cache, lengths within the
//! block table). The host cache is uploaded whole. A pack of no tokens is answered on the host.

use dsnpu_kernels::launch::{self, MlaCacheInputs, MlaCacheShape, MlaPrefillInputs};
use dsnpu_kernels::{MlaOperand, MlaPrefillDims};
use ndarray::{Array2, Array3, ArrayView1, ArrayView2, ArrayView3};

use super::{by_dtype, DevElem, Npu};
use crate::mla::prefill::check_mla_prefill_varlen;
use crate::mla::prefill_cached::check_mla_prefill_cached;
use crate::mla::PagedLatentCache;
use crate::{Float, Result};

impl Npu {
    /// See [`crate::mla::mla_prefill_cached`].
    #[allow(clippy::too_many_arguments)]
    pub fn mla_prefill_cached<T: Float>(
        &self,
        q: ArrayView3<T>,
        cu_q: ArrayView1<i32>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        kv_b: ArrayView2<T>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        const OP: &str = "mla_prefill_cached";
        let (dn, dv) =
            check_mla_prefill_cached(&q, &cu_q, cache, &block_table, &seq_lens, &kv_b, scale)?;
        let (tq, heads, _) = q.dim();
        if tq == 0 {
            return Ok((Array3::default((0, heads, dv)), Array2::zeros((heads, 0))));
        }
        by_dtype!(
            self,
            OP,
            T,
            prefill_cached_as(q, cu_q, cache, block_table, seq_lens, kv_b, scale, dn, dv)
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn prefill_cached_as<T: Float, E: DevElem>(
        &self,
        q: ArrayView3<T>,
        cu_q: ArrayView1<i32>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        kv_b: ArrayView2<T>,
        scale: f32,
        dn: usize,
        dv: usize,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        const OP: &str = "mla_prefill_cached";
        let (tq, heads, width) = q.dim();
        let (slots, cu_k) =
            key_slots(block_table, seq_lens, cache.block_size()).ok_or_else(|| {
                self.unsupported(
                    OP,
                    "a key slot or the key count exceeds the kernel's int32 indices",
                )
            })?;
        let host_cu_q = cu_q.to_vec();
        let qd = self.upload::<T, E>(OP, q.iter())?;
        let lat = self.upload::<T, E>(OP, cache.latent.iter())?;
        let rope = self.upload::<T, E>(OP, cache.rope.iter())?;
        let wd = self.upload::<T, E>(OP, kv_b.iter())?;
        let slots_d = self.upload_raw(OP, &slots)?;
        let cu_q_d = self.upload_raw(OP, &host_cu_q)?;
        let cu_k_d = self.upload_raw(OP, &cu_k)?;
        let mut out = self.alloc::<E>(OP, tq * heads * dv)?;
        let mut lse = self.alloc::<f32>(OP, tq * heads)?;
        let r = launch::mla_prefill_from_cache(
            &self.lib,
            &self.stream,
            MlaCacheInputs {
                q_nope: &qd,
                q_rope: &qd,
                latent: &lat,
                rope: &rope,
                kv_b: &wd,
                key_slots: &slots_d,
                cu_q: &cu_q_d,
                cu_k: &cu_k_d,
                host_cu_q: &host_cu_q,
                host_cu_k: &cu_k,
            },
            MlaCacheShape {
                heads,
                dn,
                dr: cache.rope_dim(),
                dv,
                latent_dim: cache.latent_dim(),
                num_slots: cache.capacity(),
                tokens_q: tq,
                q_nope: MlaOperand {
                    tok: (heads * width) as u64,
                    head: width as u64,
                    off: 0,
                    len: qd.len() as u64,
                },
                q_rope: MlaOperand {
                    tok: (heads * width) as u64,
                    head: width as u64,
                    off: dn as u64,
                    len: qd.len() as u64,
                },
            },
            &mut out,
            &mut lse,
            scale,
        );
        self.launched(OP, r)?;
        self.finish(OP)?;
        self.prefill_outputs::<T, E>(OP, &out, &lse, tq, heads, dv)
    }

    /// The trait's expanded-form prefill on the kernel (inputs checked by the reference's checks).
    pub(super) fn mla_prefill_dense<T: Float>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu_seqlens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        const OP: &str = "mla_prefill";
        check_mla_prefill_varlen(&q, &k, &v, &cu_seqlens, &cu_seqlens, scale)?;
        let (tq, heads, _) = q.dim();
        let dv = v.dim().2;
        if tq == 0 {
            return Ok((Array3::default((0, heads, dv)), Array2::zeros((heads, 0))));
        }
        by_dtype!(self, OP, T, prefill_dense_as(q, k, v, cu_seqlens, scale))
    }

    fn prefill_dense_as<T: Float, E: DevElem>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu_seqlens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        const OP: &str = "mla_prefill";
        let (tq, heads, dqk) = q.dim();
        let dv = v.dim().2;
        let host_cu = cu_seqlens.to_vec();
        let qd = self.upload::<T, E>(OP, q.iter())?;
        let kd = self.upload::<T, E>(OP, k.iter())?;
        let vd = self.upload::<T, E>(OP, v.iter())?;
        let cu = self.upload_raw(OP, &host_cu)?;
        let (t, h) = (tq as u64, heads as u64);
        let dims = MlaPrefillDims {
            heads: h,
            tokens_q: t,
            tokens_k: t,
            dn: dqk as u64,
            dr: 0,
            dv: dv as u64,
            q_nope: MlaOperand::dense(t, h, dqk as u64),
            q_rope: MlaOperand::default(),
            k_nope: MlaOperand::dense(t, h, dqk as u64),
            k_rope: MlaOperand::default(),
            v: MlaOperand::dense(t, h, dv as u64),
        };
        let mut out = self.alloc::<E>(OP, tq * heads * dv)?;
        let mut lse = self.alloc::<f32>(OP, tq * heads)?;
        let r = launch::mla_prefill(
            &self.lib,
            &self.stream,
            MlaPrefillInputs {
                q_nope: &qd,
                q_rope: &qd,
                k_nope: &kd,
                k_rope: &kd,
                v: &vd,
                cu_q: &cu,
                cu_k: &cu,
                host_cu_q: &host_cu,
                host_cu_k: &host_cu,
            },
            dims,
            &mut out,
            &mut lse,
            scale,
        );
        self.launched(OP, r)?;
        self.finish(OP)?;
        self.prefill_outputs::<T, E>(OP, &out, &lse, tq, heads, dv)
    }

    fn prefill_outputs<T: Float, E: DevElem>(
        &self,
        op: &'static str,
        out: &dsnpu_runtime::DeviceBuffer<E>,
        lse: &dsnpu_runtime::DeviceBuffer<f32>,
        tq: usize,
        heads: usize,
        dv: usize,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        let out = self.download::<T, E>(op, out)?;
        let lse = lse.to_vec().map_err(|e| self.fail(op, e))?;
        let out = Array3::from_shape_vec((tq, heads, dv), out)
            .expect("the kernel output holds T x H x Dv elements");
        let lse =
            Array2::from_shape_vec((heads, tq), lse).expect("the lse output holds H x T elements");
        Ok((out, lse))
    }
}

/// Each key's cache slot (the block table resolved, as the reference's expansion does) and the keys'
/// cumulative counts per sequence, for checked arguments; `None` when a slot or the key count does not
/// fit the kernel's int32 (a cache of more than `i32::MAX` slots).
fn key_slots(
    block_table: ArrayView2<i32>,
    seq_lens: ArrayView1<i32>,
    block_size: usize,
) -> Option<(Vec<i32>, Vec<i32>)> {
    let bs = i32::try_from(block_size).ok()?;
    let mut slots = Vec::new();
    let mut cu_k = vec![0i32];
    for (b, &len) in seq_lens.iter().enumerate() {
        for p in 0..len.max(0) {
            let block = block_table[[b, (p / bs) as usize]];
            slots.push(block.checked_mul(bs)?.checked_add(p % bs)?);
        }
        cu_k.push(i32::try_from(slots.len()).ok()?);
    }
    Some((slots, cu_k))
}

#[cfg(test)]
mod tests {
    use super::key_slots;
    use ndarray::array;

    #[test]
    fn key_slots_resolve_the_table_and_refuse_what_int32_cannot_index() {
        let (slots, cu) = key_slots(array![[1, 0], [2, 2]].view(), array![3, 1].view(), 2).unwrap();
        assert_eq!((slots, cu), (vec![2, 3, 0, 4], vec![0, 3, 4]));
        // Block 3 of 2^30 slots each starts past i32::MAX.
        assert_eq!(
            key_slots(array![[3]].view(), array![1].view(), 1 << 30),
            None
        );
        assert_eq!(
            key_slots(array![[0]].view(), array![1].view(), 1 << 31),
            None
        );
    }
}
