//! Entry points of the MLA kernels: the fused cache write (norm + rope + paged scatter of a step's new
//! tokens), the split-KV decode plan (made once per decode step, as FlashMLA's `get_mla_metadata`),
//! decode over the paged latent cache, and prefill in the expanded form over packed variable-length
//! sequences (a cached prefix given as extra keys).
//!
//! Prefill comes in two forms: [`dsnpu_mla_prefill`] on expanded `q`/`k`/`v`, and
//! [`dsnpu_mla_prefill_cached`] straight from the paged latent cache (chunked prefill: the keys' rows
//! gathered by slot, up-projected with `kv_b_proj` into a workspace, then the same kernel).

use std::ffi::c_void;

use dsnpu_kernels::launch::KernelElem;
use dsnpu_kernels::launch::{
    self, MlaCacheInputs, MlaCacheShape, MlaCacheWriteInputs, MlaCacheWriteShape, MlaDecodeInputs,
    MlaDecodeShape, MlaPrefillInputs,
};
use dsnpu_kernels::{MlaDecodePlan, MlaOperand, MlaPlanShape, MlaPrefillDims, RopeLayout};
use dsnpu_runtime::DeviceBuffer;

use crate::args::{code, device_tensors, kernel, product, size, with_dtype};
use crate::context::{context, DsnpuContext};
use crate::error::{guard, CapiError, Result};
use crate::{DSNPU_ROPE_HALF_SPLIT, DSNPU_ROPE_INTERLEAVED};

/// The fused MLA cache write (DeepSeek-V3's `kv_a_layernorm`, rope of `k_pe` and the paged-cache
/// scatter in one launch). For each token `t` of `tokens` with `slot = slot_mapping[t]` not -1:
/// `latent_cache[slot, :] = kv[t, :latent_dim] / sqrt(mean(kv[t, :latent_dim]²) + eps) *
/// norm_weight`, and `rope_cache[slot, :]` = `kv[t, latent_dim:]` rotated at `positions[t]` with the
/// f32 tables `cos`/`sin` (pairs as in [`crate::dense::dsnpu_rope`] by `layout`). Arithmetic in f32,
/// each result rounded to `T` once. Rows of other slots are left as they are; a slot of -1 skips its
/// token.
///
/// `kv`: `T [tokens, latent_dim + rope_dim]` (the `kv_a_proj_with_mqa` output); `norm_weight`: `T
/// [latent_dim]`; `positions`, `slot_mapping`: `int32 [tokens]`; `cos`, `sin`: `float [table_rows,
/// rope_dim / 2]`; `latent_cache`: `T [num_slots, latent_dim]` and `rope_cache`: `T [num_slots,
/// rope_dim]` (`num_slots = num_blocks * block_size` of the paged cache). Validated: pointers, sizes,
/// overlap, the layout code, the shape (`rope_dim` even, widths the kernel supports). Not validated
/// (device data): slots in `-1..num_slots` without repeats and positions in `0..table_rows`; on the
/// simulator an entry outside faults the launch (reported by the stream), on an NPU it reaches
/// unspecified memory.
///
/// # Safety
/// `ctx` is a live context; `stream` a live stream of its device (see the crate docs); each pointer
/// addresses device memory of the size given above, valid until the stream has run the kernel.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_mla_cache_write(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    kv: *const c_void,
    norm_weight: *const c_void,
    positions: *const c_void,
    cos: *const c_void,
    sin: *const c_void,
    slot_mapping: *const c_void,
    latent_cache: *mut c_void,
    rope_cache: *mut c_void,
    tokens: i64,
    latent_dim: i64,
    rope_dim: i64,
    num_slots: i64,
    table_rows: i64,
    layout: i32,
    eps: f32,
) -> i32 {
    const F: &str = "dsnpu_mla_cache_write";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let layout = match code(
            F,
            "rope layout",
            layout,
            &[DSNPU_ROPE_INTERLEAVED, DSNPU_ROPE_HALF_SPLIT],
        )? {
            DSNPU_ROPE_INTERLEAVED => RopeLayout::Interleaved,
            _ => RopeLayout::HalfSplit,
        };
        let shape = MlaCacheWriteShape {
            tokens: size(F, "tokens", tokens)?,
            latent_dim: size(F, "latent_dim", latent_dim)?,
            rope_dim: size(F, "rope_dim", rope_dim)?,
            num_slots: size(F, "num_slots", num_slots)?,
            table_rows: size(F, "table_rows", table_rows)?,
            layout,
        };
        let (t, dl, dr) = (shape.tokens, shape.latent_dim, shape.rope_dim);
        let width = dl.checked_add(dr).ok_or_else(|| CapiError::Invalid {
            func: F,
            reason: "latent_dim + rope_dim overflows".into(),
        })?;
        let nkv = product(F, "tokens * (latent_dim + rope_dim)", &[t, width])?;
        let table = product(F, "table_rows * rope_dim / 2", &[shape.table_rows, dr / 2])?;
        let nl = product(F, "num_slots * latent_dim", &[shape.num_slots, dl])?;
        let nr = product(F, "num_slots * rope_dim", &[shape.num_slots, dr])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input kv: T [nkv],
                input norm_weight: T [dl],
                input positions: i32 [t],
                input cos: f32 [table],
                input sin: f32 [table],
                input slot_mapping: i32 [t],
                output latent_cache: T [nl],
                output rope_cache: T [nr],
            );
            let inputs = MlaCacheWriteInputs {
                kv: &kv,
                norm_weight: &norm_weight,
                positions: &positions,
                cos: &cos,
                sin: &sin,
                slot_mapping: &slot_mapping,
            };
            launch::mla_cache_write(ctx.lib(), &s, inputs, &mut latent_cache, &mut rope_cache, shape, eps)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// A split-KV decode plan: how the visible keys of every sequence of a batch are cut into chunks so
/// that every core has work (made on the host from the sequence lengths, its words on the device).
/// Opaque to C; one plan serves every layer of a decode step with those lengths.
pub struct DsnpuMlaDecodePlan {
    plan: MlaDecodePlan,
    words: DeviceBuffer<i32>,
}

/// Plans a decode step from the host copy of `seq_lens` (`int32 [batch]`, cached tokens per
/// sequence including the new ones) and stores the plan in `*out` (NULL when it fails). The plan's
/// words are copied to the device on `stream` (the call returns once they are there). Free it with
/// [`dsnpu_mla_decode_plan_destroy`]. This plan knows only the lengths; when the query shape is
/// known, [`dsnpu_mla_decode_plan_create_for_shape`] plans better (how finely to split each
/// sequence's keys depends on the query rows and widths). Its chunks (about the total length over
/// the cube cores) can be longer than the kernel's cube core holds in L1 for the shape decoded
/// (416 positions at 16 heads in bf16, fewer with more heads or f32): [`dsnpu_mla_decode`] then
/// fails with an error saying so.
///
/// # Safety
/// `ctx` is a live context and `stream` a live stream of its device; `host_seq_lens` is null (an
/// error) or valid for reading `batch` values; `out` is null (an error) or valid for writing a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_mla_decode_plan_create(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    host_seq_lens: *const i32,
    batch: i64,
    out: *mut *mut DsnpuMlaDecodePlan,
) -> i32 {
    const F: &str = "dsnpu_mla_decode_plan_create";
    guard(F, || {
        // SAFETY: writable if non-null (the caller's contract).
        unsafe { crate::args::clear_out(F, out) }?;
        // SAFETY: the caller's contract.
        unsafe {
            make_plan(F, ctx, stream, host_seq_lens, batch, out, |lens, cores| {
                MlaDecodePlan::new(lens, cores)
            })
        }
    })
}

/// [`dsnpu_mla_decode_plan_create`] for the decode calls' query shape: `dtype`, `s_q` query tokens of
/// `heads` heads per sequence, `latent_dim` and `rope_dim` (as they will be passed to
/// [`dsnpu_mla_decode`]). The split of each sequence's keys weighs the partial results' traffic
/// against keeping every core busy for that shape (`MlaDecodePlan::for_shape`, what the Rust engine
/// uses), within what the kernel holds in L1 for it. A shape with more query rows, wider rows or a
/// wider dtype than the plan was made for may not fit its chunks: [`dsnpu_mla_decode`] then fails
/// with an error saying so (results are never wrong).
///
/// # Safety
/// As for [`dsnpu_mla_decode_plan_create`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_mla_decode_plan_create_for_shape(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    host_seq_lens: *const i32,
    batch: i64,
    dtype: i32,
    s_q: i64,
    heads: i64,
    latent_dim: i64,
    rope_dim: i64,
    out: *mut *mut DsnpuMlaDecodePlan,
) -> i32 {
    const F: &str = "dsnpu_mla_decode_plan_create_for_shape";
    guard(F, || {
        // SAFETY: writable if non-null (the caller's contract).
        unsafe { crate::args::clear_out(F, out) }?;
        let rows = product(
            F,
            "s_q * heads",
            &[size(F, "s_q", s_q)?, size(F, "heads", heads)?],
        )?;
        let u32_of = |name: &'static str, v: usize| {
            u32::try_from(v).map_err(|_| CapiError::Invalid {
                func: F,
                reason: format!("`{name}` is {v}, more than the kernel's 32-bit fields"),
            })
        };
        let shape = MlaPlanShape {
            query_rows: u32_of("s_q * heads", rows)?,
            latent_dim: u32_of("latent_dim", size(F, "latent_dim", latent_dim)?)?,
            rope_dim: u32_of("rope_dim", size(F, "rope_dim", rope_dim)?)?,
            dtype: with_dtype!(F, dtype, T => Ok(<T as KernelElem>::DTYPE))?,
        };
        // SAFETY: the caller's contract.
        unsafe {
            make_plan(F, ctx, stream, host_seq_lens, batch, out, |lens, cores| {
                MlaDecodePlan::for_shape(lens, shape, cores)
            })
        }
    })
}

/// The checks and the upload both plan constructors share; `plan` makes the plan from the lengths
/// and the cube core count.
///
/// # Safety
/// As for [`dsnpu_mla_decode_plan_create`].
unsafe fn make_plan(
    func: &'static str,
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    host_seq_lens: *const i32,
    batch: i64,
    out: *mut *mut DsnpuMlaDecodePlan,
    plan: impl FnOnce(&[usize], u32) -> dsnpu_kernels::Result<MlaDecodePlan>,
) -> Result<()> {
    // SAFETY: the caller's contract.
    let ctx = unsafe { context(func, ctx) }?;
    let batch = size(func, "batch", batch)?;
    // SAFETY: valid for `batch` reads (the caller's contract); the rest is checked there.
    let lens = unsafe { crate::args::host_slice(func, "host_seq_lens", host_seq_lens, batch) }?;
    let lens = lens
        .iter()
        .map(|&l| {
            usize::try_from(l).map_err(|_| CapiError::Invalid {
                func,
                reason: format!("a sequence length is negative ({l})"),
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let plan = plan(&lens, ctx.lib().hardware().cube.cores).map_err(kernel(func))?;
    let s = ctx.stream(func, stream)?;
    let runtime = |source| CapiError::Runtime { func, source };
    let mut words = s.alloc::<i32>(plan.words().len()).map_err(runtime)?;
    words.copy_from_host(plan.words()).map_err(runtime)?;
    let boxed = crate::handles::register(DsnpuMlaDecodePlan { plan, words });
    // SAFETY: `out` is non-null and aligned (checked by both constructors' `clear_out` first), valid
    // for writing (the caller's contract).
    unsafe { out.write(boxed) };
    Ok(())
}

/// Frees a plan made by [`dsnpu_mla_decode_plan_create`] (null is a no-op). The launches that use it
/// must have been enqueued (they hold the device words until they ran). A misaligned pointer (no plan
/// is) or a plan destroyed already is not freed: [`dsnpu_last_error`](crate::dsnpu_last_error) says
/// so. A destroyed plan passed to [`dsnpu_mla_decode`] is `DSNPU_STATUS_INVALID_ARGUMENT`, unless a
/// later create got the same address.
///
/// # Safety
/// `plan` is null or a plan from [`dsnpu_mla_decode_plan_create`].
#[no_mangle]
pub unsafe extern "C" fn dsnpu_mla_decode_plan_destroy(plan: *mut DsnpuMlaDecodePlan) {
    const F: &str = "dsnpu_mla_decode_plan_destroy";
    // No status to return (the signature predates it): the outcome is the last error's.
    guard(F, || {
        if !plan.is_null() {
            // Refused rather than handed to the allocator, as the other destroy functions do.
            crate::args::host_ptr(F, "plan", plan)?;
            // SAFETY: a live one came from a plan create; no launch is still being enqueued with
            // it (the contract). A destroyed one is refused.
            drop(unsafe { crate::handles::take(F, "plan", "plan", plan) }?);
        }
        Ok(())
    });
}

/// MLA decode (absorbed, DeepSeek-V3's decode path) over a paged latent cache. For each sequence `b`
/// of `batch`, query token `s` of `s_q` and head `h`: scores `scale · (q_nope · latent_j + q_rope ·
/// rope_j)` over the sequence's cached positions `j < seq_lens[b] - s_q + 1 + s` (causal within the
/// `s_q` new tokens, which are the sequence's last), softmax in f32, `out = Σ p_j latent_j` and
/// `lse = log Σ exp(score_j)`. Position `j` lives in block `block_table[b, j / block_size]`, row
/// `j % block_size`.
///
/// `q_nope`: `T [batch, s_q, heads, latent_dim]`; `q_rope`: `T [batch, s_q, heads, rope_dim]`;
/// `latent`: `T [num_blocks, block_size, latent_dim]`; `rope`: `T [num_blocks, block_size,
/// rope_dim]`; `block_table`: `int32 [batch, max_blocks]`; `plan`: from
/// [`dsnpu_mla_decode_plan_create`] with the host copy of the same `seq_lens` (the kernel clamps each
/// task to the plan's chunk); `seq_lens`: `int32 [batch]` (each in
/// `s_q..=max_blocks * block_size`, and block ids in `0..num_blocks`: not validated); `out`: `T [batch,
/// s_q, heads, latent_dim]`; `lse`: `float [batch, heads, s_q]`.
///
/// # Safety
/// `ctx` is a live context; `stream` a live stream of its device (see the crate docs); each pointer
/// addresses device memory of the size given above, valid until the stream has run the kernel.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_mla_decode(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    q_nope: *const c_void,
    q_rope: *const c_void,
    latent: *const c_void,
    rope: *const c_void,
    block_table: *const c_void,
    seq_lens: *const c_void,
    plan: *const DsnpuMlaDecodePlan,
    out: *mut c_void,
    lse: *mut c_void,
    batch: i64,
    s_q: i64,
    heads: i64,
    latent_dim: i64,
    rope_dim: i64,
    block_size: i64,
    num_blocks: i64,
    max_blocks: i64,
    scale: f32,
) -> i32 {
    const F: &str = "dsnpu_mla_decode";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        crate::args::host_ptr(F, "plan", plan)?;
        crate::handles::check(F, "plan", "plan", plan)?;
        // SAFETY: non-null, aligned and live (checked above), not being destroyed (the contract).
        let plan = unsafe { &*plan };
        // Before the plan's batch is compared: a negative one is named as such.
        size(F, "batch", batch)?;
        if plan.plan.batch() as i64 != batch {
            return Err(CapiError::Invalid {
                func: F,
                reason: format!(
                    "the plan is for {} sequences, not {batch}",
                    plan.plan.batch()
                ),
            });
        }
        let shape = MlaDecodeShape {
            batch: size(F, "batch", batch)?,
            s_q: size(F, "s_q", s_q)?,
            heads: size(F, "heads", heads)?,
            latent_dim: size(F, "latent_dim", latent_dim)?,
            rope_dim: size(F, "rope_dim", rope_dim)?,
            block_size: size(F, "block_size", block_size)?,
            num_blocks: size(F, "num_blocks", num_blocks)?,
            max_blocks: size(F, "max_blocks", max_blocks)?,
        };
        let rows = product(
            F,
            "batch * s_q * heads",
            &[shape.batch, shape.s_q, shape.heads],
        )?;
        let (nq, rq) = (
            product(F, "rows * latent_dim", &[rows, shape.latent_dim])?,
            product(F, "rows * rope_dim", &[rows, shape.rope_dim])?,
        );
        let slots = product(
            F,
            "num_blocks * block_size",
            &[shape.num_blocks, shape.block_size],
        )?;
        let (nl, nr) = (
            product(F, "slots * latent_dim", &[slots, shape.latent_dim])?,
            product(F, "slots * rope_dim", &[slots, shape.rope_dim])?,
        );
        let nt = product(F, "batch * max_blocks", &[shape.batch, shape.max_blocks])?;
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input q_nope: T [nq],
                input q_rope: T [rq],
                input latent: T [nl],
                input rope: T [nr],
                input block_table: i32 [nt],
                input seq_lens: i32 [shape.batch],
                output out: T [nq],
                output lse: f32 [rows],
            );
            let inputs = MlaDecodeInputs {
                q_nope: &q_nope,
                q_rope: &q_rope,
                latent: &latent,
                rope: &rope,
                block_table: &block_table,
                seq_lens: &seq_lens,
                plan: &plan.plan,
                plan_words: &plan.words,
            };
            launch::mla_decode(ctx.lib(), &s, inputs, &mut out, &mut lse, shape, scale).map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// MLA prefill in the expanded form (DeepSeek-V3's prefill path, flash-attention's varlen layout):
/// causal attention over packed variable-length sequences, each with an optional cached prefix.
/// Sequence `b` owns the queries `cu_q[b] .. cu_q[b+1]` of `q` and the keys `cu_k[b] .. cu_k[b+1]` of
/// `k` and `v`: `Lk ≥ Lq` keys for `Lq` queries, the first `Lk - Lq` its cached prefix (seen by every
/// query), the last `Lq` the queries' own tokens (seen causally: query `i` sees keys `j ≤ Lk - Lq + i`,
/// flash-attention's bottom-right alignment). Without a prefix pass the same arrays for `cu_q` and
/// `cu_k` (and `tokens_k = tokens_q`). For each query `t` and head `h`: scores `scale · q[t,h] · k[j,h]`,
/// softmax in f32, `out[t,h] = Σ_j p_j v[j,h]` rounded once to `T`, `lse[h,t] = ln Σ_j
/// exp(score_j)`.
///
/// `q`: `T [tokens_q, heads, dqk]`; `k`: `T [tokens_k, heads, dqk]`; `v`: `T [tokens_k, heads, dv]`
/// (DeepSeek-V3: `dqk = 192` = nope 128 ‖ rope 64, `dv = 128`; other widths the kernel's tiling takes
/// work too); `cu_q`, `cu_k`: `int32 [batch + 1]` on the device; `host_cu_q`, `host_cu_k`: the same
/// values in host memory (the kernel's tiling is computed from them; the call does not keep them);
/// `out`: `T [tokens_q, heads, dv]`; `lse`: `float [heads, tokens_q]`.
///
/// Validated: pointers, sizes, overlap, the dtype; `heads`, `dqk`, `dv` ≥ 1 and `batch` ≥ 1; a finite
/// `scale`; the host copies start at 0, never decrease, end at `tokens_q` / `tokens_k`, and give every
/// sequence at least as many keys as queries. Not validated: that the device copies equal the host
/// copies (the kernel clamps what it reads to the token counts, so a mismatch misplaces work inside
/// `out` and `lse` only). With `tokens_q = 0` nothing is queued.
///
/// # Safety
/// `ctx` is a live context; `stream` a live stream of its device (see the crate docs); each device
/// pointer addresses device memory of the size given above, valid until the stream has run the
/// kernel; `host_cu_q` and `host_cu_k` are null (an error) or valid for reading `batch + 1` values
/// during the call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_mla_prefill(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    q: *const c_void,
    k: *const c_void,
    v: *const c_void,
    cu_q: *const c_void,
    cu_k: *const c_void,
    host_cu_q: *const i32,
    host_cu_k: *const i32,
    out: *mut c_void,
    lse: *mut c_void,
    batch: i64,
    tokens_q: i64,
    tokens_k: i64,
    heads: i64,
    dqk: i64,
    dv: i64,
    scale: f32,
) -> i32 {
    const F: &str = "dsnpu_mla_prefill";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let batch = size(F, "batch", batch)?;
        let (tq, tk) = (
            size(F, "tokens_q", tokens_q)?,
            size(F, "tokens_k", tokens_k)?,
        );
        let (h, dqk, dv) = (
            size(F, "heads", heads)?,
            size(F, "dqk", dqk)?,
            size(F, "dv", dv)?,
        );
        for (name, value) in [("batch", batch), ("heads", h), ("dqk", dqk), ("dv", dv)] {
            if value == 0 {
                return Err(CapiError::Invalid {
                    func: F,
                    reason: format!("`{name}` is 0, must be >= 1"),
                });
            }
        }
        let entries = batch.checked_add(1).ok_or_else(|| CapiError::Invalid {
            func: F,
            reason: "batch + 1 overflows".into(),
        })?;
        let host_cu = |name: &'static str, p: *const i32| -> Result<Vec<i32>> {
            // SAFETY: valid for `batch + 1` reads (the caller's contract); the rest is checked there.
            Ok(unsafe { crate::args::host_slice(F, name, p, entries) }?.to_vec())
        };
        let (hq, hk) = (
            host_cu("host_cu_q", host_cu_q)?,
            host_cu("host_cu_k", host_cu_k)?,
        );
        let nq = product(F, "tokens_q * heads * dqk", &[tq, h, dqk])?;
        let nk = product(F, "tokens_k * heads * dqk", &[tk, h, dqk])?;
        let nv = product(F, "tokens_k * heads * dv", &[tk, h, dv])?;
        let no = product(F, "tokens_q * heads * dv", &[tq, h, dv])?;
        let rows = product(F, "tokens_q * heads", &[tq, h])?;
        // The dims' fields are u64; usize is no wider on the targets dsnpu builds for.
        let (t64, k64, h64) = (tq as u64, tk as u64, h as u64);
        let dims = MlaPrefillDims {
            heads: h64,
            tokens_q: t64,
            tokens_k: k64,
            dn: dqk as u64,
            dr: 0,
            dv: dv as u64,
            q_nope: MlaOperand::dense(t64, h64, dqk as u64),
            q_rope: MlaOperand::default(),
            k_nope: MlaOperand::dense(k64, h64, dqk as u64),
            k_rope: MlaOperand::default(),
            v: MlaOperand::dense(k64, h64, dv as u64),
        };
        with_dtype!(F, dtype, T => {
            device_tensors!(F, ctx, stream => s;
                input q: T [nq],
                input k: T [nk],
                input v: T [nv],
                input cu_q: i32 [entries],
                input cu_k: i32 [entries],
                output out: T [no],
                output lse: f32 [rows],
            );
            if tq == 0 {
                // The tiling takes no empty pack; check the lengths as it would, then queue nothing.
                check_empty_pack(F, &hq, &hk, tk)?;
                return Ok(());
            }
            let inputs = MlaPrefillInputs {
                q_nope: &q,
                q_rope: &q,
                k_nope: &k,
                k_rope: &k,
                v: &v,
                cu_q: &cu_q,
                cu_k: &cu_k,
                host_cu_q: &hq,
                host_cu_k: &hk,
            };
            launch::mla_prefill(ctx.lib(), &s, inputs, dims, &mut out, &mut lse, scale).map_err(kernel(F))?;
            Ok(())
        })
    })
}

/// The checks of a pack of no queries (which the kernel's tiling does not take): `host_cu_q` all 0 and
/// `host_cu_k` non-decreasing from 0 to `tokens_k`.
fn check_empty_pack(func: &'static str, cu_q: &[i32], cu_k: &[i32], tokens_k: usize) -> Result<()> {
    let bad = |reason: String| CapiError::Invalid { func, reason };
    if cu_q.iter().any(|&c| c != 0) {
        return Err(bad("host_cu_q must be all 0 when tokens_q is 0".into()));
    }
    if cu_k.first() != Some(&0)
        || cu_k.windows(2).any(|w| w[1] < w[0])
        || cu_k.last().map(|&c| c as i64) != Some(tokens_k as i64)
    {
        return Err(bad(format!(
            "host_cu_k must rise from 0 to tokens_k = {tokens_k}"
        )));
    }
    Ok(())
}

/// A copy of the host list `p` of `len` values, or a null-pointer error naming `arg`.
///
/// # Safety
/// `p` is null or valid for reading `len` values.
unsafe fn host_list(
    func: &'static str,
    arg: &'static str,
    p: *const i32,
    len: usize,
) -> Result<Vec<i32>> {
    // SAFETY: valid for `len` reads (this function's contract); the rest is checked there.
    Ok(unsafe { crate::args::host_slice(func, arg, p, len) }?.to_vec())
}

/// Chunked MLA prefill straight from the paged latent cache (vLLM's chunked prefill / prefix reuse):
/// the new tokens of each sequence attend to its cached prefix and, causally, to each other, with every
/// key — prefix and new tokens alike, all already written to the cache by
/// [`dsnpu_mla_cache_write`] — read from the cache and expanded per head with `kv_b_proj`:
/// `k = [W_UK,h · latent ‖ rope]`, `v = W_UV,h · latent` (f32 sums rounded to `T`), then the prefill
/// of [`dsnpu_mla_prefill`] with the queries `q = [q_nope ‖ q_rope]` (rope already applied).
///
/// Sequence `b` owns the queries `cu_q[b] .. cu_q[b+1]` and the keys `cu_k[b] .. cu_k[b+1]` (its
/// `seq_lens[b]` cached positions, the prefix first); key `j` of the pack lives in cache slot
/// `key_slots[j]`, which for position `p` of sequence `b` is `block_table[b, p / block_size] *
/// block_size + p % block_size` (the block table resolved by the caller, as a slot mapping). Query `i`
/// of `Lq` sees the sequence's keys `≤ Lk - Lq + i`.
///
/// `q`: `T [tokens_q, heads, dn + dr]`; `latent`: `T [num_slots, latent_dim]` and `rope`: `T
/// [num_slots, dr]` (the cache of [`dsnpu_mla_cache_write`], `num_slots = num_blocks * block_size`);
/// `kv_b`: `T [heads * (dn + dv), latent_dim]` (kv_b_proj as stored: per head `dn` key rows then `dv`
/// value rows); `key_slots`: `int32 [tokens_k]`; `cu_q`, `cu_k`: `int32 [batch + 1]` on the device and
/// `host_cu_q`, `host_cu_k` the same values in host memory; `out`: `T [tokens_q, heads, dv]`; `lse`:
/// `float [heads, tokens_q]`. DeepSeek-V3: `dn = 128`, `dr = 64`, `dv = 128`, `latent_dim = 512`.
///
/// Validated: pointers, sizes (the workspace's too), overlap, the dtype; `batch`, `heads`, `dn`,
/// `dv`, `latent_dim` ≥ 1, `tokens_k` ≥ 1; a finite `scale`; the host lists as for
/// [`dsnpu_mla_prefill`]. Not validated
/// (device data): the slots (each must be in `0..num_slots`; one outside faults the gather on the
/// simulator and reads unspecified memory on an NPU) and that the device lists equal the host lists.
/// Workspace from the context's pool: `tokens_k * (latent_dim + dr + heads * (dn + dv))` elements
/// (more than the device has free: `DSNPU_STATUS_OUT_OF_MEMORY`).
/// With `tokens_q = 0` nothing is queued.
///
/// # Safety
/// As [`dsnpu_mla_prefill`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dsnpu_mla_prefill_cached(
    ctx: *const DsnpuContext,
    stream: *mut c_void,
    dtype: i32,
    q: *const c_void,
    latent: *const c_void,
    rope: *const c_void,
    kv_b: *const c_void,
    key_slots: *const c_void,
    cu_q: *const c_void,
    cu_k: *const c_void,
    host_cu_q: *const i32,
    host_cu_k: *const i32,
    out: *mut c_void,
    lse: *mut c_void,
    batch: i64,
    tokens_q: i64,
    tokens_k: i64,
    heads: i64,
    dn: i64,
    dr: i64,
    dv: i64,
    latent_dim: i64,
    num_slots: i64,
    scale: f32,
) -> i32 {
    const F: &str = "dsnpu_mla_prefill_cached";
    guard(F, || {
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        let batch = size(F, "batch", batch)?;
        let (tq, tk) = (
            size(F, "tokens_q", tokens_q)?,
            size(F, "tokens_k", tokens_k)?,
        );
        let (h, dn, dr, dv) = (
            size(F, "heads", heads)?,
            size(F, "dn", dn)?,
            size(F, "dr", dr)?,
            size(F, "dv", dv)?,
        );
        let (dl, slots) = (
            size(F, "latent_dim", latent_dim)?,
            size(F, "num_slots", num_slots)?,
        );
        for (name, value) in [
            ("batch", batch),
            ("heads", h),
            ("dn", dn),
            ("dv", dv),
            ("latent_dim", dl),
            ("tokens_k", tk),
        ] {
            if value == 0 {
                return Err(CapiError::Invalid {
                    func: F,
                    reason: format!("`{name}` is 0, must be >= 1"),
                });
            }
        }
        let entries = batch.checked_add(1).ok_or_else(|| CapiError::Invalid {
            func: F,
            reason: "batch + 1 overflows".into(),
        })?;
        // SAFETY: null (an error) or valid for `batch + 1` reads (the caller's contract).
        let (hq, hk) = unsafe {
            (
                host_list(F, "host_cu_q", host_cu_q, entries)?,
                host_list(F, "host_cu_k", host_cu_k, entries)?,
            )
        };
        let width = dn.checked_add(dr).ok_or_else(|| CapiError::Invalid {
            func: F,
            reason: "dn + dr overflows".into(),
        })?;
        let kv_width = dn.checked_add(dv).ok_or_else(|| CapiError::Invalid {
            func: F,
            reason: "dn + dv overflows".into(),
        })?;
        let kv_rows = product(F, "heads * (dn + dv)", &[h, kv_width])?;
        let nq = product(F, "tokens_q * heads * (dn + dr)", &[tq, h, width])?;
        let nl = product(F, "num_slots * latent_dim", &[slots, dl])?;
        let nr = product(F, "num_slots * dr", &[slots, dr])?;
        let nw = product(F, "heads * (dn + dv) * latent_dim", &[kv_rows, dl])?;
        let no = product(F, "tokens_q * heads * dv", &[tq, h, dv])?;
        let rows = product(F, "tokens_q * heads", &[tq, h])?;
        // The launcher sizes its workspace (the gathered latent and rope rows, the expanded keys and
        // values) from these without checking.
        let key_width = [dl, dr, kv_rows]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
            .ok_or_else(|| CapiError::Invalid {
                func: F,
                reason: "latent_dim + dr + heads * (dn + dv) overflows".into(),
            })?;
        let workspace = product(
            F,
            "the workspace, tokens_k * (latent_dim + dr + heads * (dn + dv)) elements,",
            &[tk, key_width],
        )?;
        // Checked here, not only through `nq`: with no queries (`tokens_q` = 0) that product is 0
        // whatever the row width.
        let row = product(F, "heads * (dn + dr)", &[h, width])?;
        // The views' fields are u64; usize is no wider on the targets dsnpu builds for.
        let (tok, head) = (row as u64, width as u64);
        let shape = MlaCacheShape {
            heads: h,
            dn,
            dr,
            dv,
            latent_dim: dl,
            num_slots: slots,
            tokens_q: tq,
            q_nope: MlaOperand {
                tok,
                head,
                off: 0,
                len: nq as u64,
            },
            q_rope: MlaOperand {
                tok,
                head,
                off: dn as u64,
                len: nq as u64,
            },
        };
        with_dtype!(F, dtype, T => {
            product(F, "the workspace's bytes", &[workspace, std::mem::size_of::<T>()])?;
            device_tensors!(F, ctx, stream => s;
                input q: T [nq],
                input latent: T [nl],
                input rope: T [nr],
                input kv_b: T [nw],
                input key_slots: i32 [tk],
                input cu_q: i32 [entries],
                input cu_k: i32 [entries],
                output out: T [no],
                output lse: f32 [rows],
            );
            if tq == 0 {
                check_empty_pack(F, &hq, &hk, tk)?;
                return Ok(());
            }
            let inputs = MlaCacheInputs {
                q_nope: &q,
                q_rope: &q,
                latent: &latent,
                rope: &rope,
                kv_b: &kv_b,
                key_slots: &key_slots,
                cu_q: &cu_q,
                cu_k: &cu_k,
                host_cu_q: &hq,
                host_cu_k: &hk,
            };
            launch::mla_prefill_from_cache(ctx.lib(), &s, inputs, shape, &mut out, &mut lse, scale)
                .map_err(kernel(F))?;
            Ok(())
        })
    })
}
