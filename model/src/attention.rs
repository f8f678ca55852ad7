//! Multi-head latent attention of one layer, composed from the operators.
//!
//! Both forms compute transformers' `DeepseekV3Attention`:
//! `q = q_b(norm(q_a(x)))` (or `q_proj(x)`), split per head into `q_nope` `[dn]` and `q_pe` `[dr]`;
//! `[latent | k_pe] = kv_a(x)`, `latent = norm(latent)` (eps 1e-6); rope on `q_pe` and the single shared `k_pe`;
//! softmax scale `qk_head_dim^-0.5 · mscale²`.
//! - Prefill ([`AttnPlan::Prefill`], expanded): `[k_nope | v] = kv_b(latent)` per head,
//!   keys `[k_nope | k_pe]`, causal attention within each packed sequence.
//! - Decode ([`AttnPlan::Decode`], absorbed): `q_nope` is multiplied by each head's `W_UK` so scores are taken
//!   directly against the cached latent (`q_nope·k_nope = (q_nope·W_UK)·latent`); the attention output, a
//!   latent, is multiplied by `W_UV`. Same numbers, no per-token key/value expansion.
//!
//! Every operator runs on the backend `be`. The caller guarantees the plan matches `x` (token counts,
//! positions, slots); operators check shapes anyway.

use crate::backend::ModelBackend;
use crate::config::{ModelConfig, LATENT_NORM_EPS};
use crate::error::Result;
use crate::weights::{AttentionWeights, QueryProj};
use dsnpu_ops::mla::PagedLatentCache;
use dsnpu_ops::rope::RopeTable;
use ndarray::{concatenate, s, Array, Array1, Array2, ArrayView2, Axis, Dimension, IntoDimension};

/// How the layer attends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttnPlan<'a> {
    /// Packed sequences `cu_seqlens` `[B+1]`, each attending causally to itself only.
    Prefill { cu_seqlens: &'a Array1<i32> },
    /// `batch × step` new tokens (batch-major) attending to the cache, which already holds them.
    Decode {
        block_table: &'a Array2<i32>,
        seq_lens: &'a Array1<i32>,
        batch: usize,
        step: usize,
    },
}

/// What one model step feeds every layer's attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnStep<'a> {
    pub positions: &'a Array1<i32>,
    /// Cache slots of the new tokens; `None` runs without a cache (prefill only).
    pub slots: Option<&'a Array1<i32>>,
    pub plan: AttnPlan<'a>,
}

/// Row-major copy of `x` with shape `dim` (same element count).
fn reshape<D: Dimension, E: IntoDimension>(x: Array<f32, D>, dim: E) -> Array<f32, E::Dim> {
    let x = x.as_standard_layout().into_owned();
    x.into_shape_with_order(dim)
        .expect("element count preserved by construction")
}

pub(crate) fn attention<B: ModelBackend>(
    be: &B,
    w: &AttentionWeights,
    cfg: &ModelConfig,
    table: &RopeTable,
    x: ArrayView2<f32>,
    step: AttnStep,
    cache: Option<&mut PagedLatentCache<f32>>,
) -> Result<Array2<f32>> {
    let t = x.nrows();
    let heads = cfg.num_attention_heads;
    let (dn, dr, dv, dl) = (
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        cfg.kv_lora_rank,
    );
    let scale = cfg.softmax_scale();

    let q = match &w.q {
        QueryProj::LowRank { a, a_norm, b } => {
            let qa = be.linear(x, a.view(), None)?;
            let qa = be.rms_norm(qa.view(), a_norm.view(), LATENT_NORM_EPS)?;
            be.linear(qa.view(), b.view(), None)?
        }
        QueryProj::Full(m) => be.linear(x, m.view(), None)?,
    };
    let q = reshape(q, (t, heads, dn + dr));
    let q_nope = q.slice(s![.., .., ..dn]);
    let q_pe = be.rope(
        q.slice(s![.., .., dn..]),
        step.positions.view(),
        table,
        cfg.rope_layout,
    )?;

    let kv_a = be.linear(x, w.kv_a.view(), None)?;
    let latent = be.rms_norm(
        kv_a.slice(s![.., ..dl]),
        w.kv_a_norm.view(),
        LATENT_NORM_EPS,
    )?;
    let k_pe = be.rope(
        kv_a.slice(s![.., dl..]).insert_axis(Axis(1)),
        step.positions.view(),
        table,
        cfg.rope_layout,
    )?;
    let k_pe = k_pe.index_axis_move(Axis(1), 0); // [T, dr]

    let mut cache = cache;
    if let (Some(c), Some(slots)) = (cache.as_deref_mut(), step.slots) {
        be.mla_cache_write(c, latent.view(), k_pe.view(), slots.view())?;
    }

    let out = match step.plan {
        AttnPlan::Prefill { cu_seqlens } => {
            let kv = reshape(
                be.linear(latent.view(), w.kv_b.view(), None)?,
                (t, heads, dn + dv),
            );
            let query = concatenate(Axis(2), &[q_nope, q_pe.view()]).expect("same leading dims");
            let k_pe_heads = k_pe.view().insert_axis(Axis(1));
            let k_pe_heads = k_pe_heads
                .broadcast((t, heads, dr))
                .expect("one rope key shared by all heads");
            let key = concatenate(Axis(2), &[kv.slice(s![.., .., ..dn]), k_pe_heads])
                .expect("same leading dims");
            let (out, _lse) = be.mla_prefill(
                query.view(),
                key.view(),
                kv.slice(s![.., .., dn..]),
                cu_seqlens.view(),
                scale,
            )?;
            reshape(out, (t, heads * dv))
        }
        AttnPlan::Decode {
            block_table,
            seq_lens,
            batch,
            step: s_len,
        } => {
            let cache = cache
                .ok_or_else(|| crate::error::invalid_input("absorbed decode needs a cache"))?;
            // [H, T, dn] · [H, dn, Dl] → [H, T, Dl]
            let q_abs = be.batched_matmul(q_nope.permuted_axes([1, 0, 2]), w.w_uk.view())?;
            let q_abs = reshape(q_abs.permuted_axes([1, 0, 2]), (batch, s_len, heads, dl));
            let q_pe = reshape(q_pe, (batch, s_len, heads, dr));
            let (out, _lse) = be.mla_decode(
                q_abs.view(),
                q_pe.view(),
                cache,
                block_table.view(),
                seq_lens.view(),
                scale,
            )?;
            // [H, T, Dl] · [H, Dl, dv] → [H, T, dv]
            let out = reshape(out, (t, heads, dl));
            let out = be.batched_matmul(out.view().permuted_axes([1, 0, 2]), w.w_uv_t.view())?;
            reshape(out.permuted_axes([1, 0, 2]), (t, heads * dv))
        }
    };
    Ok(be.linear(out.view(), w.o.view(), None)?)
}
