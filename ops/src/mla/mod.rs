//! Multi-head Latent Attention: paged latent cache, absorbed decode, non-absorbed prefill.
//!
//! DeepSeek-V3 runs MLA in two forms that must agree:
//! - prefill ([`mla_prefill`], [`mla_prefill_varlen`]) up-projects the latent into per-head keys
//!   `[k_nope ‖ k_rope]` and values and runs ordinary causal attention over packed sequences;
//!   [`mla_prefill_cached`] does the up-projection from the paged cache (chunked prefill: the new
//!   tokens also see the sequence's cached prefix);
//! - decode ([`mla_decode`]) absorbs `W_UK` into the query (`q_lat = W_UKᵀ·q_nope`) and attends
//!   directly over the cached latent ‖ rope rows ([`PagedLatentCache`]); the caller applies `W_UV`
//!   to the latent output afterwards.
//!
//! New tokens enter the cache through [`PagedLatentCache::write`] (rows already normalised and rotated)
//! or [`mla_cache_write_fused`] (the `kv_a_proj_with_mqa` output: RMSNorm of the latent and rope of
//! `k_pe` fused with the scatter, as the device kernel `mla_cache_write_<t>` does).
//!
//! Scores, softmax and accumulation are `f32`; outputs are rounded once to the element type.
pub mod cache;
pub mod cache_write;
pub mod decode;
pub mod prefill;
pub mod prefill_cached;
mod softmax;

pub use cache::PagedLatentCache;
pub use cache_write::{mla_cache_write_fused, CacheWriteParams};
pub use decode::mla_decode;
pub use prefill::{mla_prefill, mla_prefill_varlen};
pub use prefill_cached::{expand_cached_keys, mla_prefill_cached, ExpandedKeys};
