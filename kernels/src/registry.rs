//! The one list of the kernels of `src/ascendc`: each operator kernel's exported symbols, parameter count,
//! source file and how the simulator runs its blocks; and each source's AI Core units.
//!
//! Everything else is derived from it: [`crate::Kernel`]'s `symbol`, `arity` and `uses_sync_all`; the
//! host entry points `build.rs` generates into `<OUT_DIR>/dsnpu_entries/<source>.inc` (which each source
//! includes at its end, and where a `static_assert` checks `arity` against the kernel's definition); the
//! sources `build.rs` compiles; and the AI Core build plan (`build/ascend_plan.rs`). Adding a kernel is one
//! row here and a variant of [`crate::Kernel`] (a test keeps the two in the same order).
//!
//! Plain data with no dependencies: `build.rs` and `tests/ascend_plan.rs` include this file by path.
//! The host layer's self-test kernels (`selftest.cpp`) are not operators and keep their entries in the source.

/// Which AI Core units a source's kernels run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreKind {
    /// Vector unit only: compiled once for `dav-c220-vec`.
    Vector,
    /// Cube work through the high-level `Matmul` API, driven from the vector cores: compiled for both
    /// `dav-c220-cube` and `dav-c220-vec` and linked side by side (a MIX_AIC_1_2 kernel, the 910B default
    /// for Matmul; hicann/pyasc python/asc/runtime/compiler.py picks it for `asc.compile_mix` modules).
    Mix,
    /// Part of the host kernel binary only (the simulator ABI marker, the deliberately faulting self-tests):
    /// not compiled for the AI Core.
    HostOnly,
}

/// One translation unit of src/ascendc and the units its kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSource {
    /// Relative to the crate's manifest directory.
    pub path: &'static str,
    pub kind: CoreKind,
}

/// Every source of src/ascendc (a test checks the table against the directory and the `Matmul` includes).
pub const KERNEL_SOURCES: &[KernelSource] = &[
    source("src/ascendc/host_abi.cpp", CoreKind::HostOnly),
    source("src/ascendc/rms_norm.cpp", CoreKind::Vector),
    source("src/ascendc/rope.cpp", CoreKind::Vector),
    source("src/ascendc/silu_mul.cpp", CoreKind::Vector),
    source("src/ascendc/linear.cpp", CoreKind::Mix),
    source("src/ascendc/selftest.cpp", CoreKind::HostOnly),
    source("src/ascendc/moe_gating_topk.cpp", CoreKind::Vector),
    source("src/ascendc/moe_init_routing.cpp", CoreKind::Vector),
    source("src/ascendc/moe_grouped_matmul.cpp", CoreKind::Mix),
    source("src/ascendc/moe_finalize_routing.cpp", CoreKind::Vector),
    source("src/ascendc/mla_decode.cpp", CoreKind::Mix),
    source("src/ascendc/mla_prefill.cpp", CoreKind::Mix),
    source("src/ascendc/mla_cache_write.cpp", CoreKind::Vector),
    source("src/ascendc/gather_rows.cpp", CoreKind::Vector),
    source("src/ascendc/argmax.cpp", CoreKind::Vector),
    source("src/ascendc/sample_top_p.cpp", CoreKind::Vector),
    source("src/ascendc/softmax.cpp", CoreKind::Vector),
];

const fn source(path: &'static str, kind: CoreKind) -> KernelSource {
    KernelSource { path, kind }
}

/// How the simulator runs a kernel's blocks: the host entry macro `build.rs` generates for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEntry {
    /// `DSNPU_HOST_ENTRY`: independent blocks (the simulator may run them one after another).
    Plain,
    /// `DSNPU_HOST_ENTRY_SYNC`: the blocks meet in `SyncAll`, so they all run at once.
    SyncAll,
    /// `DSNPU_HOST_ENTRY_MIX`: a 1:2 mix kernel, each block one cube and two vector cores.
    Mix,
}

/// One operator kernel, instantiated for f32, f16 and bf16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    /// The exported symbols for f32, f16 and bf16.
    pub symbols: [&'static str; 3],
    /// GM address parameters, tiling included.
    pub arity: usize,
    /// The source defining it (a path of [`KERNEL_SOURCES`]).
    pub source: &'static str,
    pub entry: HostEntry,
}

const fn kernel(
    symbols: [&'static str; 3],
    arity: usize,
    source: &'static str,
    entry: HostEntry,
) -> KernelSpec {
    KernelSpec {
        symbols,
        arity,
        source,
        entry,
    }
}

use HostEntry::{Mix, Plain, SyncAll};

/// Every operator kernel, in the order of [`crate::Kernel`]'s variants.
pub const KERNELS: &[KernelSpec] = &[
    kernel(
        ["rms_norm_f32", "rms_norm_f16", "rms_norm_bf16"],
        5,
        "src/ascendc/rms_norm.cpp",
        Plain,
    ),
    kernel(
        ["add_rms_norm_f32", "add_rms_norm_f16", "add_rms_norm_bf16"],
        7,
        "src/ascendc/rms_norm.cpp",
        Plain,
    ),
    kernel(
        ["rope_f32", "rope_f16", "rope_bf16"],
        7,
        "src/ascendc/rope.cpp",
        Plain,
    ),
    kernel(
        ["silu_mul_f32", "silu_mul_f16", "silu_mul_bf16"],
        4,
        "src/ascendc/silu_mul.cpp",
        Plain,
    ),
    kernel(
        ["linear_f32", "linear_f16", "linear_bf16"],
        6,
        "src/ascendc/linear.cpp",
        Mix,
    ),
    kernel(
        [
            "moe_gating_topk_f32",
            "moe_gating_topk_f16",
            "moe_gating_topk_bf16",
        ],
        6,
        "src/ascendc/moe_gating_topk.cpp",
        Plain,
    ),
    kernel(
        [
            "moe_init_routing_f32",
            "moe_init_routing_f16",
            "moe_init_routing_bf16",
        ],
        7,
        "src/ascendc/moe_init_routing.cpp",
        SyncAll,
    ),
    kernel(
        [
            "moe_init_routing_quant_f32",
            "moe_init_routing_quant_f16",
            "moe_init_routing_quant_bf16",
        ],
        8,
        "src/ascendc/moe_init_routing.cpp",
        SyncAll,
    ),
    kernel(
        [
            "grouped_matmul_f32",
            "grouped_matmul_f16",
            "grouped_matmul_bf16",
        ],
        6,
        "src/ascendc/moe_grouped_matmul.cpp",
        Plain,
    ),
    kernel(
        ["expert_ffn_f32", "expert_ffn_f16", "expert_ffn_bf16"],
        8,
        "src/ascendc/moe_grouped_matmul.cpp",
        SyncAll,
    ),
    kernel(
        [
            "moe_finalize_routing_f32",
            "moe_finalize_routing_f16",
            "moe_finalize_routing_bf16",
        ],
        8,
        "src/ascendc/moe_finalize_routing.cpp",
        Plain,
    ),
    kernel(
        ["mla_decode_f32", "mla_decode_f16", "mla_decode_bf16"],
        11,
        "src/ascendc/mla_decode.cpp",
        SyncAll,
    ),
    kernel(
        ["mla_prefill_f32", "mla_prefill_f16", "mla_prefill_bf16"],
        11,
        "src/ascendc/mla_prefill.cpp",
        Plain,
    ),
    kernel(
        [
            "mla_cache_write_f32",
            "mla_cache_write_f16",
            "mla_cache_write_bf16",
        ],
        10,
        "src/ascendc/mla_cache_write.cpp",
        Plain,
    ),
    kernel(
        ["gather_rows_f32", "gather_rows_f16", "gather_rows_bf16"],
        5,
        "src/ascendc/gather_rows.cpp",
        Plain,
    ),
    kernel(
        ["argmax_f32", "argmax_f16", "argmax_bf16"],
        4,
        "src/ascendc/argmax.cpp",
        Plain,
    ),
    kernel(
        ["linear_f32_wf32", "linear_f32_wf16", "linear_f32_wbf16"],
        6,
        "src/ascendc/linear.cpp",
        Mix,
    ),
    kernel(
        [
            "grouped_matmul_f32_wf32",
            "grouped_matmul_f32_wf16",
            "grouped_matmul_f32_wbf16",
        ],
        6,
        "src/ascendc/moe_grouped_matmul.cpp",
        Plain,
    ),
    kernel(
        [
            "expert_ffn_f32_wf32",
            "expert_ffn_f32_wf16",
            "expert_ffn_f32_wbf16",
        ],
        8,
        "src/ascendc/moe_grouped_matmul.cpp",
        SyncAll,
    ),
    kernel(
        [
            "gather_rows_f32_f32",
            "gather_rows_f16_f32",
            "gather_rows_bf16_f32",
        ],
        5,
        "src/ascendc/gather_rows.cpp",
        Plain,
    ),
    kernel(
        ["sample_top_p_f32", "sample_top_p_f16", "sample_top_p_bf16"],
        5,
        "src/ascendc/sample_top_p.cpp",
        Plain,
    ),
    kernel(
        ["linear_fp8_f32", "linear_fp8_f16", "linear_fp8_bf16"],
        6,
        "src/ascendc/moe_grouped_matmul.cpp",
        Plain,
    ),
    kernel(
        [
            "grouped_matmul_fp8_f32",
            "grouped_matmul_fp8_f16",
            "grouped_matmul_fp8_bf16",
        ],
        7,
        "src/ascendc/moe_grouped_matmul.cpp",
        Plain,
    ),
    kernel(
        [
            "expert_ffn_fp8_f32",
            "expert_ffn_fp8_f16",
            "expert_ffn_fp8_bf16",
        ],
        11,
        "src/ascendc/moe_grouped_matmul.cpp",
        SyncAll,
    ),
    kernel(
        ["softmax_f32", "softmax_f16", "softmax_bf16"],
        4,
        "src/ascendc/softmax.cpp",
        Plain,
    ),
];

/// The C++ that exports the host entry points of `source`'s kernels (what `build.rs` writes to
/// `dsnpu_entries/<file stem>.inc`): per symbol, a check of its parameter count against the registry,
/// then the entry macro.
pub fn host_entries(source: &str) -> String {
    let mut out = String::from("// Generated by kernels/build.rs from kernels/src/registry.rs.\n");
    for k in KERNELS.iter().filter(|k| k.source == source) {
        let mac = match k.entry {
            HostEntry::Plain => "DSNPU_HOST_ENTRY",
            HostEntry::SyncAll => "DSNPU_HOST_ENTRY_SYNC",
            HostEntry::Mix => "DSNPU_HOST_ENTRY_MIX",
        };
        for s in k.symbols {
            out.push_str(&format!(
                "static_assert(::dsnpu::host::arity(&dsnpu_host_impl_{s}) == {}, \"{s}: the parameter count in kernels/src/registry.rs differs from the kernel's\");\n{mac}({s})\n",
                k.arity
            ));
        }
    }
    out
}
