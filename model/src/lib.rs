//! DeepSeek-V3/R1 (and DeepSeek-V2) from Hugging Face checkpoints, composed from the `dsnpu-ops` operators.
//!
//! # Layers of this crate
//! - [`config`]: `config.json` (hub and transformers v5 forms), validated: every size it implies is bounded
//!   with checked arithmetic before anything is allocated.
//! - [`checkpoint`]: memory-mapped safetensors (single or sharded), f32/bf16/f16 and block-scaled FP8.
//! - [`weights`]: the tensors the configuration implies, by hub name, checked and converted to f32.
//! - [`cache`]: the paged latent KV cache and its block allocator.
//! - [`backend`]: what the operators run on ([`Cpu`] by default, or any `dsnpu-ops` backend).
//! - [`model`]: the decoder — prefill (expanded MLA) and decode (absorbed MLA over the cache), MoE.
//! - [`device`]: the model resident on a device — tensors that know where they live, weights uploaded once,
//!   the cache in device memory, and the step-by-step [`device::Engine`] (continuous batching).
//! - [`generate`]: greedy and sampled generation over a batch of prompts.
//!
//! # Contract
//! The model computes in f32 and matches transformers 5.24's `DeepseekV3ForCausalLM` /
//! `DeepseekV2ForCausalLM` (the acceptance peer; `model/tests/` compares against its outputs on tiny random
//! checkpoints made by `scripts/make_tiny_checkpoints.py`). All arithmetic is done by `dsnpu_ops` operators,
//! called through the model's backend; this crate only arranges data (splits, concatenations, transposes)
//! between them. Bad checkpoints and bad requests give a [`ModelError`] that names the problem; nothing
//! panics on input.

mod attention;
pub mod backend;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
mod ffn;
mod files;
mod finite;
pub mod generate;
pub mod model;
pub mod weights;

pub use backend::{Cpu, ModelBackend};
pub use cache::{BlockAllocator, KvCache, SeqId};
pub use checkpoint::Checkpoint;
pub use config::{ModelConfig, ModelType};
pub use error::{ModelError, Result};
pub use generate::{check_prompt, positions_needed, GenerateOptions, Generator};
pub use model::DeepseekV3;
