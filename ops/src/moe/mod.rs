//! Mixture-of-experts routing: gating top-k, dispatch (init routing), grouped expert FFN, combine.
//!
//! The stages and what flows between them (T tokens, H hidden, E experts, K experts per token,
//! R = rows dispatched):
//! ```text
//! logits [T,E] --moe_gating_topk--> ids [T,K], weights [T,K]
//! x [T,H], ids --moe_init_routing--> expanded_x [R,H], expanded_row_idx [T*K], expert_tokens [E]
//! expanded_x, expert_tokens --expert_ffn--> y [R,H]
//! y, expanded_row_idx, weights --moe_finalize_routing--> out [T,H]
//! ```
//! [`moe_layer`] chains them. Each module states its exact convention and what it validates.
pub mod finalize;
pub mod gating;
pub mod grouped;
pub mod layer;
pub mod quant;
pub mod routing;

pub use finalize::moe_finalize_routing;
pub use gating::{moe_gating_topk, GatingConfig, ScoreFunc};
pub use grouped::{expert_ffn, grouped_matmul, GroupListType};
pub use layer::{moe_layer, router_logits, MoeLayerParams};
pub use quant::{moe_init_routing_quant, InitRoutingQuant};
pub use routing::{moe_init_routing, ExpertTokensMode, InitRouting};
