//! dsnpu's Ascend C kernels and the host side of launching them.
//!
//! The kernels (`src/ascendc/*.cpp`) are Ascend C sources written for the AI Core. `build.rs` compiles
//! them together with a clean-room host implementation of the Ascend C API subset they use
//! (`include/dsnpu_ascendc`) into one shared object, the *host kernel binary*, which the dsnpu simulator
//! loads like a device binary and launches through the real AscendCL calls. Its ABI is
//! `sim/include/dsnpu_sim_kernel.h`: one exported symbol per kernel, named like the kernel.
//!
//! Layers and contracts:
//! - the host Ascend C layer checks every memory access a kernel makes (GM against the tensor's size
//!   and the simulator's allocation table, UB against the tensor's extent, the Unified Buffer capacity
//!   and 32-byte alignment) and reports a violation through the simulator as a fault of the launch;
//!   it counts GM traffic, vector element operations, cube multiply-adds and the UB high-water mark;
//! - the kernels trust their tiling struct (computed here from validated shapes): a wrong tiling can
//!   only make a kernel fault on a checked access;
//! - [`tiling`] validates shapes and hardware budgets and returns typed errors, never panics.
//! - [`roofline`] models a launch's counters and an operator's least traffic on a 910B2 die, for the
//!   benchmarks;
//! - [`launch`] runs the kernels through `dsnpu-runtime`: one typed launcher per kernel that checks the
//!   buffers against the shape, tiles for the device's cores and Unified Buffer, and launches.
//! - [`ep`] chains the routing and combine kernels with HCCL AlltoAllV into expert-parallel MoE
//!   dispatch and combine across ranks.
//!
//! Exported kernels (`<t>` is `f32`, `f16` or `bf16`, see [`Kernel::symbol`]): `rms_norm_<t>`,
//! `add_rms_norm_<t>`, `rope_<t>`, `silu_mul_<t>`, `linear_<t>`, the mixture-of-experts kernels
//! `moe_gating_topk_<t>`, `moe_init_routing_<t>`, `moe_init_routing_quant_<t>`, `grouped_matmul_<t>`,
//! `expert_ffn_<t>`, `moe_finalize_routing_<t>` (tilings in [`tiling_moe`]), the MLA decode
//! `mla_decode_<t>` (tiling in [`tiling_mla`]), the MLA prefill `mla_prefill_<t>` (tiling in
//! [`tiling_mla_prefill`]), the fused MLA cache write `mla_cache_write_<t>` (tiling in
//! [`tiling_cache_write`]), the step kernels `gather_rows_<t>` and `argmax_<t>` (tilings in [`tiling_step`]), the top-p sampler `sample_top_p_<t>` (tiling in
//! [`tiling_sample`]), the FP8-weight GEMMs `linear_fp8_<t>`, `grouped_matmul_fp8_<t>` and
//! `expert_ffn_fp8_<t>` (`<t>` the activations; e4m3 codes and 128×128 block scales dequantized tile by
//! tile, see [`launch::linear_fp8`]), and the layer's self-tests
//! `selftest_fault`, `selftest_cast`, `selftest_reduce`, `selftest_sync_all`.

pub mod bench_report;
pub mod cost_model;
pub mod ep;
pub mod error;
pub mod launch;
#[cfg(feature = "mutation")]
mod mutation;
pub mod registry;
pub mod roofline;
pub mod tiling;
pub mod tiling_cache_write;
pub mod tiling_cube;
pub mod tiling_mla;
pub mod tiling_mla_prefill;
pub mod tiling_moe;
pub mod tiling_sample;
pub mod tiling_step;

pub use error::{KernelError, Result};
pub use tiling::{
    CoreBudget, LinearTiling, RmsNormTiling, RopeLayout, RopeTiling, SelftestTiling, SiluMulTiling,
    Tiling,
};
pub use tiling_cache_write::{MlaCacheWriteDims, MlaCacheWriteTiling};
pub use tiling_cube::{CubeProblem, CubeTiling, SYS_WORKSPACE_BYTES};
pub use tiling_mla::{MlaDecodeDims, MlaDecodePlan, MlaDecodeTiling, MlaPlanShape};
pub use tiling_mla_prefill::{MlaOperand, MlaPrefillDims, MlaPrefillTiling};
pub use tiling_moe::{
    ExpertFfnTiling, GatingParams, GroupedMatmulTiling, MoeFinalizeTiling, MoeGatingTiling,
    MoeInitRoutingTiling, MoeList, MoeScore,
};
pub use tiling_sample::SampleTopPTiling;
pub use tiling_step::{ArgmaxTiling, GatherRowsDims, GatherRowsTiling};

/// Absolute path of the host kernel binary built for this crate (in cargo's OUT_DIR).
pub const HOST_KERNELS_PATH: &str = env!("DSNPU_HOST_KERNELS_PATH");

/// The host kernel binary's bytes, for `aclrtBinaryLoadFromData` when the build directory is gone.
pub static HOST_KERNELS: &[u8] = include_bytes!(env!("DSNPU_HOST_KERNELS_PATH"));

/// Absolute path of the AI Core fat binary (dav-c220) that feature `ascend` built with CANN's compiler, for
/// `aclrtBinaryLoadFromFile` on a real CANN install. Never tested against CANN (see the crate README).
#[cfg(feature = "ascend")]
pub const AICORE_KERNELS_PATH: &str = env!("DSNPU_AICORE_KERNELS_PATH");

/// The ABI version the host kernel binary exports (`DSNPU_SIM_KERNEL_ABI`).
pub const HOST_KERNEL_ABI: u32 = 4;

/// Element types the kernels are instantiated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelDtype {
    F32,
    F16,
    Bf16,
}

impl KernelDtype {
    /// All instantiated types.
    pub const ALL: [KernelDtype; 3] = [KernelDtype::F32, KernelDtype::F16, KernelDtype::Bf16];

    /// Bytes per element.
    pub fn size(self) -> u32 {
        match self {
            KernelDtype::F32 => 4,
            KernelDtype::F16 | KernelDtype::Bf16 => 2,
        }
    }
}

/// The kernels of the host kernel binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `(x, weight, y, workspace, tiling)` with [`RmsNormTiling`].
    RmsNorm,
    /// `(x, residual, weight, y, sum, workspace, tiling)` with [`RmsNormTiling`].
    AddRmsNorm,
    /// `(x, positions, cos, sin, y, workspace, tiling)` with [`RopeTiling`].
    Rope,
    /// `(gate_up, out, workspace, tiling)` with [`SiluMulTiling`].
    SiluMul,
    /// `(x, w, bias, y, workspace, tiling)` with [`LinearTiling`]; bias is f32 and may be null; a 1:2 mix
    /// kernel (cube + two vector cores per block) whose workspace is [`LinearTiling::workspace_bytes`].
    Linear,
    /// `(logits, bias, ids, weights, workspace, tiling)` with [`MoeGatingTiling`]: bias f32 `[E]` (null
    /// unless `has_bias`), ids i32 and weights f32 `[T, K]`.
    MoeGatingTopK,
    /// `(x, ids, expanded_x, expanded_row_idx, expert_tokens, workspace, tiling)` with
    /// [`MoeInitRoutingTiling`]: ids and row indices i32 `[T*K]`, `expanded_x` `[T*K, H]` (the first R
    /// rows written), expert_tokens i64 `[E]`; a workspace of `workspace_bytes()`; SyncAll.
    MoeInitRouting,
    /// `(x, ids, expanded_x, scales, expanded_row_idx, expert_tokens, workspace, tiling)`: as
    /// [`Kernel::MoeInitRouting`] with int8 `expanded_x` and f32 `scales` `[T*K]`.
    MoeInitRoutingQuant,
    /// `(x, w, group_list, y, workspace, tiling)` with [`GroupedMatmulTiling`]: group_list i64 `[G]`.
    GroupedMatmul,
    /// `(x, w_gate, w_up, w_down, group_list, y, workspace, tiling)` with [`ExpertFfnTiling`]; a workspace
    /// of `workspace_bytes()`; SyncAll.
    ExpertFfn,
    /// `(y, expanded_row_idx, weights, shared, residual, out, workspace, tiling)` with
    /// [`MoeFinalizeTiling`]: weights f32 `[T, K]`; shared and residual may be null.
    MoeFinalizeRouting,
    /// `(q_nope, q_rope, latent, rope, block_table, seq_lens, plan, out, lse, workspace, tiling)` with
    /// [`MlaDecodeTiling`]: block_table, seq_lens and plan ([`MlaDecodePlan::words`]) i32, lse f32
    /// `[B, H, S]`; a workspace of `workspace_bytes()`; SyncAll.
    MlaDecode,
    /// `(q_nope, q_rope, k_nope, k_rope, v, cu_q, cu_k, out, lse, workspace, tiling)` with
    /// [`MlaPrefillTiling`]: cu_q and cu_k i32 `[B + 1]`, lse f32 `[H, Tq]`; a workspace of
    /// `workspace_bytes()`.
    MlaPrefill,
    /// `(kv, weight, positions, cos, sin, slot_mapping, latent_cache, rope_cache, workspace, tiling)` with
    /// [`MlaCacheWriteTiling`]: positions and slot_mapping i32, cos and sin f32.
    MlaCacheWrite,
    /// `(x, idx, y, workspace, tiling)` with [`GatherRowsTiling`]: idx i32 `[rows]`, null unless `has_idx`.
    GatherRows,
    /// `(x, out, workspace, tiling)` with [`ArgmaxTiling`]: out i32 `[rows]`.
    Argmax,
    /// [`Kernel::Linear`] with f32 `x` and `y` and the weights in the given dtype (widened tile by tile
    /// in the kernel): a 16-bit checkpoint computed in f32 keeps 16-bit weights on the device.
    LinearF32W,
    /// [`Kernel::GroupedMatmul`] with f32 activations and the weights in the given dtype.
    GroupedMatmulF32W,
    /// [`Kernel::ExpertFfn`] with f32 activations (and workspace) and the weights in the given dtype.
    ExpertFfnF32W,
    /// [`Kernel::GatherRows`] from a source in the given dtype into f32 rows (widened on the way).
    GatherRowsF32,
    /// `(x, u, out, workspace, tiling)` with [`SampleTopPTiling`]: u f32 `[rows]` (the uniforms of
    /// `dsnpu_ops::sampling::uniform`), out i32 `[rows]` (-1 for a row it cannot sample).
    SampleTopP,
    /// `(x, w, scale, y, workspace, tiling)` with [`GroupedMatmulTiling`] (one group, no list): `y = x·wᵀ`
    /// with `w` FP8 e4m3 codes `[n, k]` and f32 `scale` `[ceil(n/128), ceil(k/128)]` (`weight_scale_inv`),
    /// dequantized 128 columns at a time into a per-block panel; the dtype is the activations'.
    LinearFp8,
    /// `(x, w, scale, group_list, y, workspace, tiling)` with [`GroupedMatmulTiling`]: `w` FP8 codes
    /// `[G, n, k]`, `scale` f32 `[G, ceil(n/128), ceil(k/128)]`.
    GroupedMatmulFp8,
    /// `(x, w_gate, s_gate, w_up, s_up, w_down, s_down, group_list, y, workspace, tiling)` with
    /// [`ExpertFfnTiling`]: FP8 codes and f32 block scales for each weight; SyncAll.
    ExpertFfnFp8,
}

impl Kernel {
    /// All kernels.
    pub const ALL: [Kernel; 24] = [
        Kernel::RmsNorm,
        Kernel::AddRmsNorm,
        Kernel::Rope,
        Kernel::SiluMul,
        Kernel::Linear,
        Kernel::MoeGatingTopK,
        Kernel::MoeInitRouting,
        Kernel::MoeInitRoutingQuant,
        Kernel::GroupedMatmul,
        Kernel::ExpertFfn,
        Kernel::MoeFinalizeRouting,
        Kernel::MlaDecode,
        Kernel::MlaPrefill,
        Kernel::MlaCacheWrite,
        Kernel::GatherRows,
        Kernel::Argmax,
        Kernel::LinearF32W,
        Kernel::GroupedMatmulF32W,
        Kernel::ExpertFfnF32W,
        Kernel::GatherRowsF32,
        Kernel::SampleTopP,
        Kernel::LinearFp8,
        Kernel::GroupedMatmulFp8,
        Kernel::ExpertFfnFp8,
    ];

    /// This kernel's row of the registry ([`registry::KERNELS`], in the order of the variants).
    pub fn spec(self) -> &'static registry::KernelSpec {
        &registry::KERNELS[self as usize]
    }

    /// The exported symbol of this kernel for `dtype`.
    pub fn symbol(self, dtype: KernelDtype) -> &'static str {
        let [f32, f16, bf16] = self.spec().symbols;
        match dtype {
            KernelDtype::F32 => f32,
            KernelDtype::F16 => f16,
            KernelDtype::Bf16 => bf16,
        }
    }

    /// Number of GM address parameters, tiling included.
    pub fn arity(self) -> usize {
        self.spec().arity
    }

    /// Whether the kernel meets all its blocks at `SyncAll`: they must all run concurrently (and
    /// `moe_init_routing*` must get exactly its tiling's `block_dim()` blocks).
    pub fn uses_sync_all(self) -> bool {
        self.spec().entry == registry::HostEntry::SyncAll
    }
}

#[cfg(test)]
mod tests {
    use super::{registry, Kernel};

    #[test]
    fn the_registry_has_one_row_per_kernel_in_variant_order() {
        assert_eq!(registry::KERNELS.len(), Kernel::ALL.len());
        for (i, k) in Kernel::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "{k:?} is listed out of order in Kernel::ALL");
            assert!(
                registry::KERNEL_SOURCES
                    .iter()
                    .any(|s| s.path == k.spec().source),
                "{k:?}'s source is not in KERNEL_SOURCES"
            );
        }
    }
}
