//! The paged latent KV cache of one layer: latent and rope parts kept separately, as Ascend does.
use crate::{Float, Result};
use ndarray::{Array3, ArrayView1, ArrayView2};

#[derive(Debug, Clone)]
pub struct PagedLatentCache<T> {
    /// `[num_blocks, block_size, kv_lora_rank]`.
    pub latent: Array3<T>,
    /// `[num_blocks, block_size, qk_rope_dim]`.
    pub rope: Array3<T>,
}

impl<T: Float> PagedLatentCache<T> {
    pub fn new(num_blocks: usize, block_size: usize, kv_lora_rank: usize, rope_dim: usize) -> Result<Self> {
        let _ = (num_blocks, block_size, kv_lora_rank, rope_dim);
        todo!("contract stub")
    }

    pub fn block_size(&self) -> usize {
        self.latent.shape()[1]
    }

    pub fn num_blocks(&self) -> usize {
        self.latent.shape()[0]
    }

    /// Write token `i`'s `latent[i]` `[N, Dl]` and `k_rope[i]` `[N, Dr]` to slot `slot_mapping[i]`
    /// (= block · block_size + offset); slot -1 is skipped (padding).
    pub fn write(&mut self, latent: ArrayView2<T>, k_rope: ArrayView2<T>, slot_mapping: ArrayView1<i32>) -> Result<()> {
        let _ = (latent, k_rope, slot_mapping);
        todo!("contract stub")
    }
}
