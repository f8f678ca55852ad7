//! [`Engine`]: the model resident on one device, driven step by step — the library API a serving stack
//! uses (continuous batching) and what `generate`/`forward --backend npu` are thin layers over.
//!
//! # Contract
//! - [`Engine::load`] uploads the weights once ([`DeviceWeights`]), the rope tables once, and allocates the
//!   paged latent cache of every layer in device memory (`num_blocks × block_size` slots).
//! - Compute dtype ([`EngineOptions::dtype`]): f32 (default) or bf16 activations, caches and logits;
//!   GEMMs accumulate in f32 and the norm/softmax kernels keep their statistics in f32 in both; the
//!   router runs in f32 on an f32 copy of its input and gating is f32. Weights keep their 16-bit
//!   checkpoint dtype on the device (see [`DeviceWeights`]).
//! - [`Engine::generate`] runs a batch of prompts to their ends on an otherwise idle engine (what
//!   `generate --backend npu` calls): prompt `i` samples with seed `seed + i`, as the CPU `Generator`.
//! - [`Engine::add_sequence`] validates a prompt (non-empty, ids `< vocab_size`, fits
//!   `max_position_embeddings`) and queues it; [`Engine::remove_sequence`] forgets a sequence and frees its
//!   cache blocks for reuse. Both may be called between any two steps.
//! - [`Engine::step`] advances every live sequence by one token and returns `(id, next token)` for each,
//!   in id order: sequences added since the last step are prefilled (one device pass per sequence, or
//!   one per [`EngineOptions::max_prefill_tokens`] tokens of it; its prompt written to the cache by the
//!   fused cache-write kernel and attended, expanded and causally, by `mla_prefill` over the cached
//!   keys), the others decode together in one pass (absorbed, `mla_decode`). A pass queues all its
//!   kernels on the one stream and the host waits once, for the sampled ids (`[rows]` i32): greedy
//!   `argmax` on the device, or with temperature > 0 `sample_top_p` on the device, with the CPU
//!   [`Sampler`]'s contract (each sequence's sampler supplies the counter-based uniform of its next
//!   draw, uploaded with the pass; on the simulator the ids are the CPU sampler's bit for bit given the
//!   same logits). Per-pass uploads are the new token ids and the small metadata (positions, slots,
//!   block table, lengths, per-head row counts, picked rows, the uniforms). An earlier chunk of a
//!   chunked prefill returns nothing: the host waits for it, and neither samples nor reads its logits.
//! - Prefix caching ([`EngineOptions::prefix_caching`], off by default): a prefilled prompt's full
//!   cache blocks stay cached after its sequence ends, and a prompt added later whose first tokens
//!   fill the same blocks (same tokens after the same prefix) shares them — held from `add_sequence`
//!   on, never written again — and prefills only the rest, over them (prompts added before the same
//!   step do not share with each other); cached blocks no sequence holds are evicted, least recently
//!   released first, when fresh blocks run out ([`EngineStats::prefix_hit_tokens`] counts the shared
//!   prompt tokens). See `prefix.rs`.
//! - Errors: no live sequence ([`ModelError::NoLiveSequences`]); a sequence that outgrows the cache
//!   ([`ModelError::OutOfBlocks`]) or `max_position_embeddings`; a step that fails leaves every
//!   sequence as it was before it (the passes it ran before the failing one are undone: cache lengths,
//!   blocks, next tokens, prompts and samplers restored), so the next step redoes it whole.
//! - Trusted: the kernels' contracts; the block tables and slots built here are valid by construction
//!   (the kernels would fault on a bad one on the simulator).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use dsnpu_kernels::launch::{self, KernelLibrary, RowSource};
use dsnpu_kernels::{KernelDtype, MlaDecodePlan, MlaOperand, MlaPlanShape, MoeList, RowLayout};
use dsnpu_ops::rope::RopeTable;
use dsnpu_ops::sampling::Sampler;
use dsnpu_runtime::{
    transfer_stats, Device, DeviceBuffer, DeviceRepr, HostBuffer, RuntimeError, Stream,
    TransferStats,
};

use super::ep::MoeLayer;
use super::ops::{Act, Buf, Ctx};
use super::prefix::Blocks;
use super::tensor::{DType, Elem, Tensor};
use super::weights::{AttentionW, DeviceWeights, FfnW, MlpW, MoeW, QueryW};
use crate::cache::SeqId;
use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, LATENT_NORM_EPS};
use crate::error::{invalid_input, ModelError, Result};

/// How the engine is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Device ordinal.
    pub device: i32,
    /// Cache blocks (shared by all sequences) and tokens per block.
    pub num_blocks: usize,
    pub block_size: usize,
    /// 0 = greedy (argmax on the device); else top-p sampling on the device (`sample_top_p`).
    pub temperature: f32,
    pub top_p: f32,
    /// Sequence `id` samples with seed `seed + id`.
    pub seed: u64,
    /// Compute dtype: [`DType::F32`] or [`DType::BF16`].
    pub dtype: DType,
    /// Keep the full cache blocks of prefilled prompts after their sequences end, and let a later
    /// prompt that starts with the same tokens share them instead of prefilling them again (automatic
    /// prefix caching, see `prefix.rs`). Off by default: a shared prefix gives the same cache rows,
    /// but the prompt's other tokens are then prefilled in a pass of their own, whose sums may round
    /// differently from a pass over the whole prompt.
    pub prefix_caching: bool,
    /// Most prompt tokens one prefill pass takes (0: a whole prompt in one pass). A longer prompt is
    /// prefilled in passes of at most this many tokens within its step (and `prompt_logits` computes
    /// its logits so), each over the cache rows the earlier ones wrote (chunked prefill): a pass's
    /// activations and workspaces stay bounded by the chunk, not the prompt. As with prefix caching, the later chunks' sums may round differently
    /// from one pass over the whole prompt.
    pub max_prefill_tokens: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            device: 0,
            num_blocks: 64,
            block_size: 16,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            dtype: DType::F32,
            prefix_caching: false,
            max_prefill_tokens: 0,
        }
    }
}

/// What one phase (prefill or decode) moved and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseStats {
    /// Prompt tokens (prefill) or decode passes (decode).
    pub count: u64,
    pub transfers: TransferStats,
    pub seconds: f64,
}

/// The engine's counters since load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub load: TransferStats,
    pub load_seconds: f64,
    /// Bytes of the weights as stored on the device.
    pub weight_bytes: u64,
    /// Bytes of the paged cache (all layers).
    pub cache_bytes: u64,
    pub prefill: PhaseStats,
    /// Prompt tokens whose cache rows were shared from earlier prompts instead of prefilled (prefix
    /// caching); `prefill.count` counts the others.
    pub prefix_hit_tokens: u64,
    pub decode: PhaseStats,
    /// Kernel launches by operator.
    pub ops: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct Seq {
    blocks: Vec<u32>,
    /// Tokens in the cache.
    len: usize,
    /// The prompt, until it is prefilled.
    prompt: Option<Vec<i32>>,
    /// The token to feed next (the last one returned).
    next: Option<i32>,
    sampler: Option<Sampler>,
}

/// What a step may change in a sequence (see `Engine::step`).
struct SeqMark {
    blocks: usize,
    len: usize,
    prompt: Option<Vec<i32>>,
    next: Option<i32>,
    sampler: Option<Sampler>,
}

impl Seq {
    fn mark(&self) -> SeqMark {
        SeqMark {
            blocks: self.blocks.len(),
            len: self.len,
            prompt: self.prompt.clone(),
            next: self.next,
            sampler: self.sampler.clone(),
        }
    }

    /// Back to `mark`; returns the blocks taken since, for the caller to release.
    fn restore(&mut self, mark: SeqMark) -> Vec<u32> {
        self.len = mark.len;
        self.prompt = mark.prompt;
        self.next = mark.next;
        self.sampler = mark.sampler;
        self.blocks.split_off(mark.blocks.min(self.blocks.len()))
    }
}

/// The layer caches, in the compute dtype.
#[derive(Debug)]
struct LayerCache {
    latent: Tensor,
    rope: Tensor,
}

/// One pass's device inputs (uploaded before any kernel is queued).
struct Pass {
    batch: usize,
    s: usize,
    tokens: usize,
    ids: DeviceBuffer<i32>,
    positions: DeviceBuffer<i32>,
    slots: DeviceBuffer<i32>,
    block_table: DeviceBuffer<i32>,
    max_blocks: usize,
    seq_lens: DeviceBuffer<i32>,
    /// The split-KV decode plan, made once per pass (every layer's `mla_decode` shares it), and its
    /// words on the device.
    plan: MlaDecodePlan,
    plan_words: DeviceBuffer<i32>,
    /// Rows of the step whose logits are wanted (`None` = all).
    picked: Option<(DeviceBuffer<i32>, usize)>,
    /// A prefill pass's keys for `mla_prefill` (`None` in decode passes, which run `mla_decode`).
    prefill: Option<PrefillKeys>,
    /// The pinned sources of the queued uploads, kept until the pass's synchronization.
    _staged: Staged,
}

/// The keys of a prefill pass: every cached position of each sequence (its prefix, then the pass's
/// tokens) by cache slot, and the cumulative query and key counts, on the device and on the host.
struct PrefillKeys {
    slots: DeviceBuffer<i32>,
    cu_q: DeviceBuffer<i32>,
    cu_k: DeviceBuffer<i32>,
    host_cu_q: Vec<i32>,
    host_cu_k: Vec<i32>,
}

/// Pinned host copies of a pass's inputs (their uploads are queued on the stream, so the host does not
/// wait; the buffers must outlive the copies, which the pass's one synchronization covers).
#[derive(Default)]
struct Staged {
    i32s: Vec<HostBuffer<i32>>,
}

/// The model on a device (see the module docs).
pub struct Engine {
    cfg: ModelConfig,
    opts: EngineOptions,
    ctx: Ctx,
    weights: DeviceWeights,
    cos: Buf,
    sin: Buf,
    table_rows: usize,
    caches: Vec<LayerCache>,
    blocks: Blocks,
    seqs: BTreeMap<SeqId, Seq>,
    next_id: SeqId,
    stats: EngineStats,
    /// Replaces the single-device MoE layer (expert parallelism, [`super::ep`]).
    moe_layer: Option<Box<dyn MoeLayer>>,
    _device: Device,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.opts.device)
            .field("live", &self.seqs.len())
            .finish()
    }
}

impl Engine {
    /// Loads `dir` (config.json and the checkpoint) onto device `opts.device`.
    pub fn load(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_sharded(dir, opts, None, progress)
    }

    /// [`Engine::load`] holding only the routed experts `experts` (`None`: all); the expert-parallel
    /// mode ([`super::ep`]) pairs a partial range with its [`MoeLayer`].
    pub(super) fn load_sharded(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        experts: Option<std::ops::Range<usize>>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = ModelConfig::from_file(dir.join("config.json"))?;
        let mut ckpt = Checkpoint::open(dir)?;
        if let Some(q) = cfg.quantization {
            ckpt = ckpt.with_fp8_block(q.block);
        }
        Sampler::new(opts.temperature, opts.top_p, opts.seed)?;
        if opts.block_size == 0 || opts.num_blocks == 0 {
            return Err(invalid_input(
                "the cache needs at least one block of at least one token",
            ));
        }
        let slots = opts
            .num_blocks
            .checked_mul(opts.block_size)
            .filter(|&n| n <= i32::MAX as usize)
            .ok_or_else(|| invalid_input("cache slots must fit in i32"))?;
        let start = Instant::now();
        let before = transfer_stats();
        let device = Device::new(opts.device)?;
        let lib = KernelLibrary::get(&device)?;
        let stream = device.new_stream()?;
        let experts = experts.unwrap_or(0..cfg.n_routed_experts);
        let dtype = opts.dtype;
        let weights =
            DeviceWeights::load_experts(&cfg, &ckpt, &device, &stream, dtype, experts, progress)?;
        let table = RopeTable::new(&cfg.rope, cfg.max_position_embeddings)?;
        let cos = stream.upload(table.cos.as_slice().expect("a standard-layout table"))?;
        let sin = stream.upload(table.sin.as_slice().expect("a standard-layout table"))?;
        let (dl, dr) = (cfg.kv_lora_rank, cfg.qk_rope_head_dim);
        let cache_bytes = cfg
            .num_hidden_layers
            .saturating_mul(slots)
            .saturating_mul(dl + dr)
            .saturating_mul(dtype.size()) as u64;
        // Named as the cache: a bare out-of-memory of the allocator would not say that the options
        // asked for too much.
        let cache_oom = |e: ModelError| match e {
            ModelError::Device(RuntimeError::OutOfMemory { .. }) => ModelError::CacheMemory {
                slots,
                needed: cache_bytes,
                free: device.mem_info().map_or(0, |m| m.free as u64),
            },
            other => other,
        };
        let caches = (0..cfg.num_hidden_layers)
            .map(|_| {
                let zeroed = |n: usize| -> Result<Tensor> {
                    match dtype {
                        DType::BF16 => Tensor::from_device(
                            &[n],
                            stream.alloc_zeroed::<half::bf16>(n)?,
                            &stream,
                        ),
                        _ => Tensor::from_device(&[n], stream.alloc_zeroed::<f32>(n)?, &stream),
                    }
                };
                Ok(LayerCache {
                    latent: zeroed(slots * dl)?,
                    rope: zeroed(slots * dr)?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(cache_oom)?;
        stream.synchronize()?;
        let stats = EngineStats {
            load: transfer_stats() - before,
            load_seconds: start.elapsed().as_secs_f64(),
            weight_bytes: weights.bytes,
            cache_bytes,
            ..EngineStats::default()
        };
        Ok(Engine {
            table_rows: table.max_positions(),
            blocks: Blocks::new(opts.num_blocks, opts.block_size, opts.prefix_caching)?,
            cfg,
            opts,
            ctx: Ctx {
                lib,
                stream,
                ops: Mutex::new(BTreeMap::new()),
            },
            weights,
            cos,
            sin,
            caches,
            seqs: BTreeMap::new(),
            next_id: 0,
            stats,
            moe_layer: None,
            _device: device,
        })
    }

    /// Every MoE layer of a pass runs `layer` instead of the single-device routing.
    pub(super) fn set_moe_layer(&mut self, layer: Box<dyn MoeLayer>) {
        self.moe_layer = Some(layer);
    }

    /// The stream, kernels and op counters, and the MoE layers' weights in layer order (the
    /// expert-parallel mode's idle passes run those layers over no tokens).
    pub(super) fn moe_parts(&self) -> (&Ctx, &ModelConfig, Vec<&MoeW>) {
        let moe = self.weights.layers.iter().filter_map(|l| match &l.ffn {
            FfnW::Moe(m) => Some(&**m),
            FfnW::Dense(_) => None,
        });
        (&self.ctx, &self.cfg, moe.collect())
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Counters since load (the operator counts as of now).
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.ops = self.ctx.op_counts();
        s
    }

    /// Device memory the stream's pool has held at most, bytes.
    pub fn device_peak_bytes(&self) -> u64 {
        self.ctx.stream.pool().stats().peak_reserved as u64
    }

    /// Live sequences, in id order.
    pub fn live(&self) -> Vec<SeqId> {
        self.seqs.keys().copied().collect()
    }

    /// Queues a prompt; it is prefilled by the next [`step`](Self::step). Returns its id (ids count up
    /// from 0 and are never reused). When sampling, the sequence's sampler is seeded with the engine's
    /// seed plus its id, so the sequences of one engine draw different streams.
    pub fn add_sequence(&mut self, prompt: &[i32]) -> Result<SeqId> {
        let seed = self.opts.seed.wrapping_add(self.next_id);
        self.add_sequence_seeded(prompt, seed)
    }

    /// [`add_sequence`](Self::add_sequence) with the sampler seeded with `seed` itself: a prompt added
    /// with the same seed to an engine with the same options samples the same ids.
    pub fn add_sequence_seeded(&mut self, prompt: &[i32], seed: u64) -> Result<SeqId> {
        self.insert_sequence(prompt, seed, true)
    }

    /// A new sequence for `prompt`; with `share` and prefix caching it holds the cached blocks of its
    /// first tokens at once (so nothing can evict them before its prefill, and
    /// [`passes_next_step`](Self::passes_next_step) knows what is left to prefill).
    fn insert_sequence(&mut self, prompt: &[i32], seed: u64, share: bool) -> Result<SeqId> {
        self.check_new_prompt(prompt)?;
        let id = self.next_id;
        let sampler = (self.opts.temperature != 0.0)
            .then(|| Sampler::new(self.opts.temperature, self.opts.top_p, seed))
            .transpose()?;
        self.next_id += 1;
        let blocks = if share {
            self.blocks.share_prefix(prompt)
        } else {
            Vec::new()
        };
        let len = blocks.len() * self.opts.block_size;
        self.stats.prefix_hit_tokens += len as u64;
        self.seqs.insert(
            id,
            Seq {
                blocks,
                len,
                prompt: Some(prompt.to_vec()),
                next: None,
                sampler,
            },
        );
        Ok(id)
    }

    /// What [`add_sequence`](Self::add_sequence) refuses: an empty prompt, an id outside the
    /// vocabulary, more tokens than `max_position_embeddings` or than the whole cache holds.
    pub(crate) fn check_new_prompt(&self, prompt: &[i32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(invalid_input("an empty prompt"));
        }
        if let Some((i, t)) = prompt
            .iter()
            .enumerate()
            .find(|(_, &t)| t < 0 || t as usize >= self.cfg.vocab_size)
        {
            return Err(invalid_input(format!(
                "prompt token {i} is {t}, outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        if prompt.len() > self.cfg.max_position_embeddings {
            return Err(invalid_input(format!(
                "a {}-token prompt exceeds max_position_embeddings {}",
                prompt.len(),
                self.cfg.max_position_embeddings
            )));
        }
        // A prompt larger than the whole cache could only ever fail its prefill with OutOfBlocks, which
        // tells the caller to free a sequence: no number of frees would make it fit.
        let (bs, total) = (self.opts.block_size, self.opts.num_blocks);
        if prompt.len().div_ceil(bs) > total {
            return Err(invalid_input(format!(
                "a {}-token prompt needs {} cache blocks of {bs} tokens; the cache has {total} in all",
                prompt.len(),
                prompt.len().div_ceil(bs)
            )));
        }
        Ok(())
    }

    /// Generates for a batch of prompts on an engine with no live sequence: prompt `i` is added with
    /// its sampler seeded `seed + i` (as the CPU [`Generator`](crate::Generator) seeds a batch, so each
    /// prompt's ids are those of its run alone with that seed), the batch steps until every sequence
    /// has `max_new_tokens` ids or emitted a stop id (included), and each sequence leaves the batch as
    /// it finishes (its blocks freed for the others). On an error the prompts' sequences are removed.
    pub fn generate(
        &mut self,
        prompts: &[Vec<i32>],
        max_new_tokens: usize,
        stop: &[i32],
    ) -> Result<Vec<Vec<i32>>> {
        if !self.seqs.is_empty() {
            return Err(invalid_input(format!(
                "generate runs a batch of its own, but {} sequences are live",
                self.seqs.len()
            )));
        }
        // Before the shortcut: a request for no tokens is refused when its prompts are.
        self.check_prompts(prompts, max_new_tokens)?;
        let mut outs = vec![Vec::new(); prompts.len()];
        if max_new_tokens == 0 {
            return Ok(outs);
        }
        let mut owner: BTreeMap<SeqId, usize> = BTreeMap::new();
        let run = (|| {
            for (i, p) in prompts.iter().enumerate() {
                owner.insert(self.add_sequence_seeded(p, self.batch_seed(i))?, i);
            }
            while !owner.is_empty() {
                self.step_batch(&mut owner, &mut outs, max_new_tokens, stop)?;
            }
            Ok(())
        })();
        if let Err(e) = run {
            for id in owner.into_keys() {
                let _ = self.remove_sequence(id);
            }
            return Err(e);
        }
        Ok(outs)
    }

    /// As the CPU [`Generator`](crate::Generator): a batch with an empty prompt, an id outside the
    /// vocabulary or a prompt that cannot reach its length is refused before it starts (`generate`, and
    /// expert parallelism's on every rank alike, before any collective).
    pub(crate) fn check_prompts(&self, prompts: &[Vec<i32>], max_new_tokens: usize) -> Result<()> {
        let cfg = self.config();
        for (i, p) in prompts.iter().enumerate() {
            crate::generate::check_prompt(i, p, cfg.vocab_size)?;
            crate::positions_needed(i, p.len(), max_new_tokens, cfg.max_position_embeddings)?;
        }
        Ok(())
    }

    /// One step of a batch run to its ends (`generate`, and expert parallelism's): each token to its
    /// prompt's ids (`owner`: sequence → prompt), and the sequences with `max_new_tokens` ids or a
    /// `stop` id removed.
    pub(crate) fn step_batch(
        &mut self,
        owner: &mut BTreeMap<SeqId, usize>,
        outs: &mut [Vec<i32>],
        max_new_tokens: usize,
        stop: &[i32],
    ) -> Result<()> {
        for (id, t) in self.step()? {
            let i = owner[&id];
            outs[i].push(t);
            if outs[i].len() >= max_new_tokens || stop.contains(&t) {
                self.remove_sequence(id)?;
                owner.remove(&id);
            }
        }
        Ok(())
    }

    /// The sampler seed of prompt `i` of a batch ([`generate`](Self::generate)): the engine's seed + i.
    pub(crate) fn batch_seed(&self, i: usize) -> u64 {
        self.opts.seed.wrapping_add(i as u64)
    }

    /// Forgets a sequence and frees its cache blocks.
    pub fn remove_sequence(&mut self, id: SeqId) -> Result<()> {
        let seq = self
            .seqs
            .remove(&id)
            .ok_or_else(|| invalid_input(format!("unknown sequence {id}")))?;
        for b in seq.blocks {
            self.blocks.release(b)?;
        }
        Ok(())
    }

    /// Cache blocks a sequence can still get: the free ones, and with prefix caching the cached ones
    /// no live sequence holds (evicted when needed).
    pub fn free_blocks(&self) -> usize {
        self.blocks.available()
    }

    /// The device passes the next [`step`](Self::step) will run: one for the decoding sequences (if
    /// any), and for each sequence to prefill one per `max_prefill_tokens` of its prompt not shared from
    /// the prefix cache. Expert parallelism matches the ranks' passes with it.
    pub fn passes_next_step(&self) -> usize {
        let mut passes = 0;
        let mut decoding = false;
        for seq in self.seqs.values() {
            match &seq.prompt {
                None => decoding = true,
                Some(p) => {
                    passes += self.prompt_passes(p.len() - seq.len);
                }
            }
        }
        passes + usize::from(decoding)
    }

    /// One token for every live sequence (see the module docs).
    pub fn step(&mut self) -> Result<Vec<(SeqId, i32)>> {
        if self.seqs.is_empty() {
            return Err(ModelError::NoLiveSequences);
        }
        // A step is several passes (the decode, each prefill or chunk of one); if one fails, the ones
        // before it are undone too, so the sequences' cache lengths, next tokens, prompts and samplers
        // stay what the caller saw (their tokens would be lost with the error otherwise).
        let before: Vec<(SeqId, SeqMark)> =
            self.seqs.iter().map(|(&id, s)| (id, s.mark())).collect();
        self.step_passes().inspect_err(|_| {
            for (id, mark) in before {
                if let Some(seq) = self.seqs.get_mut(&id) {
                    for b in seq.restore(mark) {
                        let _ = self.blocks.release(b);
                    }
                }
            }
        })
    }

    fn step_passes(&mut self) -> Result<Vec<(SeqId, i32)>> {
        let mut out = Vec::with_capacity(self.seqs.len());
        let new: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, s)| s.prompt.is_some())
            .map(|(&id, _)| id)
            .collect();
        let decoding: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, s)| s.prompt.is_none())
            .map(|(&id, _)| id)
            .collect();
        // Decode first: the prefills below must not change what the decoders see.
        if !decoding.is_empty() {
            let feeds: Vec<(SeqId, Vec<i32>)> = decoding
                .iter()
                .map(|&id| {
                    (
                        id,
                        vec![self.seqs[&id]
                            .next
                            .expect("a prefilled sequence has a next token")],
                    )
                })
                .collect();
            let start = Instant::now();
            let before = transfer_stats();
            let ids = self.pass(&feeds, false, Output::Ids)?;
            self.stats.decode.transfers =
                add(self.stats.decode.transfers, transfer_stats() - before);
            self.stats.decode.seconds += start.elapsed().as_secs_f64();
            self.stats.decode.count += 1;
            out.extend(decoding.iter().copied().zip(ids));
        }
        for id in new {
            let prompt = self.seqs[&id].prompt.clone().expect("filtered above");
            let start = Instant::now();
            let before = transfer_stats();
            // The blocks shared from the prefix cache when the sequence was added are not prefilled.
            let cached = self.seqs[&id].len;
            let ids = self.prefill_chunks(id, &prompt[cached..])?;
            self.stats.prefill.transfers =
                add(self.stats.prefill.transfers, transfer_stats() - before);
            self.stats.prefill.seconds += start.elapsed().as_secs_f64();
            self.stats.prefill.count += (prompt.len() - cached) as u64;
            let seq = self.seqs.get_mut(&id).expect("live");
            seq.prompt = None;
            self.blocks.remember_prompt(&prompt, &seq.blocks);
            out.push((id, ids[0]));
        }
        for &(id, t) in &out {
            self.seqs.get_mut(&id).expect("live").next = Some(t);
        }
        out.sort_by_key(|&(id, _)| id);
        Ok(out)
    }

    /// Full logits `[len, V]` of a prompt (`forward`): a temporary sequence, prefilled (in
    /// [`prompt_passes`](Self::prompt_passes) passes) and removed.
    pub fn prompt_logits(&mut self, prompt: &[i32]) -> Result<Vec<f32>> {
        // All of the prompt's rows are computed: its logits are what `forward` returns.
        let seed = self.opts.seed.wrapping_add(self.next_id);
        let id = self.insert_sequence(prompt, seed, false)?;
        let start = Instant::now();
        let before = transfer_stats();
        let r = self.logits_in_passes(id, prompt);
        self.stats.prefill.transfers = add(self.stats.prefill.transfers, transfer_stats() - before);
        self.stats.prefill.seconds += start.elapsed().as_secs_f64();
        self.stats.prefill.count += prompt.len() as u64;
        let removed = self.remove_sequence(id);
        let logits = r?;
        removed?;
        // The downloaded logits are checked on the host: no forward returns non-finite logits. The
        // device's earlier stages are not checked one by one (the CPU backend names the first stage).
        let vocab = self.cfg.vocab_size;
        if let Some((flat, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ModelError::NonFiniteOutput {
                op: "the device forward's logits (lm_head; run --backend cpu to name the first stage)".into(),
                index: vec![flat / vocab.max(1), flat % vocab.max(1)],
                value,
            });
        }
        Ok(logits)
    }

    /// The passes that prefill `len` prompt tokens (and that [`prompt_logits`](Self::prompt_logits)
    /// runs for a `len`-token prompt): one per `max_prefill_tokens` of them (one when that is 0).
    pub fn prompt_passes(&self, len: usize) -> usize {
        len.div_ceil(self.chunk_len(len)).max(1)
    }

    /// Tokens per pass when `len` prompt tokens are prefilled.
    fn chunk_len(&self, len: usize) -> usize {
        match self.opts.max_prefill_tokens {
            0 => len.max(1),
            n => n,
        }
    }

    /// Every row's logits of `prompt` fed to the empty sequence `id`, in passes of at most
    /// `max_prefill_tokens` tokens.
    fn logits_in_passes(&mut self, id: SeqId, prompt: &[i32]) -> Result<Vec<f32>> {
        let mut logits = Vec::with_capacity(prompt.len() * self.cfg.vocab_size);
        for part in prompt.chunks(self.chunk_len(prompt.len())) {
            let (slots, undo) = self.reserve(&[(id, part.len())])?;
            match self.run_pass(&[(id, part.to_vec())], &slots, true, Output::Logits) {
                Ok(PassOut::Logits(l)) => logits.extend(l),
                Ok(PassOut::Ids(_)) => unreachable!("Output::Logits asks for logits"),
                Err(e) => {
                    self.rollback(undo);
                    return Err(e);
                }
            }
        }
        Ok(logits)
    }

    /// Reserves `n` new tokens for each sequence (all or nothing); returns their slots and the undo list.
    #[allow(clippy::type_complexity)]
    fn reserve(
        &mut self,
        batch: &[(SeqId, usize)],
    ) -> Result<(Vec<i32>, Vec<(SeqId, usize, usize)>)> {
        let bs = self.opts.block_size;
        let mut needed = 0;
        for &(id, n) in batch {
            let seq = &self.seqs[&id];
            if seq.len + n > self.cfg.max_position_embeddings {
                return Err(invalid_input(format!(
                    "sequence {id} would hold {} tokens, max_position_embeddings is {}",
                    seq.len + n,
                    self.cfg.max_position_embeddings
                )));
            }
            needed += (seq.len + n).div_ceil(bs) - seq.blocks.len();
        }
        let mut fresh = self.blocks.allocate(needed)?.into_iter();
        let mut slots = Vec::new();
        let mut undo = Vec::new();
        for &(id, n) in batch {
            let seq = self.seqs.get_mut(&id).expect("checked above");
            undo.push((id, seq.len, seq.blocks.len()));
            while seq.blocks.len() * bs < seq.len + n {
                seq.blocks
                    .push(fresh.next().expect("allocated exactly the blocks needed"));
            }
            for p in seq.len..seq.len + n {
                slots.push((seq.blocks[p / bs] as usize * bs + p % bs) as i32);
            }
            seq.len += n;
        }
        Ok((slots, undo))
    }

    fn rollback(&mut self, undo: Vec<(SeqId, usize, usize)>) {
        for (id, len, nblocks) in undo {
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.len = len;
                for b in seq.blocks.drain(nblocks..) {
                    let _ = self.blocks.release(b);
                }
            }
        }
    }

    /// Prefills `tokens` of sequence `id` after what its cache holds, in passes of at most
    /// `max_prefill_tokens` (all at once when 0); returns the next id after the last one. Only the last
    /// pass samples (an earlier one's logits are not read, and its sampler does not advance).
    fn prefill_chunks(&mut self, id: SeqId, tokens: &[i32]) -> Result<Vec<i32>> {
        let chunk = self.chunk_len(tokens.len());
        let mut rest = tokens;
        while rest.len() > chunk {
            let (now, later) = rest.split_at(chunk);
            self.pass(&[(id, now.to_vec())], true, Output::Nothing)?;
            rest = later;
        }
        self.pass(&[(id, rest.to_vec())], true, Output::Ids)
    }

    /// Feeds each sequence its tokens (all the same count, or one prefill), returns the next ids (none
    /// with `Output::Nothing`).
    fn pass(
        &mut self,
        feeds: &[(SeqId, Vec<i32>)],
        prefill: bool,
        out: Output,
    ) -> Result<Vec<i32>> {
        let batch: Vec<(SeqId, usize)> = feeds.iter().map(|(id, t)| (*id, t.len())).collect();
        let (slots, undo) = self.reserve(&batch)?;
        match self.run_pass(feeds, &slots, prefill, out) {
            Ok(PassOut::Ids(ids)) => Ok(ids),
            Ok(PassOut::Logits(_)) => unreachable!("only prompt_logits asks for logits"),
            Err(e) => {
                self.rollback(undo);
                Err(e)
            }
        }
    }

    fn upload_pass(
        &self,
        feeds: &[(SeqId, Vec<i32>)],
        slots: &[i32],
        all_rows: bool,
        prefill: bool,
    ) -> Result<Pass> {
        let s = feeds[0].1.len();
        let batch = feeds.len();
        let tokens = batch * s;
        let mut ids = Vec::with_capacity(tokens);
        let mut positions = Vec::with_capacity(tokens);
        let mut lens = Vec::with_capacity(batch);
        let max_blocks = feeds
            .iter()
            .map(|(id, _)| self.seqs[id].blocks.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut table = vec![-1i32; batch * max_blocks];
        for (b, (id, feed)) in feeds.iter().enumerate() {
            let seq = &self.seqs[id];
            let start = seq.len - feed.len();
            ids.extend_from_slice(feed);
            positions.extend((start..seq.len).map(|p| p as i32));
            lens.push(seq.len as i32);
            for (j, &blk) in seq.blocks.iter().enumerate() {
                table[b * max_blocks + j] = blk as i32;
            }
        }
        let (st, dev) = (&self.ctx.stream, &self._device);
        let heads = self.cfg.num_attention_heads;
        let mut staged = Staged::default();
        let mut up = |v: &[i32]| stage(dev, st, v, &mut staged.i32s);
        // Prefill wants the last row of each sequence; decode (s = 1) every row.
        let picked = if all_rows || s == 1 {
            None
        } else {
            let rows: Vec<i32> = (1..=batch).map(|b| (b * s - 1) as i32).collect();
            Some((up(&rows)?, batch))
        };
        let (ids, positions, slots, block_table, seq_lens) = (
            up(&ids)?,
            up(&positions)?,
            up(slots)?,
            up(&table)?,
            up(&lens)?,
        );
        let host_lens: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let plan = MlaDecodePlan::for_shape(
            &host_lens,
            MlaPlanShape {
                query_rows: (s * heads) as u32,
                latent_dim: self.cfg.kv_lora_rank as u32,
                rope_dim: self.cfg.qk_rope_head_dim as u32,
                dtype: match self.opts.dtype {
                    DType::BF16 => KernelDtype::Bf16,
                    _ => KernelDtype::F32,
                },
            },
            self.ctx.lib.hardware().cube.cores,
        )?;
        let plan_words = stage(dev, st, plan.words(), &mut staged.i32s)?;
        let prefill = if prefill {
            let bs = self.opts.block_size;
            let (mut key_slots, mut cu_q, mut cu_k) = (Vec::new(), vec![0i32], vec![0i32]);
            for (id, feed) in feeds {
                let seq = &self.seqs[id];
                key_slots.extend(
                    (0..seq.len).map(|p| (seq.blocks[p / bs] as usize * bs + p % bs) as i32),
                );
                cu_q.push(cu_q[cu_q.len() - 1] + feed.len() as i32);
                cu_k.push(key_slots.len() as i32);
            }
            Some(PrefillKeys {
                slots: stage(dev, st, &key_slots, &mut staged.i32s)?,
                cu_q: stage(dev, st, &cu_q, &mut staged.i32s)?,
                cu_k: stage(dev, st, &cu_k, &mut staged.i32s)?,
                host_cu_q: cu_q,
                host_cu_k: cu_k,
            })
        } else {
            None
        };
        Ok(Pass {
            batch,
            s,
            tokens,
            ids,
            positions,
            slots,
            block_table,
            max_blocks,
            seq_lens,
            plan,
            plan_words,
            picked,
            prefill,
            _staged: staged,
        })
    }

    fn run_pass(
        &mut self,
        feeds: &[(SeqId, Vec<i32>)],
        slots: &[i32],
        prefill: bool,
        out: Output,
    ) -> Result<PassOut> {
        match self.opts.dtype {
            DType::BF16 => self.run_pass_as::<half::bf16>(feeds, slots, prefill, out),
            _ => self.run_pass_as::<f32>(feeds, slots, prefill, out),
        }
    }

    fn run_pass_as<T: Act>(
        &mut self,
        feeds: &[(SeqId, Vec<i32>)],
        slots: &[i32],
        prefill: bool,
        out: Output,
    ) -> Result<PassOut> {
        let all_logits = out == Output::Logits;
        let p = self.upload_pass(feeds, slots, all_logits, prefill)?;
        let (logits, rows) = self.forward_pass::<T>(&p)?;
        let v = self.cfg.vocab_size;
        match out {
            Output::Logits => {
                self.ctx.stream.synchronize()?;
                let logits: Vec<f32> = logits.to_vec()?.into_iter().map(|x| x.to_f32()).collect();
                return Ok(PassOut::Logits(logits));
            }
            // The pass's cache rows are what it was for; waiting here surfaces its errors.
            Output::Nothing => {
                self.ctx.stream.synchronize()?;
                return Ok(PassOut::Ids(Vec::new()));
            }
            Output::Ids => {}
        }
        let mut ids = self.ctx.alloc::<i32>(rows)?;
        if self.opts.temperature == 0.0 {
            let r = launch::argmax(&self.ctx.lib, &self.ctx.stream, &logits, &mut ids, rows, v);
            self.ctx.note_launch("argmax", r)?;
            self.ctx.stream.synchronize()?;
            let ids = ids.to_vec()?;
            return match ids.iter().position(|&id| id < 0) {
                Some(r) => Err(non_finite_logits(r)),
                None => Ok(PassOut::Ids(ids)),
            };
        }
        // Sampling on the device: each row's next uniform (the counter-based value its CPU Sampler would
        // draw) goes up with the pass, the ids come back; the samplers advance once the pass succeeded.
        let mut advanced: Vec<Sampler> = feeds
            .iter()
            .map(|(id, _)| {
                self.seqs[id]
                    .sampler
                    .clone()
                    .expect("a sampler when not greedy")
            })
            .collect();
        let u: Vec<f32> = advanced.iter_mut().map(Sampler::next_uniform).collect();
        let mut pinned = Vec::new();
        let ud = stage(&self._device, &self.ctx.stream, &u, &mut pinned)?;
        let r = launch::sample_top_p(
            &self.ctx.lib,
            &self.ctx.stream,
            &logits,
            &ud,
            &mut ids,
            rows,
            v,
            self.opts.temperature,
            self.opts.top_p,
        );
        self.ctx.note_launch("sample_top_p", r)?;
        self.ctx.stream.synchronize()?;
        drop(pinned);
        let ids = ids.to_vec()?;
        if let Some(r) = ids.iter().position(|&id| id < 0) {
            // The kernel marks a row it cannot sample (NaN, +inf or only -inf logits).
            return Err(non_finite_logits(r));
        }
        for ((id, _), sampler) in feeds.iter().zip(advanced) {
            self.seqs.get_mut(id).expect("live").sampler = Some(sampler);
        }
        Ok(PassOut::Ids(ids))
    }

    /// Every layer over the pass's tokens; returns the logits of the wanted rows `[R, V]` and R.
    fn forward_pass<T: Act>(&mut self, p: &Pass) -> Result<(Buf<T>, usize)> {
        let env = Env {
            cfg: &self.cfg,
            ctx: &self.ctx,
            cos: &self.cos,
            sin: &self.sin,
            table_rows: self.table_rows,
            num_slots: self.opts.num_blocks * self.opts.block_size,
            block_size: self.opts.block_size,
            num_blocks: self.opts.num_blocks,
        };
        let caches = &mut self.caches;
        let (cfg, ctx, w) = (env.cfg, env.ctx, &self.weights);
        let (hid, t) = (cfg.hidden_size, p.tokens);
        let eps = cfg.rms_norm_eps;
        let mut h: Buf<T> =
            ctx.lookup(&w.embed, &p.ids, RowSource::lookup(t, hid, cfg.vocab_size))?;
        let mut pending: Option<Buf<T>> = None;
        for (l, layer) in w.layers.iter().enumerate() {
            let normed = match pending.take() {
                Some(delta) => {
                    let (n, s) = ctx.add_rms_norm(&delta, &h, &layer.input_norm, t, eps)?;
                    h = s;
                    n
                }
                None => ctx.rms_norm(&h, &layer.input_norm, t, eps)?,
            };
            let attn = env.attention(&layer.attention, &mut caches[l], &normed, p)?;
            let (normed, sum) = ctx.add_rms_norm(&attn, &h, &layer.post_attention_norm, t, eps)?;
            h = sum;
            match &layer.ffn {
                FfnW::Dense(m) => pending = Some(mlp(ctx, m, &normed, t)?),
                FfnW::Moe(m) if self.moe_layer.is_some() => {
                    let layer = self.moe_layer.as_ref().expect("guarded");
                    // The expert-parallel layer computes in f32 (bf16 with `--ep` is not built).
                    let (Some(x), Some(residual)) = (f32_view(&normed), f32_view(&h)) else {
                        return Err(invalid_input(
                            "expert parallelism runs with f32 compute only (--dtype bf16 with --ep is not built)",
                        ));
                    };
                    let y = layer.forward(ctx, cfg, m, x, residual, t)?;
                    h = super::ops::as_act::<T>(y)?;
                }
                FfnW::Moe(m) => {
                    let (e, k) = (cfg.n_routed_experts, cfg.num_experts_per_tok);
                    // The router in f32 (on an f32 copy of a 16-bit input).
                    let widened;
                    let router_in = match f32_view(&normed) {
                        Some(x) => x,
                        None => {
                            widened = ctx.to_f32(&normed, t, hid)?;
                            &widened
                        }
                    };
                    let (ids, weights) = super::ep::gating(ctx, cfg, m, router_in, t)?;
                    let mut expanded = ctx.alloc::<T>(t * k * hid)?;
                    let mut row_idx = ctx.alloc::<i32>(t * k)?;
                    let mut counts = ctx.alloc::<i64>(e)?;
                    let shape = launch::RoutingShape {
                        tokens: t,
                        hidden: hid,
                        top_k: k,
                        experts: e,
                        active: None,
                        mode: MoeList::Count,
                    };
                    let r = launch::moe_init_routing(
                        &ctx.lib,
                        &ctx.stream,
                        &normed,
                        &ids,
                        &mut expanded,
                        &mut row_idx,
                        &mut counts,
                        &shape,
                    );
                    ctx.note_launch("moe_init_routing", r)?;
                    let inter = cfg.moe_intermediate_size;
                    let y = ctx.expert_ffn(
                        &expanded,
                        (&m.gate, &m.up, &m.down),
                        &counts,
                        launch::FfnShape {
                            rows: t * k,
                            groups: e,
                            // Top-k picks distinct experts: at most every token once each.
                            max_group_rows: t,
                            hidden: hid,
                            inter,
                        },
                    )?;
                    let shared = mlp(ctx, &m.shared, &normed, t)?;
                    let mut out = ctx.alloc::<T>(t * hid)?;
                    let r = launch::moe_finalize_routing(
                        &ctx.lib,
                        &ctx.stream,
                        &y,
                        &row_idx,
                        &weights,
                        Some(&shared),
                        Some(&h),
                        &mut out,
                        launch::CombineShape {
                            tokens: t,
                            hidden: hid,
                            top_k: k,
                            rows: t * k,
                        },
                    );
                    ctx.note_launch("moe_finalize_routing", r)?;
                    h = out;
                }
            }
        }
        let (h_rows, pending_rows, rows) = match &p.picked {
            Some((idx, n)) => {
                let pick = |b: &Buf<T>| ctx.gather(b, Some(idx), RowSource::lookup(*n, hid, t));
                (pick(&h)?, pending.as_ref().map(pick).transpose()?, *n)
            }
            None => (h, pending, t),
        };
        let normed = match pending_rows {
            Some(d) => ctx.add_rms_norm(&d, &h_rows, &w.norm, rows, eps)?.0,
            None => ctx.rms_norm(&h_rows, &w.norm, rows, eps)?,
        };
        Ok((ctx.linear(&normed, w.lm_head(), rows)?, rows))
    }
}

/// `x` itself when `T` is f32.
fn f32_view<T: Act>(x: &Buf<T>) -> Option<&Buf<f32>> {
    (x as &dyn std::any::Any).downcast_ref::<Buf<f32>>()
}

/// A dense MLP or shared expert: FP8 weights through the fused `expert_ffn_fp8` (one group), others
/// as gate/up linear, SwiGLU, down linear.
pub(crate) fn mlp<T: Act>(ctx: &Ctx, w: &MlpW, x: &Buf<T>, t: usize) -> Result<Buf<T>> {
    if let Some(up) = &w.up {
        return ctx.mlp_fp8(x, (&w.gate_up, up, &w.down), t);
    }
    let inter = w.gate_up.shape()[0] / 2;
    let gu = ctx.linear(x, &w.gate_up, t)?;
    let act = ctx.silu_mul(&gu, t, inter)?;
    ctx.linear(&act, &w.down, t)
}

/// What a pass's layers read besides the weights and the caches.
struct Env<'a> {
    cfg: &'a ModelConfig,
    ctx: &'a Ctx,
    cos: &'a Buf,
    sin: &'a Buf,
    table_rows: usize,
    num_slots: usize,
    block_size: usize,
    num_blocks: usize,
}

impl Env<'_> {
    /// MLA of layer `l` over the pass's tokens (see `crate::attention` for the math): the new latents go
    /// into the cache first (fused cache write), then every query attends to its sequence's cached rows,
    /// causally among the pass's own tokens — expanded (`mla_prefill`) in a prefill pass, absorbed
    /// (`mla_decode`) otherwise.
    fn attention<T: Act>(
        &self,
        a: &AttentionW,
        cache: &mut LayerCache,
        x: &Buf<T>,
        p: &Pass,
    ) -> Result<Buf<T>> {
        let (cfg, ctx) = (self.cfg, self.ctx);
        let t = p.tokens;
        let heads = cfg.num_attention_heads;
        let (dn, dr, dv, dl) = (
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.v_head_dim,
            cfg.kv_lora_rank,
        );
        let q = match &a.q {
            QueryW::LowRank(lr) => {
                let x = ctx.linear(x, &lr.a, t)?;
                let x = ctx.rms_norm(&x, &lr.a_norm, t, LATENT_NORM_EPS)?;
                ctx.linear(&x, &lr.b, t)?
            }
            QueryW::Full(m) => ctx.linear(x, m, t)?,
        };
        // The rope part of q [T, H, dn+dr], rotated into q_rope [T, H, dr] (q_nope is read in place
        // below).
        let layout = crate::device::kernel_layout(cfg.rope_layout);
        let mut q_rope = ctx.alloc::<T>(t * heads * dr)?;
        let r = launch::rope(
            &ctx.lib,
            &ctx.stream,
            &q,
            &p.positions,
            self.cos,
            self.sin,
            &mut q_rope,
            launch::RopeShape::tail_of(t, heads, dn + dr, dr, self.table_rows, layout),
        );
        ctx.note_launch("rope", r)?;
        let kv = ctx.linear(x, &a.kv_a, t)?;
        let slots_total = self.num_slots;
        {
            let r = launch::mla_cache_write(
                &ctx.lib,
                &ctx.stream,
                launch::MlaCacheWriteInputs {
                    kv: &kv,
                    norm_weight: a.kv_a_norm.device()?,
                    positions: &p.positions,
                    cos: self.cos,
                    sin: self.sin,
                    slot_mapping: &p.slots,
                },
                cache.latent.device_mut::<T>()?,
                cache.rope.device_mut::<T>()?,
                launch::MlaCacheWriteShape {
                    tokens: t,
                    latent_dim: dl,
                    rope_dim: dr,
                    num_slots: slots_total,
                    table_rows: self.table_rows,
                    layout,
                },
                LATENT_NORM_EPS,
            );
            ctx.note_launch("mla_cache_write", r)?;
        }
        if let Some(pk) = &p.prefill {
            return self.prefill_attention(a, cache, &q, &q_rope, pk, t);
        }
        // q_nope · W_UK per head, on q's rows as they are: head h's first dn columns of [T, H, dn+dr]
        // times [Dl, dn]ᵀ into [T, H, Dl].
        let q_lat = ctx.per_head(
            &q,
            &a.w_uk_t,
            t,
            RowLayout::token_major(heads as u64, (dn + dr) as u64),
            RowLayout::token_major(heads as u64, dl as u64),
        )?;
        let mut out = ctx.alloc::<T>(t * heads * dl)?;
        let mut lse = ctx.alloc::<f32>(t * heads)?;
        let r = launch::mla_decode(
            &ctx.lib,
            &ctx.stream,
            launch::MlaDecodeInputs {
                q_nope: &q_lat,
                q_rope: &q_rope,
                latent: cache.latent.device::<T>()?,
                rope: cache.rope.device::<T>()?,
                block_table: &p.block_table,
                seq_lens: &p.seq_lens,
                plan: &p.plan,
                plan_words: &p.plan_words,
            },
            &mut out,
            &mut lse,
            launch::MlaDecodeShape {
                batch: p.batch,
                s_q: p.s,
                heads,
                latent_dim: dl,
                rope_dim: dr,
                block_size: self.block_size,
                num_blocks: self.num_blocks,
                max_blocks: p.max_blocks,
            },
            cfg.softmax_scale(),
        );
        ctx.note_launch("mla_decode", r)?;
        // [T, H, Dl] times W_UV per head -> [T, H·dv], then o_proj.
        let v = ctx.per_head(
            &out,
            &a.w_uv,
            t,
            RowLayout::token_major(heads as u64, dl as u64),
            RowLayout::token_major(heads as u64, dv as u64),
        )?;
        ctx.linear(&v, &a.o, t)
    }

    /// A prefill pass's attention in the expanded form: `mla_prefill` over every cached key of each
    /// sequence (its prefix and the pass's tokens, written to the cache just before), up-projected from
    /// the cache with kv_b_proj; then o_proj of `[T, H·dv]`.
    fn prefill_attention<T: Act>(
        &self,
        a: &AttentionW,
        cache: &LayerCache,
        q: &Buf<T>,
        q_rope: &Buf<T>,
        pk: &PrefillKeys,
        t: usize,
    ) -> Result<Buf<T>> {
        match a.kv_b.dtype() {
            DType::F32 => self.prefill_attention_w::<T, f32>(a, cache, q, q_rope, pk, t),
            DType::BF16 => self.prefill_attention_w::<T, half::bf16>(a, cache, q, q_rope, pk, t),
            DType::F16 => self.prefill_attention_w::<T, half::f16>(a, cache, q, q_rope, pk, t),
            other => Err(invalid_input(format!(
                "kv_b_proj stored as {other}: the prefill's up-projection takes f32, f16 or bf16"
            ))),
        }
    }

    /// [`Env::prefill_attention`] with `kv_b_proj` stored as `W`.
    fn prefill_attention_w<T: Act, W: Elem + dsnpu_kernels::launch::KernelElem>(
        &self,
        a: &AttentionW,
        cache: &LayerCache,
        q: &Buf<T>,
        q_rope: &Buf<T>,
        pk: &PrefillKeys,
        t: usize,
    ) -> Result<Buf<T>> {
        let (cfg, ctx) = (self.cfg, self.ctx);
        let heads = cfg.num_attention_heads;
        let (dn, dr, dv) = (cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);
        let (h, w) = (heads as u64, (dn + dr) as u64);
        let mut out = ctx.alloc::<T>(t * heads * dv)?;
        let mut lse = ctx.alloc::<f32>(t * heads)?;
        let r = launch::mla_prefill_from_cache(
            &ctx.lib,
            &ctx.stream,
            launch::MlaCacheInputs {
                q_nope: q,
                q_rope,
                latent: cache.latent.device::<T>()?,
                rope: cache.rope.device::<T>()?,
                kv_b: a.kv_b.device::<W>()?,
                key_slots: &pk.slots,
                cu_q: &pk.cu_q,
                cu_k: &pk.cu_k,
                host_cu_q: &pk.host_cu_q,
                host_cu_k: &pk.host_cu_k,
            },
            launch::MlaCacheShape {
                heads,
                dn,
                dr,
                dv,
                latent_dim: cfg.kv_lora_rank,
                num_slots: self.num_slots,
                tokens_q: t,
                q_nope: MlaOperand {
                    tok: h * w,
                    head: w,
                    off: 0,
                    len: q.len() as u64,
                },
                q_rope: MlaOperand::dense(t as u64, h, dr as u64),
            },
            &mut out,
            &mut lse,
            cfg.softmax_scale(),
        );
        ctx.note_launch("mla_prefill", r)?;
        ctx.linear(&out, &a.o, t)
    }
}

/// What a pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// The next id of each sequence.
    Ids,
    /// The logits of every row.
    Logits,
    /// Nothing: an earlier chunk of a chunked prefill.
    Nothing,
}

enum PassOut {
    Ids(Vec<i32>),
    Logits(Vec<f32>),
}

/// Row `r` of a pass's logits held a NaN or an infinity: `argmax` and `sample_top_p` mark such a row
/// -1 instead of an id (only the ids come back, so the stage that made it is not known here).
fn non_finite_logits(r: usize) -> ModelError {
    ModelError::NonFiniteOutput {
        op: "the device's logits (lm_head; run --backend cpu to name the first stage)".into(),
        index: vec![r],
        value: f32::NAN,
    }
}

/// `v` in a fresh pinned buffer (kept in `keep`) and a device buffer its copy is queued into.
fn stage<T: DeviceRepr>(
    dev: &Device,
    stream: &Stream,
    v: &[T],
    keep: &mut Vec<HostBuffer<T>>,
) -> Result<DeviceBuffer<T>> {
    let mut host = HostBuffer::new(dev, v.len())?;
    host.as_mut_slice()?.copy_from_slice(v);
    let mut buf = stream.alloc(v.len())?;
    stream.memcpy_htod(&host, &mut buf)?;
    keep.push(host);
    Ok(buf)
}

fn add(a: TransferStats, b: TransferStats) -> TransferStats {
    TransferStats {
        h2d_copies: a.h2d_copies + b.h2d_copies,
        h2d_bytes: a.h2d_bytes + b.h2d_bytes,
        d2h_copies: a.d2h_copies + b.d2h_copies,
        d2h_bytes: a.d2h_bytes + b.d2h_bytes,
        tiling_copies: a.tiling_copies + b.tiling_copies,
        tiling_bytes: a.tiling_bytes + b.tiling_bytes,
        syncs: a.syncs + b.syncs,
        staging_waits: a.staging_waits + b.staging_waits,
    }
}
