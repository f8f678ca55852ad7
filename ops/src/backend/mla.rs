//! The MLA operator family as a backend trait, with its [`Cpu`](super::Cpu) (the references) and
//! [`Fallback`](super::Fallback) implementations (made by `op_family!`).
//!
//! Each method has the arguments and result of the reference of the same name; see
//! [`crate::mla`] for the contracts. The cache crosses the trait as the host [`PagedLatentCache`]: a
//! device backend uploads the blocks it needs (or keeps a device mirror) inside the call; how it does so
//! is its own business, but after `mla_cache_write` and `mla_cache_write_fused` the host cache must hold
//! what the reference writes.
use super::family::op_family;
use crate::mla::{self, CacheWriteParams, PagedLatentCache};
use ndarray::{Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4};

op_family! {
    /// Multi-head Latent Attention: paged latent-cache write (of finished rows, and fused with the
    /// latent's RMSNorm and the rope), absorbed decode, non-absorbed prefill.
    pub trait MlaOps {
        /// See [`PagedLatentCache::write`].
        fn mla_cache_write(
            &mut cache: PagedLatentCache<T>,
            latent: ArrayView2<T>,
            k_rope: ArrayView2<T>,
            slot_mapping: ArrayView1<i32>,
        ) -> () = PagedLatentCache::write, MlaCacheWrite;

        /// See [`mla::mla_cache_write_fused`]: RMSNorm of `kv[:, :Dl]` and rope of `kv[:, Dl:]`,
        /// scattered into `cache` at `slot_mapping` (−1 skips).
        fn mla_cache_write_fused(
            &mut cache: PagedLatentCache<T>,
            kv: ArrayView2<T>,
            params: CacheWriteParams<'_, T>,
            slot_mapping: ArrayView1<i32>,
        ) -> () = mla::mla_cache_write_fused, MlaCacheWriteFused;

        /// See [`mla::mla_decode`]; returns `(out [B,S,H,Dl], lse f32 [B,H,S])`.
        fn mla_decode(
            q_nope: ArrayView4<T>,
            q_rope: ArrayView4<T>,
            cache: &PagedLatentCache<T>,
            block_table: ArrayView2<i32>,
            seq_lens: ArrayView1<i32>,
            scale: f32,
        ) -> (Array4<T>, Array3<f32>) = mla::mla_decode, MlaDecode;

        /// See [`mla::mla_prefill`]; returns `(out [T,H,Dv], lse f32 [H,T])`.
        fn mla_prefill(
            q: ArrayView3<T>,
            k: ArrayView3<T>,
            v: ArrayView3<T>,
            cu_seqlens: ArrayView1<i32>,
            scale: f32,
        ) -> (Array3<T>, Array2<f32>) = mla::mla_prefill, MlaPrefill;
    }
}
