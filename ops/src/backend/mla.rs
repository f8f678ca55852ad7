//! The MLA operator family as a backend trait, and its [`Cpu`] implementation (the references).
//!
//! Each method has the arguments and result of the reference of the same name; see
//! [`crate::mla`] for the contracts. The cache crosses the trait as the host [`PagedLatentCache`]: a
//! device backend uploads the blocks it needs (or keeps a device mirror) inside the call; how it does so
//! is its own business, but after `mla_cache_write` the host cache must hold what the reference writes.
use super::{Backend, Cpu};
use crate::mla::{self, PagedLatentCache};
use crate::{Float, Result};
use ndarray::{Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4};

/// Multi-head Latent Attention: paged latent-cache write, absorbed decode, non-absorbed prefill.
pub trait MlaOps: Backend {
    /// See [`PagedLatentCache::write`].
    fn mla_cache_write<T: Float>(
        &self,
        cache: &mut PagedLatentCache<T>,
        latent: ArrayView2<T>,
        k_rope: ArrayView2<T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()>;

    /// See [`mla::mla_decode`]; returns `(out [B,S,H,Dl], lse f32 [B,H,S])`.
    fn mla_decode<T: Float>(
        &self,
        q_nope: ArrayView4<T>,
        q_rope: ArrayView4<T>,
        cache: &PagedLatentCache<T>,
        block_table: ArrayView2<i32>,
        seq_lens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)>;

    /// See [`mla::mla_prefill`]; returns `(out [T,H,Dv], lse f32 [H,T])`.
    fn mla_prefill<T: Float>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu_seqlens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)>;
}

impl MlaOps for Cpu {
    fn mla_cache_write<T: Float>(
        &self,
        cache: &mut PagedLatentCache<T>,
        latent: ArrayView2<T>,
        k_rope: ArrayView2<T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        cache.write(latent, k_rope, slot_mapping)
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
        mla::mla_decode(q_nope, q_rope, cache, block_table, seq_lens, scale)
    }

    fn mla_prefill<T: Float>(
        &self,
        q: ArrayView3<T>,
        k: ArrayView3<T>,
        v: ArrayView3<T>,
        cu_seqlens: ArrayView1<i32>,
        scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        mla::mla_prefill(q, k, v, cu_seqlens, scale)
    }
}
