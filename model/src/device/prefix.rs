//! The engine's cache blocks: who holds them, and (with prefix caching) which full prompt blocks can be
//! shared by later prompts that start with the same tokens.
//!
//! # Contract
//! - Every block is free, held by live sequences (a reference count), or — with prefix caching —
//!   cached: no sequence holds it, but it keeps the latent and rope rows of a full block of some prompt
//!   and can be handed to a later prompt with the same prefix, or evicted when fresh blocks run out.
//! - A cached block is identified by its parent (the block before it in the prompt, or none) and its
//!   own `block_size` tokens: equal keys mean equal tokens at equal positions after an equal prefix, so
//!   equal cache rows in every layer. The key is exact (no hash): a match can never be wrong.
//! - Only blocks whose every slot holds a prompt token are shared, and a sequence writes only slots at
//!   or after its length, so a shared block is never written again while it is held or cached.
//! - Eviction takes the least recently released cached block with no cached child (a child's key names
//!   its parent's id, which a reused id would make wrong), so a prefix stays reachable from its first
//!   block for as long as any of it is cached.
use std::collections::{BTreeMap, HashMap};

use crate::cache::BlockAllocator;
use crate::error::{invalid_input, ModelError, Result};

/// The key of a cached block: its parent's id (`u32::MAX` for a prompt's first block) and its tokens.
type Key = (u32, Vec<i32>);

#[derive(Debug)]
pub(super) struct Blocks {
    allocator: BlockAllocator,
    block_size: usize,
    /// Whether full prompt blocks are kept and shared.
    sharing: bool,
    /// Live sequences holding each block.
    refs: Vec<u32>,
    /// Each cached (indexed) block's key.
    keys: Vec<Option<Key>>,
    /// Indexed blocks whose parent is this block.
    children: Vec<u32>,
    index: HashMap<Key, u32>,
    /// Indexed blocks that no sequence holds, by release time: the eviction order.
    idle: BTreeMap<u64, u32>,
    /// Each idle block's release time (its entry in `idle`).
    idle_since: Vec<Option<u64>>,
    clock: u64,
}

const NO_PARENT: u32 = u32::MAX;

impl Blocks {
    pub(super) fn new(num_blocks: usize, block_size: usize, sharing: bool) -> Result<Blocks> {
        Ok(Blocks {
            allocator: BlockAllocator::new(num_blocks)?,
            block_size,
            sharing,
            refs: vec![0; num_blocks],
            keys: vec![None; num_blocks],
            children: vec![0; num_blocks],
            index: HashMap::new(),
            idle: BTreeMap::new(),
            idle_since: vec![None; num_blocks],
            clock: 0,
        })
    }

    /// Blocks a sequence can still get: the free ones and the cached ones no sequence holds.
    pub(super) fn available(&self) -> usize {
        self.allocator.num_free() + self.idle.len()
    }

    /// The longest run of cached blocks holding the first tokens of `prompt`, now held by the caller;
    /// at least the prompt's last token is left out (its logits are what a prefill is for).
    pub(super) fn share_prefix(&mut self, prompt: &[i32]) -> Vec<u32> {
        let mut held = Vec::new();
        if !self.sharing || prompt.is_empty() {
            return held;
        }
        let bs = self.block_size;
        let mut parent = NO_PARENT;
        for chunk in prompt[..prompt.len() - 1].chunks_exact(bs) {
            let Some(&b) = self.index.get(&(parent, chunk.to_vec())) else {
                break;
            };
            self.hold(b);
            held.push(b);
            parent = b;
        }
        held
    }

    /// Remembers the full blocks of a prefilled `prompt` (held by one sequence, `blocks` in order) for
    /// later prompts; blocks already cached (shared) or keyed the same as a cached one stay as they are.
    pub(super) fn remember_prompt(&mut self, prompt: &[i32], blocks: &[u32]) {
        if !self.sharing {
            return;
        }
        let mut parent = NO_PARENT;
        for (chunk, &b) in prompt.chunks_exact(self.block_size).zip(blocks) {
            let key = (parent, chunk.to_vec());
            match self.index.get(&key) {
                // This block or an equal one is cached: the chain goes on from the cached one.
                Some(&cached) => parent = cached,
                None if self.keys[b as usize].is_none() => {
                    if parent != NO_PARENT {
                        self.children[parent as usize] += 1;
                    }
                    self.keys[b as usize] = Some(key.clone());
                    self.index.insert(key, b);
                    parent = b;
                }
                // `b` is cached under another key: cannot happen for a sequence's own prompt blocks.
                None => break,
            }
        }
    }

    /// `n` fresh blocks held by the caller (evicting idle cached blocks if the free ones do not
    /// suffice), or none and [`ModelError::OutOfBlocks`].
    pub(super) fn allocate(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.available() {
            return Err(ModelError::OutOfBlocks {
                needed: n,
                free: self.available(),
            });
        }
        while self.allocator.num_free() < n {
            self.evict_one()?;
        }
        let blocks = self.allocator.allocate(n)?;
        for &b in &blocks {
            self.refs[b as usize] = 1;
        }
        Ok(blocks)
    }

    /// The caller no longer holds `block`: it is freed, or kept cached when it holds a prompt's full
    /// block.
    pub(super) fn release(&mut self, block: u32) -> Result<()> {
        let i = block as usize;
        match self.refs.get(i) {
            Some(0) => return Err(invalid_input(format!("block {block} is not held"))),
            None => return Err(invalid_input(format!("block {block} does not exist"))),
            Some(_) => {}
        }
        self.refs[i] -= 1;
        if self.refs[i] > 0 {
            return Ok(());
        }
        if self.keys[i].is_some() {
            self.clock += 1;
            self.idle.insert(self.clock, block);
            self.idle_since[i] = Some(self.clock);
            Ok(())
        } else {
            self.allocator.free(block)
        }
    }

    fn hold(&mut self, block: u32) {
        let i = block as usize;
        if self.refs[i] == 0 {
            if let Some(t) = self.idle_since[i].take() {
                self.idle.remove(&t);
            }
        }
        self.refs[i] += 1;
    }

    /// Frees the least recently released idle block with no cached child.
    fn evict_one(&mut self) -> Result<()> {
        let (&t, &b) = self
            .idle
            .iter()
            .find(|(_, &b)| self.children[b as usize] == 0)
            .ok_or(ModelError::OutOfBlocks {
                needed: 1,
                free: self.allocator.num_free(),
            })?;
        self.idle.remove(&t);
        self.idle_since[b as usize] = None;
        if let Some(key) = self.keys[b as usize].take() {
            if key.0 != NO_PARENT {
                self.children[key.0 as usize] -= 1;
            }
            self.index.remove(&key);
        }
        self.allocator.free(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sharing_blocks_are_plain_allocations() {
        let mut b = Blocks::new(4, 2, false).unwrap();
        assert!(b.share_prefix(&[1, 2, 3, 4, 5]).is_empty());
        let got = b.allocate(3).unwrap();
        b.remember_prompt(&[1, 2, 3, 4, 5], &got);
        assert_eq!(b.available(), 1);
        for x in got {
            b.release(x).unwrap();
        }
        assert_eq!(b.available(), 4);
        assert!(b.share_prefix(&[1, 2, 3, 4, 5]).is_empty());
        assert!(b.release(0).is_err());
    }

    #[test]
    fn full_prompt_blocks_are_shared_then_evicted_leaf_first() {
        // Blocks of 2 tokens; prompt [1 2 | 3 4 | 5]: two full blocks are kept.
        let mut b = Blocks::new(4, 2, true).unwrap();
        let first = b.allocate(3).unwrap();
        b.remember_prompt(&[1, 2, 3, 4, 5], &first);
        for &x in &first {
            b.release(x).unwrap();
        }
        // The partial third block is freed, the two full ones stay cached (and available).
        assert_eq!(b.available(), 4);
        // Same first four tokens: both blocks; the last token is never shared.
        assert_eq!(b.share_prefix(&[1, 2, 3, 4, 9]), first[..2]);
        assert_eq!(b.share_prefix(&[1, 2, 3, 4]), first[..1]);
        // Another second block, or another first one: no match past the difference.
        assert_eq!(b.share_prefix(&[1, 2, 7, 4, 5]), first[..1]);
        assert!(b.share_prefix(&[2, 2, 3, 4, 5]).is_empty());
        // Held four times (block 0) and once (block 1) by the shares above; release them all.
        for x in [first[0], first[1], first[0], first[0]] {
            b.release(x).unwrap();
        }
        assert_eq!(b.available(), 4);
        // Needing every block evicts both cached ones, the child (second block) first.
        let all = b.allocate(4).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(b.available(), 0);
        for x in all {
            b.release(x).unwrap();
        }
        assert!(b.share_prefix(&[1, 2, 3, 4, 5]).is_empty());
    }

    #[test]
    fn a_held_block_is_not_evicted() {
        let mut b = Blocks::new(2, 1, true).unwrap();
        let p = b.allocate(2).unwrap();
        b.remember_prompt(&[7, 8, 9], &p);
        b.release(p[1]).unwrap();
        // p[0] is still held, p[1] (its child) idle: one block available, then none.
        assert_eq!(b.available(), 1);
        assert_eq!(b.allocate(1).unwrap(), vec![p[1]]);
        assert!(matches!(
            b.allocate(1),
            Err(ModelError::OutOfBlocks { needed: 1, free: 0 })
        ));
    }
}
