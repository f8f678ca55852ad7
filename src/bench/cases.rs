//! The kernel cases `dsnpu bench` and the criterion benches (benches/kernels.rs) launch: each case
//! owns its device buffers and queues one kernel launch per call, and knows the operator's minimal
//! traffic and necessary multiply-adds (each input read once, each output written once), which the
//! roofline (`dsnpu_kernels::roofline`) turns into the operator's least time.
//!
//! Contract: the shapes come from a [`Shapes`] preset and are valid for the kernels' tilings; a
//! launcher's errors (tiling, buffers, device) are returned, never unwrapped. Inputs are pseudo-random
//! values in [-1, 1) (their values do not change the kernels' traffic or work), except the MoE ids,
//! which the gating kernel computes, the MLA block tables and slots and the embedding ids, which are laid
//! out here, and the sampling uniforms, in [0, 1).

use std::sync::Arc;

use dsnpu_kernels::launch::{
    self, CombineShape, FfnShape, GroupList, GroupedShape, KernelElem, KernelLibrary,
    MlaCacheWriteInputs, MlaCacheWriteShape, MlaDecodeInputs, MlaDecodeShape, MlaPrefillInputs,
    RopeShape, RoutingShape, RowSource,
};
use dsnpu_kernels::{
    GatingParams, KernelDtype, KernelError, MlaDecodePlan, MlaOperand, MlaPlanShape,
    MlaPrefillDims, MoeList, MoeScore, RopeLayout,
};
use dsnpu_runtime::{DeviceBuffer, DeviceRepr, RuntimeError, Stream};
use half::bf16;

/// Every operator with a kernel that the bench covers, in report order, named as `dsnpu verify` names
/// them (the fused MLA cache write's kernel is `mla_cache_write_<t>`, the embedding's `gather_rows_<t>`).
pub const OPS: [&str; 18] = [
    "moe_gating_topk",
    "moe_init_routing",
    "moe_init_routing_quant",
    "grouped_matmul",
    "expert_ffn",
    "moe_finalize_routing",
    "linear",
    "rms_norm",
    "add_rms_norm",
    "rope",
    "silu_mul",
    "mla_cache_write_fused",
    "mla_decode",
    "mla_prefill",
    "embedding",
    "argmax",
    "softmax",
    "sample_top_p",
];

/// Why a case could not be set up or launched.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The sizes the cases run at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shapes {
    pub name: &'static str,
    /// Tokens of the dense and MoE cases (a decode step's batch).
    pub tokens: usize,
    pub hidden: usize,
    /// Attention heads (rope over `q_pe`, MLA decode).
    pub heads: usize,
    pub rope_dim: usize,
    /// The dense FFN's intermediate size (`silu_mul`).
    pub dense_inter: usize,
    /// `linear`'s output features (`kv_a_proj_with_mqa`: kv_lora_rank + rope dim).
    pub linear_out: usize,
    pub experts: usize,
    pub gating: GatingParams,
    /// An expert's intermediate size.
    pub moe_inter: usize,
    /// Experts whose weights this rank holds (the grouped matmul and expert FFN cases).
    pub local_experts: usize,
    /// kv_lora_rank (Dl).
    pub latent_dim: usize,
    pub block_size: usize,
    /// MLA decode: sequences and cached tokens of each.
    pub decode_batch: usize,
    pub decode_ctx: usize,
    /// MLA prefill: packed tokens, in two causal sequences of half each.
    pub prefill_tokens: usize,
    /// The vocabulary: rows of the embedding table, columns of the logits argmax and sampling read.
    pub vocab: usize,
}

/// DeepSeek-V3 at a 16-token decode step: hidden 7168, 128 heads, rope 64, dense FFN 18432, 256 routed
/// experts (sigmoid with bias, 8 groups keeping 4, top-8, ×2.5) of FFN 2048 with 8 on this rank
/// (expert parallelism over 32), MLA Dl 512 with 128-token cache blocks, decode of 4 sequences × 4096,
/// prefill of two 128-token sequences (the simulator's cube emulation makes longer ones take minutes),
/// vocabulary 129280 (the embedding lookup, and argmax and top-p sampling over the logits).
pub const DEEPSEEK_V3: Shapes = Shapes {
    name: "deepseek-v3",
    tokens: 16,
    hidden: 7168,
    heads: 128,
    rope_dim: 64,
    dense_inter: 18432,
    linear_out: 512 + 64,
    experts: 256,
    gating: GatingParams {
        top_k: 8,
        n_group: 8,
        topk_group: 4,
        score: MoeScore::Sigmoid,
        has_bias: true,
        normalize: true,
        routed_scaling_factor: 2.5,
    },
    moe_inter: 2048,
    local_experts: 8,
    latent_dim: 512,
    block_size: 128,
    decode_batch: 4,
    decode_ctx: 4096,
    prefill_tokens: 256,
    vocab: 129280,
};

/// DeepSeek-V3's structure at a fraction of its sizes (Dl, Dr and the block size kept), for tests:
/// every case launches in well under a second on the simulator.
pub const QUICK: Shapes = Shapes {
    name: "quick",
    tokens: 4,
    hidden: 512,
    heads: 16,
    rope_dim: 64,
    dense_inter: 1024,
    linear_out: 512 + 64,
    experts: 32,
    gating: GatingParams {
        top_k: 4,
        n_group: 4,
        topk_group: 2,
        score: MoeScore::Sigmoid,
        has_bias: true,
        normalize: true,
        routed_scaling_factor: 2.5,
    },
    moe_inter: 256,
    local_experts: 4,
    latent_dim: 512,
    block_size: 128,
    decode_batch: 2,
    decode_ctx: 256,
    prefill_tokens: 64,
    vocab: 16384,
};

/// Queues one launch and returns the launched kernel's symbol.
type Launcher = Box<dyn FnMut() -> Result<&'static str, KernelError>>;

/// One benchmarked launch with the buffers it owns.
pub struct KernelCase {
    /// The operator, as [`OPS`] names it.
    pub op: &'static str,
    pub shape: String,
    pub dtype: &'static str,
    /// Bytes the operator must move at least: each input read once, each output written once.
    pub minimal_bytes: u64,
    /// Multiply-adds the operator must do.
    pub minimal_macs: u64,
    launch: Launcher,
}

impl std::fmt::Debug for KernelCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCase")
            .field("op", &self.op)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl KernelCase {
    /// Queues the case's kernel on its stream; returns the kernel's symbol.
    pub fn launch(&mut self) -> Result<&'static str, KernelError> {
        (self.launch)()
    }
}

const BF16: u64 = 2;

/// Values uniform in `[-scale, scale)` from a xorshift stream (fast enough for 10^8 weights).
pub fn values(n: usize, seed: u32, scale: f32) -> impl Iterator<Item = f32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
    })
}

fn bf16s(s: &Stream, n: usize, seed: u32, scale: f32) -> Result<DeviceBuffer<bf16>, CaseError> {
    let v: Vec<bf16> = values(n, seed, scale).map(bf16::from_f32).collect();
    Ok(s.upload(&v)?)
}

fn f32s(s: &Stream, n: usize, seed: u32, scale: f32) -> Result<DeviceBuffer<f32>, CaseError> {
    let v: Vec<f32> = values(n, seed, scale).collect();
    Ok(s.upload(&v)?)
}

fn alloc<E: DeviceRepr>(s: &Stream, n: usize) -> Result<DeviceBuffer<E>, CaseError> {
    Ok(s.alloc(n)?)
}

/// The cases of the operators `ops` names (all of [`OPS`] when empty) at `shapes`, in [`OPS`] order.
/// Unknown names are the caller's to reject (see [`unknown_ops`]).
pub fn build(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    shapes: &Shapes,
    ops: &[String],
) -> Result<Vec<KernelCase>, CaseError> {
    let wanted = |op: &str| ops.is_empty() || ops.iter().any(|o| o == op);
    let mut cases = Vec::new();
    if OPS[..6].iter().any(|op| wanted(op)) {
        cases.extend(moe_cases(lib, s, shapes)?);
    }
    cases.extend(dense_cases(lib, s, shapes, &wanted)?);
    if wanted("mla_cache_write_fused") {
        cases.push(cache_write_case(lib, s, shapes)?);
    }
    if wanted("mla_decode") {
        cases.push(decode_case(lib, s, shapes)?);
    }
    if wanted("mla_prefill") {
        cases.push(prefill_case::<f32>(lib, s, shapes)?);
        cases.push(prefill_case::<half::f16>(lib, s, shapes)?);
        cases.push(prefill_case::<bf16>(lib, s, shapes)?);
    }
    cases.extend(step_cases(lib, s, shapes, &wanted)?);
    cases.retain(|c| wanted(c.op));
    cases.sort_by_key(|c| OPS.iter().position(|&op| op == c.op));
    Ok(cases)
}

/// The names in `ops` that are not operators of [`OPS`].
pub fn unknown_ops(ops: &[String]) -> Vec<String> {
    ops.iter()
        .filter(|o| !OPS.contains(&o.as_str()))
        .cloned()
        .collect()
}

/// `rms_norm`, `add_rms_norm`, `rope`, `silu_mul` and `linear` at `tokens` rows (those `wanted`).
pub fn dense_cases(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    sh: &Shapes,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<KernelCase>, CaseError> {
    let (t, h) = (sh.tokens, sh.hidden);
    let mut out = Vec::new();
    if wanted("rms_norm") {
        let (lib, s1) = (lib.clone(), s.clone());
        let (x, w) = (bf16s(s, t * h, 1, 1.0)?, bf16s(s, h, 2, 1.0)?);
        let mut y = alloc::<bf16>(s, t * h)?;
        out.push(KernelCase {
            op: "rms_norm",
            shape: format!("[{t}, {h}]"),
            dtype: "bf16",
            minimal_bytes: (2 * t * h + h) as u64 * BF16,
            minimal_macs: 0,
            launch: Box::new(move || {
                Ok(launch::rms_norm(&lib, &s1, &x, &w, &mut y, t, 1e-6)?.symbol)
            }),
        });
    }
    if wanted("add_rms_norm") {
        let (lib, s1) = (lib.clone(), s.clone());
        let (x, r, w) = (
            bf16s(s, t * h, 3, 1.0)?,
            bf16s(s, t * h, 4, 1.0)?,
            bf16s(s, h, 5, 1.0)?,
        );
        let (mut y, mut sum) = (alloc::<bf16>(s, t * h)?, alloc::<bf16>(s, t * h)?);
        out.push(KernelCase {
            op: "add_rms_norm",
            shape: format!("[{t}, {h}]"),
            dtype: "bf16",
            minimal_bytes: (4 * t * h + h) as u64 * BF16,
            minimal_macs: 0,
            launch: Box::new(move || {
                Ok(launch::add_rms_norm(&lib, &s1, &x, &r, &w, &mut y, &mut sum, t, 1e-6)?.symbol)
            }),
        });
    }
    if wanted("rope") {
        let (lib, s1) = (lib.clone(), s.clone());
        let (heads, dim) = (sh.heads, sh.rope_dim);
        let (table_rows, half) = (4096, dim / 2);
        let x = bf16s(s, t * heads * dim, 6, 1.0)?;
        let positions: Vec<i32> = (0..t as i32).map(|i| 100 + 37 * i).collect();
        let pos = s.upload(&positions)?;
        let table: Vec<f32> = (0..table_rows * half)
            .map(|i| (i as f32 * 1e-3).cos())
            .collect();
        let (cos, sin) = (s.upload(&table)?, s.upload(&table)?);
        let mut y = alloc::<bf16>(s, t * heads * dim)?;
        let shape = RopeShape::dense(t, heads, dim, table_rows, RopeLayout::Interleaved);
        out.push(KernelCase {
            op: "rope",
            shape: format!("[{t}, {heads}, {dim}]"),
            dtype: "bf16",
            // x in, y out, the positions, and one cos and one sin row (f32) per (distinct) position.
            minimal_bytes: 2 * (t * heads * dim) as u64 * BF16
                + 4 * t as u64
                + 2 * (t * half * 4) as u64,
            minimal_macs: 0,
            launch: Box::new(move || {
                Ok(launch::rope(&lib, &s1, &x, &pos, &cos, &sin, &mut y, shape)?.symbol)
            }),
        });
    }
    if wanted("silu_mul") {
        let (lib, s1) = (lib.clone(), s.clone());
        let inter = sh.dense_inter;
        let gu = bf16s(s, t * 2 * inter, 7, 1.0)?;
        let mut o = alloc::<bf16>(s, t * inter)?;
        out.push(KernelCase {
            op: "silu_mul",
            shape: format!("[{t}, 2 x {inter}]"),
            dtype: "bf16",
            minimal_bytes: 3 * (t * inter) as u64 * BF16,
            minimal_macs: 0,
            launch: Box::new(
                move || Ok(launch::silu_mul(&lib, &s1, &gu, &mut o, t, inter)?.symbol),
            ),
        });
    }
    if wanted("linear") {
        let (lib, s1) = (lib.clone(), s.clone());
        let (m, n, k) = (t, sh.linear_out, h);
        let (x, w) = (bf16s(s, m * k, 8, 1.0)?, bf16s(s, n * k, 9, 1.0)?);
        let mut y = alloc::<bf16>(s, m * n)?;
        out.push(KernelCase {
            op: "linear",
            shape: format!("[{m}, {k}] x [{n}, {k}]^T"),
            dtype: "bf16",
            minimal_bytes: (m * k + n * k + m * n) as u64 * BF16,
            minimal_macs: (m * n * k) as u64,
            launch: Box::new(move || {
                Ok(launch::linear(&lib, &s1, &x, &w, None, &mut y, m, n, k)?.symbol)
            }),
        });
    }
    Ok(out)
}

/// The MoE layer's kernels at `tokens`: gating (f32 router logits), dispatch plain and int8 to every
/// expert, the grouped gate projection and the expert FFN of this rank's experts over the rows
/// dispatched to them, and the combine with the shared expert and the residual fused in.
pub fn moe_cases(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    sh: &Shapes,
) -> Result<Vec<KernelCase>, CaseError> {
    let (t, h, e, k) = (sh.tokens, sh.hidden, sh.experts, sh.gating.top_k as usize);
    let pairs = t * k;
    let gating = sh.gating;
    let mut out = Vec::new();

    // Logits of standard deviation ~1/3, as a router would give from x in [-1, 1).
    let logits = f32s(s, t * e, 1, 0.6)?;
    let bias = f32s(s, e, 3, 0.1)?;
    let (mut ids, mut weights) = (alloc::<i32>(s, pairs)?, alloc::<f32>(s, pairs)?);
    launch::moe_gating_topk(
        lib,
        s,
        &logits,
        Some(&bias),
        &mut ids,
        &mut weights,
        t,
        e,
        &gating,
    )?;
    {
        let (lib, s1) = (lib.clone(), s.clone());
        let (mut i2, mut w2) = (alloc::<i32>(s, pairs)?, alloc::<f32>(s, pairs)?);
        out.push(KernelCase {
            op: "moe_gating_topk",
            shape: format!("T {t}, E {e}, top-{k}"),
            dtype: "f32",
            minimal_bytes: 4 * (t * e + e + 2 * pairs) as u64,
            minimal_macs: 0,
            launch: Box::new(move || {
                let l = launch::moe_gating_topk(
                    &lib,
                    &s1,
                    &logits,
                    Some(&bias),
                    &mut i2,
                    &mut w2,
                    t,
                    e,
                    &gating,
                )?;
                Ok(l.symbol)
            }),
        });
    }

    let x = Arc::new(bf16s(s, t * h, 10, 1.0)?);
    let ids = Arc::new(ids);
    let all = RoutingShape {
        tokens: t,
        hidden: h,
        top_k: k,
        experts: e,
        active: None,
        mode: MoeList::Count,
    };
    let index_bytes = 4 * pairs as u64 * 2 + 8 * e as u64;
    let mut row_idx = alloc::<i32>(s, pairs)?;
    let mut dispatched = alloc::<bf16>(s, pairs * h)?;
    let mut counts = alloc::<i64>(s, e)?;
    launch::moe_init_routing(
        lib,
        s,
        &x,
        &ids,
        &mut dispatched,
        &mut row_idx,
        &mut counts,
        &all,
    )?;
    {
        let (lib, s1, x, ids, all) = (lib.clone(), s.clone(), x.clone(), ids.clone(), all.clone());
        let (mut ri, mut c) = (alloc::<i32>(s, pairs)?, alloc::<i64>(s, e)?);
        out.push(KernelCase {
            op: "moe_init_routing",
            shape: format!("T {t}, H {h}, top-{k}"),
            dtype: "bf16",
            minimal_bytes: (t * h) as u64 * BF16 + (pairs * h) as u64 * BF16 + index_bytes,
            minimal_macs: 0,
            launch: Box::new(move || {
                let l = launch::moe_init_routing(
                    &lib,
                    &s1,
                    &x,
                    &ids,
                    &mut dispatched,
                    &mut ri,
                    &mut c,
                    &all,
                )?;
                Ok(l.symbol)
            }),
        });
    }
    {
        let (lib, s1, x, ids, all) = (lib.clone(), s.clone(), x.clone(), ids.clone(), all.clone());
        let (mut q, mut scales) = (alloc::<i8>(s, pairs * h)?, alloc::<f32>(s, pairs)?);
        let (mut ri, mut c) = (alloc::<i32>(s, pairs)?, alloc::<i64>(s, e)?);
        out.push(KernelCase {
            op: "moe_init_routing_quant",
            shape: format!("T {t}, H {h}, top-{k}"),
            dtype: "bf16",
            minimal_bytes: (t * h) as u64 * BF16 + pairs as u64 * (h as u64 + 4) + index_bytes,
            minimal_macs: 0,
            launch: Box::new(move || {
                let l = launch::moe_init_routing_quant(
                    &lib,
                    &s1,
                    &x,
                    &ids,
                    &mut q,
                    &mut scales,
                    &mut ri,
                    &mut c,
                    &all,
                )?;
                Ok(l.symbol)
            }),
        });
    }

    // This rank's experts: the rows dispatched to them, their weights, the counts on the device.
    let local = RoutingShape {
        active: Some(0..sh.local_experts),
        ..all
    };
    let (g, inter) = (sh.local_experts, sh.moe_inter);
    let mut lx = alloc::<bf16>(s, pairs * h)?;
    let (mut lri, mut lcounts) = (alloc::<i32>(s, pairs)?, alloc::<i64>(s, e)?);
    launch::moe_init_routing(lib, s, &x, &ids, &mut lx, &mut lri, &mut lcounts, &local)?;
    let per_expert = lcounts.to_vec()?;
    let r_local = per_expert.iter().sum::<i64>().max(0) as u64;
    let busy = per_expert.iter().filter(|&&c| c > 0).count() as u64;
    let (lx, lcounts) = (Arc::new(lx), Arc::new(lcounts));
    let wscale = (3.0 / h as f32).sqrt();
    let wg = Arc::new(bf16s(s, g * inter * h, 50, wscale)?);
    {
        let (lib, s1, lx, lcounts, wg) = (
            lib.clone(),
            s.clone(),
            lx.clone(),
            lcounts.clone(),
            wg.clone(),
        );
        let mut y = alloc::<bf16>(s, pairs * inter)?;
        let shape = GroupedShape {
            rows: pairs,
            groups: g,
            n: inter,
            k: h,
        };
        out.push(KernelCase {
            op: "grouped_matmul",
            shape: format!("{r_local} rows over {g} experts, [{inter}, {h}]"),
            dtype: "bf16",
            minimal_bytes: r_local * (h + inter) as u64 * BF16
                + busy * (inter * h) as u64 * BF16
                + 8 * g as u64,
            minimal_macs: r_local * (h * inter) as u64,
            launch: Box::new(move || {
                let list = GroupList::all(&lcounts, MoeList::Count);
                Ok(launch::grouped_matmul(&lib, &s1, &lx, &wg, list, &mut y, shape)?.symbol)
            }),
        });
    }
    {
        let (lib, s1) = (lib.clone(), s.clone());
        let wu = bf16s(s, g * inter * h, 51, wscale)?;
        let wd = bf16s(s, g * h * inter, 52, (3.0 / inter as f32).sqrt())?;
        let mut fy = alloc::<bf16>(s, pairs * h)?;
        let ffn = FfnShape {
            rows: pairs,
            groups: g,
            // Top-k picks distinct experts: an expert gets each token at most once.
            max_group_rows: t,
            hidden: h,
            inter,
        };
        out.push(KernelCase {
            op: "expert_ffn",
            shape: format!("{r_local} rows over {g} experts, H {h}, I {inter}"),
            dtype: "bf16",
            minimal_bytes: 2 * r_local * h as u64 * BF16
                + busy * 3 * (inter * h) as u64 * BF16
                + 8 * g as u64,
            minimal_macs: 3 * r_local * (h * inter) as u64,
            launch: Box::new(move || {
                let list = GroupList::all(&lcounts, MoeList::Count);
                let l = launch::expert_ffn(&lib, &s1, &lx, &wg, &wu, &wd, list, &mut fy, ffn)?;
                Ok(l.symbol)
            }),
        });
    }

    // Combine the T·K dispatched rows (standing in for the experts' outputs) with the shared-expert
    // output and the residual fused in.
    {
        let (lib, s1) = (lib.clone(), s.clone());
        let y = bf16s(s, pairs * h, 20, 1.0)?;
        let (shared, residual) = (bf16s(s, t * h, 30, 1.0)?, bf16s(s, t * h, 40, 1.0)?);
        let shape = CombineShape {
            tokens: t,
            hidden: h,
            top_k: k,
            rows: pairs,
        };
        let mut o = alloc::<bf16>(s, t * h)?;
        out.push(KernelCase {
            op: "moe_finalize_routing",
            shape: format!("T {t}, H {h}, top-{k}, +shared +residual"),
            dtype: "bf16",
            minimal_bytes: (pairs * h) as u64 * BF16 + 8 * pairs as u64 + 3 * (t * h) as u64 * BF16,
            minimal_macs: 0,
            launch: Box::new(move || {
                let l = launch::moe_finalize_routing(
                    &lib,
                    &s1,
                    &y,
                    &row_idx,
                    &weights,
                    Some(&shared),
                    Some(&residual),
                    &mut o,
                    shape,
                )?;
                Ok(l.symbol)
            }),
        });
    }
    Ok(out)
}

/// The decode step's ends at `tokens` rows (those `wanted`): the embedding lookup of the tokens' rows
/// (`gather_rows`, a `[vocab, hidden]` table), greedy (`argmax`) and top-p (`sample_top_p`, temperature
/// 0.7, top_p 0.9) selection of one id per row of `[tokens, vocab]` logits, and their softmax, all bf16.
pub fn step_cases(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    sh: &Shapes,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<KernelCase>, CaseError> {
    let (t, h, v) = (sh.tokens, sh.hidden, sh.vocab);
    let mut out = Vec::new();
    if wanted("embedding") {
        let (lib, s1) = (lib.clone(), s.clone());
        let table = bf16s(s, v * h, 80, 1.0)?;
        // Ids spread over the table (distinct rows, none adjacent).
        let ids: Vec<i32> = (0..t).map(|i| ((i * 7919 + 13) % v) as i32).collect();
        let ids = s.upload(&ids)?;
        let mut y = alloc::<bf16>(s, t * h)?;
        let src = RowSource::lookup(t, h, v);
        out.push(KernelCase {
            op: "embedding",
            shape: format!("{t} ids into [{v}, {h}]"),
            dtype: "bf16",
            // The ids, and each looked-up row read once and written once.
            minimal_bytes: 4 * t as u64 + 2 * (t * h) as u64 * BF16,
            minimal_macs: 0,
            launch: Box::new(move || {
                Ok(launch::gather_rows(&lib, &s1, &table, Some(&ids), &mut y, src)?.symbol)
            }),
        });
    }
    if !(wanted("argmax") || wanted("softmax") || wanted("sample_top_p")) {
        return Ok(out);
    }
    // Logits of standard deviation ~2, as a model's last layer gives.
    let logits = Arc::new(bf16s(s, t * v, 81, 3.5)?);
    if wanted("argmax") {
        let (lib, s1, x) = (lib.clone(), s.clone(), logits.clone());
        let mut ids = alloc::<i32>(s, t)?;
        out.push(KernelCase {
            op: "argmax",
            shape: format!("[{t}, {v}]"),
            dtype: "bf16",
            // The logits read once, one id per row written.
            minimal_bytes: (t * v) as u64 * BF16 + 4 * t as u64,
            minimal_macs: 0,
            launch: Box::new(move || Ok(launch::argmax(&lib, &s1, &x, &mut ids, t, v)?.symbol)),
        });
    }
    if wanted("softmax") {
        let (lib, s1, x) = (lib.clone(), s.clone(), logits.clone());
        let mut p = alloc::<f32>(s, t * v)?;
        out.push(KernelCase {
            op: "softmax",
            shape: format!("[{t}, {v}]"),
            dtype: "bf16",
            // The logits read once, the f32 probabilities written once (the kernel's two passes
            // read each row twice: that is its ratio).
            minimal_bytes: (t * v) as u64 * (BF16 + 4),
            minimal_macs: 0,
            launch: Box::new(move || Ok(launch::softmax(&lib, &s1, &x, &mut p, t, v)?.symbol)),
        });
    }
    if wanted("sample_top_p") {
        let (lib, s1, x) = (lib.clone(), s.clone(), logits);
        let u: Vec<f32> = values(t, 82, 0.5).map(|x| x + 0.5).collect();
        let u = s.upload(&u)?;
        let mut ids = alloc::<i32>(s, t)?;
        out.push(KernelCase {
            op: "sample_top_p",
            shape: format!("[{t}, {v}] temperature 0.7 top_p 0.9"),
            dtype: "bf16",
            // The logits read once, one uniform per row read and one id written (the nucleus search
            // makes the kernel read each row more than once: that is its ratio).
            minimal_bytes: (t * v) as u64 * BF16 + 8 * t as u64,
            minimal_macs: 0,
            launch: Box::new(move || {
                Ok(launch::sample_top_p(&lib, &s1, &x, &u, &mut ids, t, v, 0.7, 0.9)?.symbol)
            }),
        });
    }
    Ok(out)
}

/// The fused MLA cache write of `tokens` new tokens into a paged cache of 64 blocks.
pub fn cache_write_case(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    sh: &Shapes,
) -> Result<KernelCase, CaseError> {
    let (t, dl, dr) = (sh.tokens, sh.latent_dim, sh.rope_dim);
    let num_slots = 64 * sh.block_size;
    let table_rows = 4096;
    let kv = bf16s(s, t * (dl + dr), 60, 1.0)?;
    let norm_weight = bf16s(s, dl, 61, 1.0)?;
    let positions = s.upload(&(0..t as i32).map(|i| 1000 + i).collect::<Vec<_>>())?;
    // Tokens of different sequences: slots spread over the cache, distinct.
    let slots = s.upload(
        &(0..t)
            .map(|i| ((i * 37 * sh.block_size + i) % num_slots) as i32)
            .collect::<Vec<_>>(),
    )?;
    let table: Vec<f32> = values(table_rows * dr / 2, 62, 1.0).collect();
    let (cos, sin) = (s.upload(&table)?, s.upload(&table)?);
    let mut latent = alloc::<bf16>(s, num_slots * dl)?;
    let mut rope = alloc::<bf16>(s, num_slots * dr)?;
    let shape = MlaCacheWriteShape {
        tokens: t,
        latent_dim: dl,
        rope_dim: dr,
        num_slots,
        table_rows,
        layout: RopeLayout::Interleaved,
    };
    let (lib, s1) = (lib.clone(), s.clone());
    Ok(KernelCase {
        op: "mla_cache_write_fused",
        shape: format!("T {t}, Dl {dl}, Dr {dr}, {num_slots} slots"),
        dtype: "bf16",
        // kv and the norm weight read once, positions and slots, one cos and one sin row per
        // token, the token's latent and rope rows written once.
        minimal_bytes: (t * (dl + dr) + dl) as u64 * BF16
            + 8 * t as u64
            + 2 * (t * dr / 2 * 4) as u64
            + (t * (dl + dr)) as u64 * BF16,
        minimal_macs: 0,
        launch: Box::new(move || {
            let inputs = MlaCacheWriteInputs {
                kv: &kv,
                norm_weight: &norm_weight,
                positions: &positions,
                cos: &cos,
                sin: &sin,
                slot_mapping: &slots,
            };
            Ok(
                launch::mla_cache_write(&lib, &s1, inputs, &mut latent, &mut rope, shape, 1e-6)?
                    .symbol,
            )
        }),
    })
}

/// MLA decode (one query token) of `decode_batch` sequences of `decode_ctx` cached tokens each, the
/// sequences' blocks interleaved in the cache.
pub fn decode_case(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    sh: &Shapes,
) -> Result<KernelCase, CaseError> {
    let (batch, ctx, heads) = (sh.decode_batch, sh.decode_ctx, sh.heads);
    let (dl, dr, bs) = (sh.latent_dim, sh.rope_dim, sh.block_size);
    let per_seq = ctx.div_ceil(bs);
    let blocks = batch * per_seq;
    let table: Vec<i32> = (0..batch)
        .flat_map(|b| (0..per_seq).map(move |k| (k * batch + b) as i32))
        .collect();
    let lens = vec![ctx; batch];
    let shape = MlaPlanShape {
        query_rows: heads as u32,
        latent_dim: dl as u32,
        rope_dim: dr as u32,
        dtype: KernelDtype::Bf16,
    };
    let plan = MlaDecodePlan::for_shape(&lens, shape, lib.hardware().cube.cores)?;
    let rows = batch * heads;
    let q_nope = bf16s(s, rows * dl, 1, 1.0)?;
    let q_rope = bf16s(s, rows * dr, 2, 1.0)?;
    let latent = bf16s(s, blocks * bs * dl, 3, 1.0)?;
    let rope = bf16s(s, blocks * bs * dr, 4, 1.0)?;
    let table = s.upload(&table)?;
    let lens = s.upload(&lens.iter().map(|&l| l as i32).collect::<Vec<_>>())?;
    let words = s.upload(plan.words())?;
    let (mut o, mut lse) = (alloc::<bf16>(s, rows * dl)?, alloc::<f32>(s, rows)?);
    let shape = MlaDecodeShape {
        batch,
        s_q: 1,
        heads,
        latent_dim: dl,
        rope_dim: dr,
        block_size: bs,
        num_blocks: blocks,
        max_blocks: per_seq,
    };
    let rows = rows as u64;
    let (lib, s1) = (lib.clone(), s.clone());
    Ok(KernelCase {
        op: "mla_decode",
        shape: format!("B={batch} ctx={ctx} H={heads} S=1"),
        dtype: "bf16",
        // FlashMLA's minimum: the cache rows once, the queries once, the outputs (and lse) once.
        minimal_bytes: (batch * ctx * (dl + dr)) as u64 * BF16
            + rows * (dl + dr) as u64 * BF16
            + rows * dl as u64 * BF16
            + rows * 4,
        minimal_macs: (batch * ctx * heads * (dl + dr + dl)) as u64,
        launch: Box::new(move || {
            let inputs = MlaDecodeInputs {
                q_nope: &q_nope,
                q_rope: &q_rope,
                latent: &latent,
                rope: &rope,
                block_table: &table,
                seq_lens: &lens,
                plan: &plan,
                plan_words: &words,
            };
            let scale = 1.0 / ((dl + dr) as f32).sqrt();
            Ok(launch::mla_decode(&lib, &s1, inputs, &mut o, &mut lse, shape, scale)?.symbol)
        }),
    })
}

/// An element type of the prefill cases, made from the bench's f32 values.
pub trait BenchElem: KernelElem + Copy + 'static {
    const NAME: &'static str;
    fn from_f32(v: f32) -> Self;
}

impl BenchElem for f32 {
    const NAME: &'static str = "f32";
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl BenchElem for half::f16 {
    const NAME: &'static str = "f16";
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

impl BenchElem for bf16 {
    const NAME: &'static str = "bf16";
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// DeepSeek-V3's expanded-form widths: `q`/`k` 192 (nope 128 ‖ rope 64), `v` 128.
const PREFILL_DQK: usize = 192;
const PREFILL_DV: usize = 128;

/// MLA prefill in the expanded form (`q`, `k` `[T, H, 192]`, `v` `[T, H, 128]`) of `prefill_tokens`
/// packed as two causal sequences of half each, in element type `E`.
pub fn prefill_case<E: BenchElem>(
    lib: &Arc<KernelLibrary>,
    s: &Stream,
    sh: &Shapes,
) -> Result<KernelCase, CaseError> {
    let (t, heads) = (sh.prefill_tokens, sh.heads);
    let (dqk, dv) = (PREFILL_DQK, PREFILL_DV);
    let half_t = t / 2;
    let cu = vec![0, half_t as i32, t as i32];
    let elems = |n: usize, seed: u32| -> Result<DeviceBuffer<E>, CaseError> {
        let v: Vec<E> = values(n, seed, 1.0).map(E::from_f32).collect();
        Ok(s.upload(&v)?)
    };
    let q = elems(t * heads * dqk, 70)?;
    let k = elems(t * heads * dqk, 71)?;
    let v = elems(t * heads * dv, 72)?;
    let cu_d = s.upload(&cu)?;
    let (mut o, mut lse) = (alloc::<E>(s, t * heads * dv)?, alloc::<f32>(s, t * heads)?);
    let (tt, h) = (t as u64, heads as u64);
    let dims = MlaPrefillDims {
        heads: h,
        tokens_q: tt,
        tokens_k: tt,
        dn: dqk as u64,
        dr: 0,
        dv: dv as u64,
        q_nope: MlaOperand::dense(tt, h, dqk as u64),
        q_rope: MlaOperand::default(),
        k_nope: MlaOperand::dense(tt, h, dqk as u64),
        k_rope: MlaOperand::default(),
        v: MlaOperand::dense(tt, h, dv as u64),
    };
    let elem = u64::from(E::DTYPE.size());
    // Each sequence of L tokens: L(L+1)/2 visible (query, key) pairs per head, each 192 + 128
    // multiply-adds (q·k and p·v).
    let pairs: u64 = cu
        .windows(2)
        .map(|w| {
            let l = (w[1] - w[0]) as u64;
            l * (l + 1) / 2
        })
        .sum();
    let (lib, s1) = (lib.clone(), s.clone());
    Ok(KernelCase {
        op: "mla_prefill",
        shape: format!("T={t} (2 seqs) H={heads} Dqk={dqk} Dv={dv}"),
        dtype: E::NAME,
        // q, k and v read once, out and lse written once, both cumulative-length lists read once.
        minimal_bytes: tt * h * (2 * dqk + 2 * dv) as u64 * elem + tt * h * 4 + 2 * 3 * 4,
        minimal_macs: h * pairs * (dqk + dv) as u64,
        launch: Box::new(move || {
            let inputs = MlaPrefillInputs {
                q_nope: &q,
                q_rope: &q,
                k_nope: &k,
                k_rope: &k,
                v: &v,
                cu_q: &cu_d,
                cu_k: &cu_d,
                host_cu_q: &cu,
                host_cu_k: &cu,
            };
            let scale = 1.0 / (dqk as f32).sqrt();
            Ok(launch::mla_prefill(&lib, &s1, inputs, dims, &mut o, &mut lse, scale)?.symbol)
        }),
    })
}

#[cfg(test)]
mod tests {
    /// Every bench operator is a `verify` operator: the two commands name each operator alike.
    #[test]
    fn the_bench_names_operators_as_verify_does() {
        for op in super::OPS {
            assert!(
                dsnpu_ops::conformance::runner::op_named(op).is_some(),
                "{op} is not an operator of dsnpu verify"
            );
        }
    }
}
