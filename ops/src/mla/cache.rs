//! The paged latent KV cache of one layer: latent and rope parts kept separately, as Ascend does
//! (`[blocks, block_size, 1, 512]` and `[blocks, block_size, 1, 64]` there; the single KV head is
//! dropped here).
//!
//! # Contract
//! - Token slot `slot = block · block_size + offset` addresses row `offset` of block `block`;
//!   the capacity is `num_blocks · block_size` slots.
//! - [`PagedLatentCache::write`] validates every shape and every slot before it writes anything, so a
//!   rejected call leaves the cache untouched. Slot `-1` marks a padding token and is skipped; any
//!   other negative slot or a slot `≥ capacity` is an [`OpsError::IndexOutOfRange`].
//! - Rows are written in token order: if a slot repeats, the reference keeps the last row. Device
//!   kernels scatter in parallel and must not be given a repeated slot; the device backend keeps the
//!   last row too, by skipping the earlier tokens of the slot before it launches.
//! - The fields are public (a backend uploads them as they are), so a cache may be built by hand;
//!   every operator therefore re-checks it with [`PagedLatentCache::check`] rather than trusting it.
use crate::error::expect_shape;
use crate::{Float, OpsError, Result};
use ndarray::{s, Array3, ArrayView1, ArrayView2};

#[derive(Debug, Clone)]
pub struct PagedLatentCache<T> {
    /// `[num_blocks, block_size, kv_lora_rank]`.
    pub latent: Array3<T>,
    /// `[num_blocks, block_size, qk_rope_dim]`.
    pub rope: Array3<T>,
}

impl<T: Float> PagedLatentCache<T> {
    /// A zero-filled cache. Every extent must be at least 1 and the element count addressable;
    /// a size that is addressable but exceeds the host's memory aborts like any failed allocation.
    pub fn new(
        num_blocks: usize,
        block_size: usize,
        kv_lora_rank: usize,
        rope_dim: usize,
    ) -> Result<Self> {
        const OP: &str = "PagedLatentCache::new";
        for (arg, v) in [
            ("num_blocks", num_blocks),
            ("block_size", block_size),
            ("kv_lora_rank", kv_lora_rank),
            ("rope_dim", rope_dim),
        ] {
            if v == 0 {
                return Err(crate::error::invalid(OP, arg, "must be at least 1"));
            }
        }
        // ndarray panics when the element count overflows `isize`; refuse such sizes up front.
        let limit = isize::MAX as usize / std::mem::size_of::<T>().max(1);
        for (arg, dim) in [("kv_lora_rank", kv_lora_rank), ("rope_dim", rope_dim)] {
            let fits = num_blocks
                .checked_mul(block_size)
                .and_then(|n| n.checked_mul(dim))
                .is_some_and(|n| n <= limit);
            if !fits {
                return Err(crate::error::invalid(
                    OP,
                    arg,
                    format!("{num_blocks}·{block_size}·{dim} elements do not fit in memory"),
                ));
            }
        }
        Ok(Self {
            latent: Array3::from_elem((num_blocks, block_size, kv_lora_rank), T::default()),
            rope: Array3::from_elem((num_blocks, block_size, rope_dim), T::default()),
        })
    }

    pub fn block_size(&self) -> usize {
        self.latent.shape()[1]
    }

    pub fn num_blocks(&self) -> usize {
        self.latent.shape()[0]
    }

    /// `kv_lora_rank` (Dl), the width of a latent row.
    pub fn latent_dim(&self) -> usize {
        self.latent.shape()[2]
    }

    /// `qk_rope_dim` (Dr), the width of a rope row.
    pub fn rope_dim(&self) -> usize {
        self.rope.shape()[2]
    }

    /// Number of token slots, `num_blocks · block_size`.
    pub fn capacity(&self) -> usize {
        self.num_blocks() * self.block_size()
    }

    /// Check the invariants [`PagedLatentCache::new`] establishes (a hand-built cache may break them):
    /// latent and rope agree on `[num_blocks, block_size]` and no extent is 0.
    pub fn check(&self, op: &'static str) -> Result<()> {
        let (l, r) = (self.latent.shape(), self.rope.shape());
        if l.contains(&0) {
            return Err(OpsError::Shape {
                op,
                arg: "cache.latent",
                got: l.to_vec(),
                expected: "[num_blocks ≥ 1, block_size ≥ 1, kv_lora_rank ≥ 1]".into(),
            });
        }
        let expected = format!("[{}, {}, rope_dim ≥ 1]", l[0], l[1]);
        if r[0] != l[0] || r[1] != l[1] || r[2] == 0 {
            return Err(OpsError::Shape {
                op,
                arg: "cache.rope",
                got: r.to_vec(),
                expected,
            });
        }
        Ok(())
    }

    /// Write token `i`'s `latent[i]` `[N, Dl]` and `k_rope[i]` `[N, Dr]` to slot `slot_mapping[i]`
    /// (= block · block_size + offset); slot -1 is skipped (padding).
    pub fn write(
        &mut self,
        latent: ArrayView2<T>,
        k_rope: ArrayView2<T>,
        slot_mapping: ArrayView1<i32>,
    ) -> Result<()> {
        const OP: &str = "mla_cache_write";
        self.check(OP)?;
        let n = slot_mapping.len();
        expect_shape(OP, "latent", latent.shape(), &[n, self.latent_dim()])?;
        expect_shape(OP, "k_rope", k_rope.shape(), &[n, self.rope_dim()])?;
        let capacity = self.capacity();
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
        let block_size = self.block_size();
        for (i, &slot) in slot_mapping.iter().enumerate() {
            if slot == -1 {
                continue;
            }
            let (block, offset) = (slot as usize / block_size, slot as usize % block_size);
            self.latent
                .slice_mut(s![block, offset, ..])
                .assign(&latent.row(i));
            self.rope
                .slice_mut(s![block, offset, ..])
                .assign(&k_rope.row(i));
        }
        Ok(())
    }
}
