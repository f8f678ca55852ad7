//! The DeepSeek-V3/V2 decoder: embedding, layers (pre-norm attention and MLP/MoE with residuals), final
//! norm, `lm_head`.
//!
//! # Contract
//! - Three ways to run, all returning f32 logits:
//!   [`DeepseekV3::forward`] / [`DeepseekV3::forward_batch`]: whole sequences, no cache, expanded attention;
//!   [`DeepseekV3::prefill`]: the same for new sequences, also filling the paged cache;
//!   [`DeepseekV3::decode`] / [`DeepseekV3::extend`]: new tokens of cached sequences, absorbed attention over
//!   the cache. A batch may mix sequences of different lengths.
//! - Validates token ids (`< vocab_size`), positions (`< max_position_embeddings`), sequence ids and batch
//!   shapes, returning [`ModelError::InvalidInput`](crate::ModelError::InvalidInput); a failed cached step leaves the cache unchanged.
//! - Trusts the weights to have the shapes [`ModelWeights::load`] checked.
//! - Never returns non-finite logits: every stage's output (embedding, each norm, attention, MLP/MoE, final
//!   norm, `lm_head`) is scanned as it is made, and the first NaN/∞ fails the step with
//!   [`ModelError::NonFiniteOutput`](crate::ModelError::NonFiniteOutput) naming the layer and stage.
//! - Every operator runs on the model's backend `B` ([`Cpu`] unless built with
//!   [`DeepseekV3::load_with_backend`] / [`DeepseekV3::from_parts_with_backend`]). The model's own work is
//!   arranging data between operators, which is the same for every backend; an operator error of the
//!   backend (including `Unsupported`) is the step's error, after which the cache is as before the step.

use crate::attention::{attention, AttnPlan, AttnStep};
use crate::backend::{Cpu, ModelBackend};
use crate::cache::{KvCache, SeqId};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{invalid_input, Result};
use crate::ffn::{dense_mlp, moe};
use crate::finite::check_output;
use crate::weights::{FfnWeights, ModelWeights};
use dsnpu_ops::rope::RopeTable;
use ndarray::{Array1, Array2, ArrayView1, Axis};
use std::path::Path;

/// A loaded model running its operators on backend `B`.
#[derive(Debug, Clone)]
pub struct DeepseekV3<B = Cpu> {
    config: ModelConfig,
    weights: ModelWeights,
    rope: RopeTable,
    backend: B,
}

/// Which rows of the final hidden states become logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logits {
    All,
    /// Each sequence's last token.
    Last,
}

impl DeepseekV3<Cpu> {
    /// Load `dir/config.json` and the checkpoint beside it, to run on the CPU references.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with_backend(dir, Cpu)
    }

    /// [`load`](Self::load), calling `progress(done, total)` as layers are read.
    pub fn load_with_progress(
        dir: impl AsRef<Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_with_backend_progress(dir, Cpu, progress)
    }

    /// A model from weights already in memory (shapes as [`ModelWeights::load`] produces them).
    pub fn from_parts(config: ModelConfig, weights: ModelWeights) -> Result<Self> {
        Self::from_parts_with_backend(config, weights, Cpu)
    }
}

impl<B> DeepseekV3<B> {
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// The backend every operator runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: ModelBackend> DeepseekV3<B> {
    /// [`load`](DeepseekV3::load) with the operators running on `backend`.
    pub fn load_with_backend(dir: impl AsRef<Path>, backend: B) -> Result<Self> {
        Self::load_with_backend_progress(dir, backend, &mut |_, _| {})
    }

    /// [`load_with_backend`](Self::load_with_backend), calling `progress(done, total)` as layers are read.
    pub fn load_with_backend_progress(
        dir: impl AsRef<Path>,
        backend: B,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_file(dir.join("config.json"))?;
        let mut ckpt = Checkpoint::open(dir)?;
        if let Some(q) = config.quantization {
            ckpt = ckpt.with_fp8_block(q.block);
        }
        let weights = ModelWeights::load(&config, &ckpt, progress)?;
        Self::from_parts_with_backend(config, weights, backend)
    }

    /// [`from_parts`](DeepseekV3::from_parts) with the operators running on `backend`.
    pub fn from_parts_with_backend(
        config: ModelConfig,
        weights: ModelWeights,
        backend: B,
    ) -> Result<Self> {
        weights.check_against(&config)?;
        let rope = RopeTable::new(&config.rope, config.max_position_embeddings)?;
        Ok(DeepseekV3 {
            config,
            weights,
            rope,
            backend,
        })
    }

    /// Logits `[len, V]` for every position of `ids`, without a cache.
    pub fn forward(&self, ids: &[i32]) -> Result<Array2<f32>> {
        Ok(self
            .forward_batch(&[ids])?
            .pop()
            .expect("one sequence in, one out"))
    }

    /// [`forward`](Self::forward) for several sequences packed into one step.
    pub fn forward_batch(&self, seqs: &[&[i32]]) -> Result<Vec<Array2<f32>>> {
        let (ids, positions, cu) = self.pack(seqs, &vec![0; seqs.len()])?;
        let step = AttnStep {
            positions: &positions,
            slots: None,
            plan: AttnPlan::Prefill { cu_seqlens: &cu },
        };
        let logits = self.run(&ids, step, None)?;
        Ok(split_rows(logits, &cu))
    }

    /// A cache for this model: `num_blocks` blocks of `block_size` tokens per layer.
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache> {
        KvCache::new(&self.config, num_blocks, block_size)
    }

    /// Start new sequences: run their prompts (expanded attention), store their latents in `cache`, and
    /// return the logits of every prompt position. A sequence id must be new or empty.
    pub fn prefill(
        &self,
        cache: &mut KvCache,
        seqs: &[(SeqId, &[i32])],
    ) -> Result<Vec<Array2<f32>>> {
        self.prefill_inner(cache, seqs, Logits::All)
    }

    /// [`prefill`](Self::prefill) returning only each prompt's last logits, `[B, V]`.
    pub fn prefill_last(
        &self,
        cache: &mut KvCache,
        seqs: &[(SeqId, &[i32])],
    ) -> Result<Array2<f32>> {
        let rows = self.prefill_inner(cache, seqs, Logits::Last)?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_else(|| Array2::zeros((0, self.config.vocab_size))))
    }

    fn prefill_inner(
        &self,
        cache: &mut KvCache,
        seqs: &[(SeqId, &[i32])],
        which: Logits,
    ) -> Result<Vec<Array2<f32>>> {
        cache.check_fits(&self.config)?;
        for &(id, _) in seqs {
            if let Some(n) = cache.seq_len(id).filter(|&n| n > 0) {
                return Err(invalid_input(format!(
                    "prefill of sequence {id}, which already holds {n} tokens"
                )));
            }
        }
        let mut added = Vec::new();
        for &(id, _) in seqs {
            if cache.seq_len(id).is_none() {
                cache.add_sequence(id)?;
                added.push(id);
            }
        }
        let result = (|| {
            let lists: Vec<&[i32]> = seqs.iter().map(|&(_, ids)| ids).collect();
            let (ids, positions, cu) = self.pack(&lists, &vec![0; seqs.len()])?;
            let batch: Vec<(SeqId, usize)> =
                seqs.iter().map(|&(id, ids)| (id, ids.len())).collect();
            let reservation = cache.reserve(&batch)?;
            let step = AttnStep {
                positions: &positions,
                slots: Some(&reservation.slots),
                plan: AttnPlan::Prefill { cu_seqlens: &cu },
            };
            let logits = match which {
                Logits::All => self
                    .run(&ids, step, Some(cache))
                    .map(|l| split_rows(l, &cu)),
                Logits::Last => {
                    let last: Vec<usize> = cu.iter().skip(1).map(|&e| e as usize - 1).collect();
                    self.run_rows(&ids, step, Some(cache), &last)
                        .map(|l| vec![l])
                }
            };
            if logits.is_err() {
                cache.rollback(reservation);
            }
            logits
        })();
        if result.is_err() {
            for id in added {
                let _ = cache.remove_sequence(id);
            }
        }
        result
    }

    /// One new token for each sequence of the batch (absorbed attention over the cache). Returns `[B, V]`.
    pub fn decode(&self, cache: &mut KvCache, batch: &[(SeqId, i32)]) -> Result<Array2<f32>> {
        let tokens: Vec<[i32; 1]> = batch.iter().map(|&(_, t)| [t]).collect();
        let seqs: Vec<(SeqId, &[i32])> = batch
            .iter()
            .zip(&tokens)
            .map(|(&(id, _), t)| (id, &t[..]))
            .collect();
        self.extend_inner(cache, &seqs, Logits::All)
    }

    /// Append the same number S ≥ 1 of tokens to each cached sequence (absorbed attention; S > 1 is chunked
    /// prefill). Returns logits `[S, V]` per sequence.
    pub fn extend(
        &self,
        cache: &mut KvCache,
        seqs: &[(SeqId, &[i32])],
    ) -> Result<Vec<Array2<f32>>> {
        let s = seqs.first().map_or(0, |(_, ids)| ids.len());
        let logits = self.extend_inner(cache, seqs, Logits::All)?;
        Ok(logits
            .axis_chunks_iter(Axis(0), s.max(1))
            .map(|c| c.to_owned())
            .collect())
    }

    /// [`decode`](Self::decode) or [`extend`](Self::extend) keeping only each sequence's last logits, `[B, V]`.
    pub fn extend_last(
        &self,
        cache: &mut KvCache,
        seqs: &[(SeqId, &[i32])],
    ) -> Result<Array2<f32>> {
        self.extend_inner(cache, seqs, Logits::Last)
    }

    fn extend_inner(
        &self,
        cache: &mut KvCache,
        seqs: &[(SeqId, &[i32])],
        which: Logits,
    ) -> Result<Array2<f32>> {
        cache.check_fits(&self.config)?;
        let s = seqs.first().map_or(0, |(_, ids)| ids.len());
        if seqs.is_empty() || s == 0 {
            return Err(invalid_input(
                "a decode step needs at least one sequence and one token",
            ));
        }
        if let Some((id, ids)) = seqs.iter().find(|(_, ids)| ids.len() != s) {
            return Err(invalid_input(format!(
                "sequence {id} brings {} tokens, the batch's first brings {s}: a decode step takes the same count from each",
                ids.len()
            )));
        }
        let mut starts = Vec::with_capacity(seqs.len());
        for &(id, _) in seqs {
            starts.push(
                cache
                    .seq_len(id)
                    .ok_or_else(|| invalid_input(format!("unknown sequence {id}")))?,
            );
        }
        let lists: Vec<&[i32]> = seqs.iter().map(|&(_, ids)| ids).collect();
        let (ids, positions, _) = self.pack(&lists, &starts)?;
        let batch: Vec<(SeqId, usize)> = seqs.iter().map(|&(id, _)| (id, s)).collect();
        let reservation = cache.reserve(&batch)?;
        let result = (|| {
            let ids_only: Vec<SeqId> = seqs.iter().map(|&(id, _)| id).collect();
            let block_table = cache.block_table(&ids_only)?;
            let seq_lens: Array1<i32> = starts.iter().map(|&p| (p + s) as i32).collect();
            let step = AttnStep {
                positions: &positions,
                slots: Some(&reservation.slots),
                plan: AttnPlan::Decode {
                    block_table: &block_table,
                    seq_lens: &seq_lens,
                    batch: seqs.len(),
                    step: s,
                },
            };
            match which {
                Logits::All => self.run(&ids, step, Some(cache)),
                Logits::Last => {
                    let rows: Vec<usize> = (1..=seqs.len()).map(|b| b * s - 1).collect();
                    self.run_rows(&ids, step, Some(cache), &rows)
                }
            }
        })();
        if result.is_err() {
            cache.rollback(reservation);
        }
        result
    }

    /// Pack sequences into one token list with positions starting at `starts[i]`, and `cu_seqlens`.
    fn pack(
        &self,
        seqs: &[&[i32]],
        starts: &[usize],
    ) -> Result<(Vec<i32>, Array1<i32>, Array1<i32>)> {
        if seqs.is_empty() {
            return Err(invalid_input("empty batch"));
        }
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut cu = vec![0i32];
        for (i, (seq, &start)) in seqs.iter().zip(starts).enumerate() {
            if seq.is_empty() {
                return Err(invalid_input(format!(
                    "sequence {i} of the batch has no tokens"
                )));
            }
            if let Some(&bad) = seq
                .iter()
                .find(|&&t| t < 0 || t as usize >= self.config.vocab_size)
            {
                return Err(invalid_input(format!(
                    "token id {bad} is outside the vocabulary (0..{})",
                    self.config.vocab_size
                )));
            }
            let end = start + seq.len();
            if end > self.config.max_position_embeddings {
                return Err(invalid_input(format!(
                    "position {} exceeds max_position_embeddings ({})",
                    end - 1,
                    self.config.max_position_embeddings
                )));
            }
            ids.extend_from_slice(seq);
            positions.extend((start..end).map(|p| p as i32));
            cu.push(ids.len() as i32);
        }
        if ids.len() > i32::MAX as usize {
            return Err(invalid_input("too many tokens in one step"));
        }
        Ok((ids, Array1::from_vec(positions), Array1::from_vec(cu)))
    }

    fn run(&self, ids: &[i32], step: AttnStep, cache: Option<&mut KvCache>) -> Result<Array2<f32>> {
        let all: Vec<usize> = (0..ids.len()).collect();
        self.run_rows(ids, step, cache, &all)
    }

    /// Run every layer over `ids`; logits of the hidden-state rows `rows`.
    fn run_rows(
        &self,
        ids: &[i32],
        step: AttnStep,
        mut cache: Option<&mut KvCache>,
        rows: &[usize],
    ) -> Result<Array2<f32>> {
        let w = &self.weights;
        let eps = self.config.rms_norm_eps;
        let ids = ArrayView1::from(ids);
        let be = &self.backend;
        let mut h = be.embedding(w.embed.view(), ids)?;
        check_output(|| "embedding (model.embed_tokens)".into(), &h)?;
        // A dense MLP's output waits here to be added to `h` by the next norm (add_rms_norm).
        let mut pending: Option<Array2<f32>> = None;
        for (l, layer) in w.layers.iter().enumerate() {
            let normed = match pending.take() {
                Some(delta) => {
                    let (normed, sum) =
                        be.add_rms_norm(delta.view(), h.view(), layer.input_norm.view(), eps)?;
                    h = sum;
                    normed
                }
                None => be.rms_norm(h.view(), layer.input_norm.view(), eps)?,
            };
            check_output(|| format!("layer {l} input_layernorm"), &normed)?;
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(l));
            let attn = attention(
                be,
                &layer.attention,
                &self.config,
                &self.rope,
                normed.view(),
                step,
                layer_cache,
            )?;
            check_output(
                || format!("layer {l} self_attn (MLA, through o_proj)"),
                &attn,
            )?;
            let (normed, sum) =
                be.add_rms_norm(attn.view(), h.view(), layer.post_attention_norm.view(), eps)?;
            h = sum;
            check_output(|| format!("layer {l} post_attention_layernorm"), &normed)?;
            match &layer.ffn {
                FfnWeights::Dense(mlp) => {
                    let out = dense_mlp(be, mlp, normed.view())?;
                    check_output(|| format!("layer {l} mlp (dense SwiGLU)"), &out)?;
                    pending = Some(out);
                }
                FfnWeights::Moe(m) => {
                    h = moe(be, m, &self.config, normed.view(), h.view())?;
                    check_output(
                        || format!("layer {l} mlp (MoE: routed and shared experts + residual)"),
                        &h,
                    )?;
                }
            }
        }
        let h_rows = h.select(Axis(0), rows);
        let normed = match pending {
            Some(delta) => {
                be.add_rms_norm(
                    delta.select(Axis(0), rows).view(),
                    h_rows.view(),
                    w.norm.view(),
                    eps,
                )?
                .0
            }
            None => be.rms_norm(h_rows.view(), w.norm.view(), eps)?,
        };
        check_output(|| "final norm (model.norm)".into(), &normed)?;
        let logits = be.linear(normed.view(), w.lm_head.view(), None)?;
        check_output(|| "lm_head (linear)".into(), &logits)?;
        Ok(logits)
    }
}

fn split_rows(logits: Array2<f32>, cu: &Array1<i32>) -> Vec<Array2<f32>> {
    cu.windows(2)
        .into_iter()
        .map(|w| {
            logits
                .slice(ndarray::s![w[0] as usize..w[1] as usize, ..])
                .to_owned()
        })
        .collect()
}
