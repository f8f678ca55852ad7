//! Multi-head Latent Attention: paged latent cache, absorbed decode, non-absorbed prefill.
//!
//! DeepSeek-V3 runs MLA in two forms that must agree:
//! - prefill ([`mla_prefill`]) up-projects the latent into per-head keys `[k_nope ‖ k_rope]` and
//!   values and runs ordinary causal attention over packed sequences;
//! - decode ([`mla_decode`]) absorbs `W_UK` into the query (`q_lat = W_UKᵀ·q_nope`) and attends
//!   directly over the cached latent ‖ rope rows ([`PagedLatentCache`]); the caller applies `W_UV`
//!   to the latent output afterwards.
//!
//! Scores, softmax and accumulation are `f32`; outputs are rounded once to the element type.
pub mod cache;
pub mod cache_write;
pub mod decode;
pub mod prefill;
mod softmax;

pub use cache::PagedLatentCache;
pub use cache_write::{mla_cache_write_fused, CacheWriteParams};
pub use decode::mla_decode;
pub use prefill::mla_prefill;
