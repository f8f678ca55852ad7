//! The paged latent KV cache: a block allocator shared by all layers, one [`PagedLatentCache`] per layer, and
//! the block list and length of every sequence.
//!
//! # Contract
//! - A sequence's tokens live in its blocks in order: token `p` is at slot
//!   `blocks[p / block_size] · block_size + p % block_size` in every layer.
//! - `KvCache::reserve` grows a batch of sequences all-or-nothing: if the free blocks do not suffice, nothing
//!   changes and the error says how many were needed. A reservation that the model step then fails to fill is
//!   undone with `KvCache::rollback`, so a failed step leaves the cache as it was.
//! - Block ids are never handed out twice; freeing a block that is not in use is an error, not a corruption.

use crate::config::ModelConfig;
use crate::error::{invalid_input, ModelError, Result};
use dsnpu_ops::mla::PagedLatentCache;
use ndarray::{Array1, Array2};
use std::collections::BTreeMap;

/// Identifies a sequence in the cache.
pub type SeqId = u64;

/// Free-list allocator of cache blocks; hands out the lowest free id first.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    /// Free ids, highest first, so `pop` yields the lowest.
    free: Vec<u32>,
    in_use: Vec<bool>,
}

impl BlockAllocator {
    /// An allocator of `num_blocks` blocks, ids `0..num_blocks`; more than `u32::MAX` is
    /// [`ModelError::InvalidInput`] (block ids are u32: the count used to be truncated to its low 32
    /// bits, so such an allocator reported `num_blocks` blocks and handed out none or a few).
    pub fn new(num_blocks: usize) -> Result<Self> {
        let top = u32::try_from(num_blocks).map_err(|_| {
            invalid_input(format!(
                "{num_blocks} cache blocks: block ids are u32, at most {}",
                u32::MAX
            ))
        })?;
        Ok(BlockAllocator {
            free: (0..top).rev().collect(),
            in_use: vec![false; num_blocks],
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.in_use.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// `n` blocks, or none and [`ModelError::OutOfBlocks`].
    pub fn allocate(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free.len() {
            return Err(ModelError::OutOfBlocks {
                needed: n,
                free: self.free.len(),
            });
        }
        let blocks: Vec<u32> = (0..n).filter_map(|_| self.free.pop()).collect();
        for &b in &blocks {
            self.in_use[b as usize] = true;
        }
        Ok(blocks)
    }

    pub fn free(&mut self, block: u32) -> Result<()> {
        match self.in_use.get_mut(block as usize) {
            Some(used) if *used => {
                *used = false;
                // Keep the list sorted descending so allocation stays lowest-first.
                let pos = self.free.partition_point(|&b| b > block);
                self.free.insert(pos, block);
                Ok(())
            }
            Some(_) => Err(invalid_input(format!("block {block} is not in use"))),
            None => Err(invalid_input(format!(
                "block {block} does not exist ({} blocks)",
                self.in_use.len()
            ))),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Sequence {
    blocks: Vec<u32>,
    len: usize,
}

/// Slots reserved for one model step, and what to restore if the step fails.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// One slot per new token, sequences in batch order.
    pub slots: Array1<i32>,
    /// `(sequence, length before, block count before)`.
    undo: Vec<(SeqId, usize, usize)>,
}

/// The latent cache of all layers and the sequences stored in it.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<PagedLatentCache<f32>>,
    allocator: BlockAllocator,
    block_size: usize,
    seqs: BTreeMap<SeqId, Sequence>,
}

impl KvCache {
    /// A cache of `num_blocks` blocks of `block_size` tokens for every layer of `cfg`.
    pub fn new(cfg: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            return Err(invalid_input(
                "the cache needs at least one block of at least one token",
            ));
        }
        if num_blocks > i32::MAX as usize / block_size {
            return Err(invalid_input("cache slots must fit in i32"));
        }
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                PagedLatentCache::new(
                    num_blocks,
                    block_size,
                    cfg.kv_lora_rank,
                    cfg.qk_rope_head_dim,
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(KvCache {
            layers,
            allocator: BlockAllocator::new(num_blocks)?,
            block_size,
            seqs: BTreeMap::new(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_free_blocks(&self) -> usize {
        self.allocator.num_free()
    }

    /// Register an empty sequence.
    pub fn add_sequence(&mut self, id: SeqId) -> Result<()> {
        if self.seqs.contains_key(&id) {
            return Err(invalid_input(format!("sequence {id} already exists")));
        }
        self.seqs.insert(id, Sequence::default());
        Ok(())
    }

    /// Forget a sequence and free its blocks.
    pub fn remove_sequence(&mut self, id: SeqId) -> Result<()> {
        let seq = self.seqs.remove(&id).ok_or_else(|| unknown(id))?;
        for b in seq.blocks {
            self.allocator.free(b)?;
        }
        Ok(())
    }

    /// Tokens cached for `id`, or `None` if there is no such sequence.
    pub fn seq_len(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).map(|s| s.len)
    }

    /// Blocks of `id` in order.
    pub fn blocks(&self, id: SeqId) -> Option<&[u32]> {
        self.seqs.get(&id).map(|s| s.blocks.as_slice())
    }

    /// Checks that this cache was made for `cfg` (by [`crate::DeepseekV3::new_cache`] of a model with
    /// it): one layer per `num_hidden_layers`, each `kv_lora_rank` + `qk_rope_head_dim` wide. A cache of
    /// another model is [`ModelError::InvalidInput`]; with fewer layers it used to panic indexing them.
    pub fn check_fits(&self, cfg: &ModelConfig) -> Result<()> {
        let fits = self.layers.len() == cfg.num_hidden_layers
            && self.layers.iter().all(|l| {
                l.latent_dim() == cfg.kv_lora_rank && l.rope_dim() == cfg.qk_rope_head_dim
            });
        if fits {
            return Ok(());
        }
        let (latent, rope) = self
            .layers
            .first()
            .map_or((0, 0), |l| (l.latent_dim(), l.rope_dim()));
        Err(invalid_input(format!(
            "the cache holds {} layers of {latent} + {rope} values per token, the model {} of {} + {}: \
             it was made for another model",
            self.layers.len(),
            cfg.num_hidden_layers,
            cfg.kv_lora_rank,
            cfg.qk_rope_head_dim
        )))
    }

    pub fn layer(&self, l: usize) -> Option<&PagedLatentCache<f32>> {
        self.layers.get(l)
    }

    pub(crate) fn layer_mut(&mut self, l: usize) -> &mut PagedLatentCache<f32> {
        &mut self.layers[l]
    }

    /// Grow each `(sequence, new tokens)` of the batch and return the new tokens' slots.
    pub(crate) fn reserve(&mut self, batch: &[(SeqId, usize)]) -> Result<Reservation> {
        let mut needed = 0;
        for (i, &(id, n)) in batch.iter().enumerate() {
            if batch[..i].iter().any(|&(other, _)| other == id) {
                return Err(invalid_input(format!(
                    "sequence {id} appears twice in one batch"
                )));
            }
            let seq = self.seqs.get(&id).ok_or_else(|| unknown(id))?;
            needed += (seq.len + n).div_ceil(self.block_size) - seq.blocks.len();
        }
        let mut fresh = self.allocator.allocate(needed)?.into_iter();
        let mut slots = Vec::new();
        let mut undo = Vec::with_capacity(batch.len());
        for &(id, n) in batch {
            let seq = self.seqs.get_mut(&id).expect("checked above");
            undo.push((id, seq.len, seq.blocks.len()));
            while seq.blocks.len() * self.block_size < seq.len + n {
                seq.blocks
                    .push(fresh.next().expect("allocated exactly the blocks needed"));
            }
            for p in seq.len..seq.len + n {
                slots.push(
                    (seq.blocks[p / self.block_size] as usize * self.block_size
                        + p % self.block_size) as i32,
                );
            }
            seq.len += n;
        }
        Ok(Reservation {
            slots: Array1::from_vec(slots),
            undo,
        })
    }

    /// Undo a reservation whose step failed.
    pub(crate) fn rollback(&mut self, r: Reservation) {
        for (id, len, nblocks) in r.undo {
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.len = len;
                for b in seq.blocks.drain(nblocks..) {
                    // The blocks were allocated by `reserve`, so they are in use.
                    let _ = self.allocator.free(b);
                }
            }
        }
    }

    /// Block table `[B, max blocks]` of `ids`, rows padded with -1.
    pub(crate) fn block_table(&self, ids: &[SeqId]) -> Result<Array2<i32>> {
        let seqs = ids
            .iter()
            .map(|id| self.seqs.get(id).ok_or_else(|| unknown(*id)))
            .collect::<Result<Vec<_>>>()?;
        let width = seqs
            .iter()
            .map(|s| s.blocks.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut table = Array2::from_elem((ids.len(), width), -1);
        for (row, seq) in seqs.iter().enumerate() {
            for (j, &b) in seq.blocks.iter().enumerate() {
                table[[row, j]] = b as i32;
            }
        }
        Ok(table)
    }
}

fn unknown(id: SeqId) -> ModelError {
    invalid_input(format!("unknown sequence {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_hands_out_lowest_first_and_refuses_double_free() {
        let mut a = BlockAllocator::new(4).unwrap();
        assert_eq!(a.allocate(2).unwrap(), vec![0, 1]);
        assert!(matches!(
            a.allocate(3),
            Err(ModelError::OutOfBlocks { needed: 3, free: 2 })
        ));
        assert_eq!(a.num_free(), 2, "a refused allocation takes nothing");
        a.free(0).unwrap();
        assert!(a.free(0).is_err());
        assert!(a.free(9).is_err());
        assert_eq!(a.allocate(3).unwrap(), vec![0, 2, 3]);
    }

    fn cache(num_blocks: usize, block_size: usize) -> KvCache {
        let cfg =
            ModelConfig::from_json_str(include_str!("../tests/data/v3_base/config.json")).unwrap();
        KvCache::new(&cfg, num_blocks, block_size).unwrap()
    }

    #[test]
    fn reserve_maps_positions_to_slots_and_rollback_restores() {
        let mut c = cache(6, 4);
        c.add_sequence(10).unwrap();
        c.add_sequence(20).unwrap();
        // 10 takes block 0 (positions 0..3), 20 takes blocks 1, 2 (positions 0..5).
        let r = c.reserve(&[(10, 3), (20, 6)]).unwrap();
        assert_eq!(r.slots.to_vec(), vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        // 10 grows into its block 0 (slot 3) then block 3; 20 stays in block 2.
        let r = c.reserve(&[(10, 2), (20, 1)]).unwrap();
        assert_eq!(r.slots.to_vec(), vec![3, 12, 10]);
        assert_eq!(c.blocks(10).unwrap(), &[0, 3]);
        assert_eq!(
            c.block_table(&[20, 10]).unwrap(),
            ndarray::arr2(&[[1, 2], [0, 3]])
        );
        c.rollback(r);
        assert_eq!((c.seq_len(10), c.seq_len(20)), (Some(3), Some(6)));
        assert_eq!(c.blocks(10).unwrap(), &[0]);
        assert_eq!(c.num_free_blocks(), 3);
        // After rollback the freed block is handed out again.
        assert_eq!(c.reserve(&[(10, 2)]).unwrap().slots.to_vec(), vec![3, 12]);
        c.remove_sequence(20).unwrap();
        assert_eq!(c.num_free_blocks(), 4);
        assert!(c.remove_sequence(20).is_err());
        assert!(c.add_sequence(10).is_err());
    }
}
