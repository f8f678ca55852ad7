//! dsnpu's C ABI (`libdsnpu.so`, header `include/dsnpu.h` generated from this crate by cbindgen):
//! dsnpu's kernels on device memory and an `aclrtStream` that the caller owns, for serving stacks.
//!
//! # Contract of every kernel entry point
//! - Arguments: a context from [`dsnpu_context_create`], the caller's stream, a dtype code
//!   (`DSNPU_DTYPE_*`) for the float tensors, device pointers (inputs `const`), and sizes as `int64_t`.
//!   Layouts are row-major and contiguous; each function's documentation gives the shapes.
//! - Validated before anything is queued, each failure an error status with a message from
//!   [`dsnpu_last_error`]: null context, stream or tensor pointers (optional tensors may be null),
//!   handles, out pointers and host arrays not aligned for their type, host arrays longer than one
//!   allocation can be, negative sizes, products that overflow, an unknown dtype code, shapes the kernel cannot take,
//!   and outputs whose memory overlaps another argument.
//! - Not validated (device data the host does not read): the values of indices (positions, expert
//!   ids, row indices, group lists, block tables, sequence lengths), and that each pointer really
//!   addresses that many bytes of device memory. An index out of range makes the kernel fault on its
//!   checked read on the simulator (reported by the next synchronizing call on the stream) and read
//!   unspecified memory on an NPU; no index makes a kernel write outside its outputs.
//! - On success the kernel is queued on the stream and the call returns without waiting. Nothing is
//!   written to the outputs until the stream runs it; inputs must stay valid until then.
//! - Every entry point catches panics: a bug inside returns `DSNPU_STATUS_INTERNAL` rather than
//!   unwinding into C.
//! - Device memory running out is `DSNPU_STATUS_OUT_OF_MEMORY` from every entry point (a kernel's
//!   workspace, the engine's weights, cache or step buffers).
//!
//! The model engine ([`DsnpuEngine`], `dsnpu_engine_*`) is the other entry point: a checkpoint
//! resident on a device with its paged cache, stepped by the caller (continuous batching); it owns its
//! device memory and stream (see its module for the contract).
//!
//! The library's own queued work on a stream (the tiling upload of each launch, workspaces) uses
//! memory from the context's pool, ordered on that stream: call [`dsnpu_context_release_stream`]
//! before destroying a stream the context has used, and [`dsnpu_context_destroy`] at the end.

mod args;
mod context;
mod dense;
mod engine;
mod error;
mod handles;
mod mla;
mod moe;

pub use context::{
    dsnpu_context_create, dsnpu_context_destroy, dsnpu_context_release_stream, DsnpuContext,
};
pub use dense::{dsnpu_add_rms_norm, dsnpu_linear, dsnpu_rms_norm, dsnpu_rope, dsnpu_silu_mul};
pub use engine::{
    dsnpu_engine_add_sequence, dsnpu_engine_add_sequence_seeded, dsnpu_engine_destroy,
    dsnpu_engine_free_blocks, dsnpu_engine_live_count, dsnpu_engine_load,
    dsnpu_engine_options_default, dsnpu_engine_remove_sequence, dsnpu_engine_step,
    dsnpu_engine_vocab_size, DsnpuEngine, DsnpuEngineOptions,
};
pub use error::{dsnpu_last_error, dsnpu_status_name};
pub use mla::{
    dsnpu_mla_cache_write, dsnpu_mla_decode, dsnpu_mla_decode_plan_create,
    dsnpu_mla_decode_plan_create_for_shape, dsnpu_mla_decode_plan_destroy, dsnpu_mla_prefill,
    dsnpu_mla_prefill_cached, DsnpuMlaDecodePlan,
};
pub use moe::{
    dsnpu_expert_ffn, dsnpu_grouped_matmul, dsnpu_grouped_matmul_strided,
    dsnpu_moe_finalize_routing, dsnpu_moe_gating_topk, dsnpu_moe_init_routing,
    dsnpu_moe_init_routing_quant,
};

/// Success.
pub const DSNPU_STATUS_OK: i32 = 0;
/// A null pointer, a negative or overflowing size, an unknown dtype or enum code, overlapping
/// outputs, or a shape the operator does not define (e.g. `top_k` larger than `experts`).
pub const DSNPU_STATUS_INVALID_ARGUMENT: i32 = 1;
/// A well-formed shape that dsnpu's kernel cannot take (too large for its tiling), from a kernel entry
/// point or inside the engine.
pub const DSNPU_STATUS_UNSUPPORTED: i32 = 2;
/// AscendCL failed (opening the device, loading the kernels, queuing the launch). Device memory running
/// out is `DSNPU_STATUS_OUT_OF_MEMORY` instead.
pub const DSNPU_STATUS_DEVICE: i32 = 3;
/// A bug in dsnpu (a caught panic); the message says where.
pub const DSNPU_STATUS_INTERNAL: i32 = 4;
/// The engine's paged cache has no block left for a sequence that needs one (free a sequence and
/// step again).
pub const DSNPU_STATUS_OUT_OF_BLOCKS: i32 = 5;
/// Device memory ran out, whichever call met it: a kernel's workspace (from the context's pool), a
/// decode plan's words, the engine's weights or paged cache at load, or its buffers during a step. The
/// message gives the bytes asked for and free; free device memory (or load a smaller cache) and retry.
pub const DSNPU_STATUS_OUT_OF_MEMORY: i32 = 6;

/// 32-bit IEEE float tensors.
pub const DSNPU_DTYPE_F32: i32 = 0;
/// 16-bit IEEE float tensors.
pub const DSNPU_DTYPE_F16: i32 = 1;
/// bfloat16 tensors.
pub const DSNPU_DTYPE_BF16: i32 = 2;

/// RoPE pairs `(x[2i], x[2i+1])`.
pub const DSNPU_ROPE_INTERLEAVED: i32 = 0;
/// RoPE pairs `(x[i], x[i + dim/2])`.
pub const DSNPU_ROPE_HALF_SPLIT: i32 = 1;

/// Gating scores `softmax` over the experts.
pub const DSNPU_SCORE_SOFTMAX: i32 = 0;
/// Gating scores `sigmoid` of each logit (DeepSeek-V3).
pub const DSNPU_SCORE_SIGMOID: i32 = 1;

/// A per-expert list holds inclusive cumulative sums of rows.
pub const DSNPU_LIST_CUMSUM: i32 = 0;
/// A per-expert list holds rows per expert.
pub const DSNPU_LIST_COUNT: i32 = 1;
