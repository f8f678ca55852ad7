//! Entry points of the MLA kernels: decode over the paged latent cache.
//!
//! To add when their kernels merge (one entry point each, same conventions): the cache write
//! (`dsnpu_mla_cache_write`: latent and rope rows into their slots), the split-KV decode metadata
//! (`dsnpu_mla_decode_metadata`) and prefill (`dsnpu_mla_prefill`).

use std::ffi::c_void;

use dsnpu_kernels::launch::{self, MlaDecodeInputs, MlaDecodeShape};

use crate::args::{borrow, kernel, product, size, with_dtype, Check};
use crate::context::{context, DsnpuContext};
use crate::error::guard;

/// MLA decode (absorbed, DeepSeek-V3's decode path) over a paged latent cache. For each sequence `b`
/// of `batch`, query token `s` of `s_q` and head `h`: scores `scale · (q_nope · latent_j + q_rope ·
/// rope_j)` over the sequence's cached positions `j < seq_lens[b] - s_q + 1 + s` (causal within the
/// `s_q` new tokens, which are the sequence's last), softmax in f32, `out = Σ p_j latent_j` and
/// `lse = log Σ exp(score_j)`. Position `j` lives in block `block_table[b, j / block_size]`, row
/// `j % block_size`.
///
/// `q_nope`: `T [batch, s_q, heads, latent_dim]`; `q_rope`: `T [batch, s_q, heads, rope_dim]`;
/// `latent`: `T [num_blocks, block_size, latent_dim]`; `rope`: `T [num_blocks, block_size,
/// rope_dim]`; `block_table`: `int32 [batch, max_blocks]`; `seq_lens`: `int32 [batch]` (each in
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
            let mut c = Check::new(F);
            c.input::<T>("q_nope", q_nope, nq)?;
            c.input::<T>("q_rope", q_rope, rq)?;
            c.input::<T>("latent", latent, nl)?;
            c.input::<T>("rope", rope, nr)?;
            c.input::<i32>("block_table", block_table, nt)?;
            c.input::<i32>("seq_lens", seq_lens, shape.batch)?;
            c.output::<T>("out", out, nq)?;
            c.output::<f32>("lse", lse, rows)?;
            c.finish()?;
            let s = ctx.stream(F, stream)?;
            // SAFETY: sizes from the shape, outputs disjoint (checked), validity the caller's.
            let (qn, qr, lat, rp, bt, sl, mut ob, mut lb) = unsafe {
                (
                    borrow::<T>(F, &s, q_nope, nq)?,
                    borrow::<T>(F, &s, q_rope, rq)?,
                    borrow::<T>(F, &s, latent, nl)?,
                    borrow::<T>(F, &s, rope, nr)?,
                    borrow::<i32>(F, &s, block_table, nt)?,
                    borrow::<i32>(F, &s, seq_lens, shape.batch)?,
                    borrow::<T>(F, &s, out, nq)?,
                    borrow::<f32>(F, &s, lse, rows)?,
                )
            };
            let inputs = MlaDecodeInputs {
                q_nope: &qn,
                q_rope: &qr,
                latent: &lat,
                rope: &rp,
                block_table: &bt,
                seq_lens: &sl,
            };
            launch::mla_decode(ctx.lib(), &s, inputs, &mut ob, &mut lb, shape, scale).map_err(kernel(F))?;
            Ok(())
        })
    })
}
