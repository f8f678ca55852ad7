//! Multi-head Latent Attention: paged latent cache, absorbed decode, non-absorbed prefill.
pub mod cache;
pub mod decode;
pub mod prefill;

pub use cache::PagedLatentCache;
pub use decode::mla_decode;
pub use prefill::mla_prefill;
