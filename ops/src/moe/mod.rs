//! Mixture-of-experts routing: gating top-k, dispatch (init routing), grouped expert FFN, combine.
pub mod finalize;
pub mod gating;
pub mod grouped;
pub mod routing;

pub use finalize::moe_finalize_routing;
pub use gating::{moe_gating_topk, GatingConfig, ScoreFunc};
pub use grouped::{expert_ffn, grouped_matmul, GroupListType};
pub use routing::{moe_init_routing, ExpertTokensMode, InitRouting};
