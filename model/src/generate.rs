//! Generation: prefill the prompts, then decode the still-running sequences together, one token per step,
//! until each has `max_new_tokens` tokens or produced a stop token.
//!
//! # Contract
//! - Greedy when `temperature` is 0 (ties pick the lowest id), else seeded temperature/top-p sampling by
//!   [`Sampler`]; prompt `i` of a batch samples with seed `seed + i`, so a batch reproduces each prompt run alone
//!   with that seed (and greedy decoding is the same batched or alone).
//! - A stop token is emitted and ends its sequence. The output holds only new tokens.
//! - Validates the options and that prompt + new tokens fit `max_position_embeddings`, before any work.
//!   The cache is sized for the whole request, so a request that is accepted does not run out of blocks.

use crate::backend::{Cpu, ModelBackend};
use crate::cache::SeqId;
use crate::error::{invalid_input, Result};
use crate::model::DeepseekV3;
use dsnpu_ops::sampling::Sampler;

/// What to generate and how to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// In (0, 1].
    pub top_p: f32,
    pub seed: u64,
    /// Tokens that end a sequence (typically the config's `eos_token_id`).
    pub stop_ids: Vec<i32>,
    /// Tokens per cache block.
    pub block_size: usize,
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_new_tokens`, no stop tokens, cache blocks of 16.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerateOptions {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_ids: Vec::new(),
            block_size: 16,
        }
    }
}

/// Generates with one model (on any backend) and one set of options.
#[derive(Debug, Clone)]
pub struct Generator<'m, B = Cpu> {
    model: &'m DeepseekV3<B>,
    opts: GenerateOptions,
}

impl<'m, B: ModelBackend> Generator<'m, B> {
    pub fn new(model: &'m DeepseekV3<B>, opts: GenerateOptions) -> Result<Self> {
        Sampler::new(opts.temperature, opts.top_p, opts.seed)?; // validates temperature and top_p
        if opts.block_size == 0 {
            return Err(invalid_input("block_size must be positive"));
        }
        Ok(Generator { model, opts })
    }

    /// New tokens for one prompt.
    pub fn generate(&self, prompt: &[i32]) -> Result<Vec<i32>> {
        Ok(self
            .generate_batch(&[prompt])?
            .pop()
            .expect("one prompt in, one out"))
    }

    /// New tokens for each prompt, decoded as one batch.
    pub fn generate_batch(&self, prompts: &[&[i32]]) -> Result<Vec<Vec<i32>>> {
        self.generate_batch_with(prompts, &mut |_| {})
    }

    /// [`generate_batch`](Self::generate_batch), calling `on_step(tokens generated so far)` after each step.
    pub fn generate_batch_with(
        &self,
        prompts: &[&[i32]],
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<i32>>> {
        let n_new = self.opts.max_new_tokens;
        let cfg = self.model.config();
        let mut out: Vec<Vec<i32>> = vec![Vec::new(); prompts.len()];
        // Checked before the shortcut below: a request for no tokens is still refused when its prompts
        // are, rather than answered as if they were valid.
        let bs = self.opts.block_size;
        let mut blocks = 0;
        for (i, p) in prompts.iter().enumerate() {
            check_prompt(i, p, cfg.vocab_size)?;
            blocks +=
                positions_needed(i, p.len(), n_new, cfg.max_position_embeddings)?.div_ceil(bs);
        }
        if prompts.is_empty() || n_new == 0 {
            return Ok(out);
        }
        let mut cache = self.model.new_cache(blocks, bs)?;
        let mut samplers = (0..prompts.len())
            .map(|i| {
                Sampler::new(
                    self.opts.temperature,
                    self.opts.top_p,
                    self.opts.seed.wrapping_add(i as u64),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;

        let seqs: Vec<(SeqId, &[i32])> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as SeqId, *p))
            .collect();
        let mut logits = self.model.prefill_last(&mut cache, &seqs)?;
        let mut active: Vec<usize> = (0..prompts.len()).collect();
        for step in 0..n_new {
            let mut next = Vec::with_capacity(active.len());
            for (row, &i) in active.iter().enumerate() {
                let token = samplers[i].sample(logits.row(row))?;
                out[i].push(token);
                if !self.opts.stop_ids.contains(&token) && step + 1 < n_new {
                    next.push((i, token));
                }
            }
            on_step(step + 1);
            if next.is_empty() {
                break;
            }
            active = next.iter().map(|&(i, _)| i).collect();
            let batch: Vec<(SeqId, i32)> = next.iter().map(|&(i, t)| (i as SeqId, t)).collect();
            logits = self.model.decode(&mut cache, &batch)?;
        }
        Ok(out)
    }
}

/// Prompt `i` of a batch is not empty and holds only ids of the vocabulary (`0..vocab`), or the
/// invalid-input error naming the first bad token.
pub fn check_prompt(i: usize, prompt: &[i32], vocab: usize) -> Result<()> {
    if prompt.is_empty() {
        return Err(invalid_input(format!("prompt {i} is empty")));
    }
    match prompt
        .iter()
        .enumerate()
        .find(|(_, &t)| t < 0 || t as usize >= vocab)
    {
        Some((j, t)) => Err(invalid_input(format!(
            "prompt {i}: token {j} is {t}, outside the vocabulary (0..{vocab})"
        ))),
        None => Ok(()),
    }
}

/// Cache positions prompt `i` of `prompt_len` tokens needs to generate `max_new` tokens (the last new
/// token is never fed back, so it needs none), or the invalid-input error every entry point reports when
/// that is more than `max` (the model's `max_position_embeddings`). `max_new` comes from callers
/// unbounded (the command line): the sum is checked, never wrapped.
pub fn positions_needed(i: usize, prompt_len: usize, max_new: usize, max: usize) -> Result<usize> {
    prompt_len
        .checked_add(max_new.max(1) - 1)
        .filter(|&n| n <= max)
        .ok_or_else(|| {
            invalid_input(format!(
                "prompt {i}: {prompt_len} prompt + {max_new} new tokens need more than the {max} positions of \
                 max_position_embeddings"
            ))
        })
}
