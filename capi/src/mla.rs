//! Entry points of the MLA kernels: the fused cache write (norm + rope + paged scatter of a step's new
//! tokens), the split-KV decode plan (made once per decode step, as FlashMLA's `get_mla_metadata`) and
//! decode over the paged latent cache.
//!
//! Not here yet: prefill (no kernel yet).

use std::ffi::c_void;

use dsnpu_kernels::launch::{
    self, MlaCacheWriteInputs, MlaCacheWriteShape, MlaDecodeInputs, MlaDecodeShape,
};
use dsnpu_kernels::{MlaDecodePlan, RopeLayout};
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
/// sequence including the new ones) and stores the plan in `*out`. The plan's words are copied to
/// the device on `stream` (the call returns once they are there). Free it with
/// [`dsnpu_mla_decode_plan_destroy`].
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
        // SAFETY: the caller's contract.
        let ctx = unsafe { context(F, ctx) }?;
        if out.is_null() {
            return Err(CapiError::Null {
                func: F,
                arg: "out",
            });
        }
        if host_seq_lens.is_null() {
            return Err(CapiError::Null {
                func: F,
                arg: "host_seq_lens",
            });
        }
        let batch = size(F, "batch", batch)?;
        // SAFETY: non-null and valid for `batch` reads (the caller's contract).
        let lens = unsafe { std::slice::from_raw_parts(host_seq_lens, batch) };
        let lens = lens
            .iter()
            .map(|&l| {
                usize::try_from(l).map_err(|_| CapiError::Invalid {
                    func: F,
                    reason: format!("a sequence length is negative ({l})"),
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let plan = MlaDecodePlan::new(&lens, ctx.lib().hardware().cube.cores).map_err(kernel(F))?;
        let s = ctx.stream(F, stream)?;
        let runtime = |source| CapiError::Runtime { func: F, source };
        let mut words = s.alloc::<i32>(plan.words().len()).map_err(runtime)?;
        words.copy_from_host(plan.words()).map_err(runtime)?;
        let boxed = Box::new(DsnpuMlaDecodePlan { plan, words });
        // SAFETY: `out` is non-null and valid for writing (the caller's contract).
        unsafe { *out = Box::into_raw(boxed) };
        Ok(())
    })
}

/// Frees a plan made by [`dsnpu_mla_decode_plan_create`] (null is a no-op). The launches that use it
/// must have been enqueued (they hold the device words until they ran).
///
/// # Safety
/// `plan` is null or a plan from [`dsnpu_mla_decode_plan_create`] not freed before.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_mla_decode_plan_destroy(plan: *mut DsnpuMlaDecodePlan) {
    if !plan.is_null() {
        // SAFETY: made by Box::into_raw in dsnpu_mla_decode_plan_create and not freed before.
        drop(unsafe { Box::from_raw(plan) });
    }
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
        // SAFETY: null or a live plan (the caller's contract).
        let plan = unsafe { plan.as_ref() }.ok_or(CapiError::Null {
            func: F,
            arg: "plan",
        })?;
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
