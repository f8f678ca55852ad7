//! The MLA family on the device: no kernels are wired yet, so every operator is `Unsupported` (the
//! conformance suites report skips).

use ndarray::{Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4};

use super::Npu;
use crate::backend::MlaOps;
use crate::mla::PagedLatentCache;
use crate::{Float, Result};

const WHY: &str = "no device kernel wired yet";

impl MlaOps for Npu {
    fn mla_cache_write<T: Float>(
        &self,
        _cache: &mut PagedLatentCache<T>,
        _latent: ArrayView2<T>,
        _k_rope: ArrayView2<T>,
        _slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        Err(self.unsupported("mla_cache_write", WHY))
    }

    fn mla_decode<T: Float>(
        &self,
        _q_nope: ArrayView4<T>,
        _q_rope: ArrayView4<T>,
        _cache: &PagedLatentCache<T>,
        _block_table: ArrayView2<i32>,
        _seq_lens: ArrayView1<i32>,
        _scale: f32,
    ) -> Result<(Array4<T>, Array3<f32>)> {
        Err(self.unsupported("mla_decode", WHY))
    }

    fn mla_prefill<T: Float>(
        &self,
        _q: ArrayView3<T>,
        _k: ArrayView3<T>,
        _v: ArrayView3<T>,
        _cu_seqlens: ArrayView1<i32>,
        _scale: f32,
    ) -> Result<(Array3<T>, Array2<f32>)> {
        Err(self.unsupported("mla_prefill", WHY))
    }
}
