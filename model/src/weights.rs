//! The model's weights in `f32`, read from a checkpoint under the Hugging Face hub names.
//!
//! # Contract
//! - Before anything is allocated, `num_hidden_layers` and `n_routed_experts` are checked against the layers
//!   and experts the checkpoint holds tensors for, counted from 0 without a gap (the config bounds every
//!   other size, see [`crate::config::MAX_ELEMENTS`]); the error names the field, its value and the
//!   checkpoint's count.
//! - Every tensor the configuration implies is read with the shape it implies; a missing or mis-shaped tensor
//!   fails with its full name. Tensors the model does not use (the multi-token-prediction layer at index
//!   `num_hidden_layers`, rotary caches, `weight_scale_inv` consumed by dequantization) are ignored.
//! - Weights are converted to `f32` on load (bf16/f16 exactly, FP8 dequantized), so the model computes in f32
//!   whatever the checkpoint's dtype. This is the reference precision; device backends choose their own.
//! - Load-time rearrangements, done once: `kv_b_proj` `[H·(dn+dv), Dl]` is also split into the per-head key
//!   up-projection `w_uk` `[H, dn, Dl]` (absorbed into the query at decode) and the transposed value
//!   up-projection `w_uv_t` `[H, Dl, dv]`; dense/shared MLP gate and up are stacked into one `[2I, hidden]`
//!   matrix (the `silu_mul` operator's layout); routed experts are stacked into `[E, I, hidden]` /
//!   `[E, hidden, I]`.

use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, ModelType};
use crate::error::{config_err, invalid_input, ModelError, Result};
use ndarray::{concatenate, Array1, Array2, Array3, Axis};
use std::collections::BTreeSet;

/// Query projection: low-rank with a norm in between, or one matrix.
#[derive(Debug, Clone)]
pub enum QueryProj {
    LowRank {
        a: Array2<f32>,
        a_norm: Array1<f32>,
        b: Array2<f32>,
    },
    Full(Array2<f32>),
}

#[derive(Debug, Clone)]
pub struct AttentionWeights {
    pub q: QueryProj,
    /// `[Dl + dr, hidden]`: the latent and the shared rope key.
    pub kv_a: Array2<f32>,
    pub kv_a_norm: Array1<f32>,
    /// `[H·(dn+dv), Dl]`, per head the key rows then the value rows (expanded form).
    pub kv_b: Array2<f32>,
    /// `[H, dn, Dl]`.
    pub w_uk: Array3<f32>,
    /// `[H, Dl, dv]`.
    pub w_uv_t: Array3<f32>,
    /// `[hidden, H·dv]`.
    pub o: Array2<f32>,
}

#[derive(Debug, Clone)]
pub struct MlpWeights {
    /// `[2I, hidden]`: gate rows then up rows.
    pub gate_up: Array2<f32>,
    /// `[hidden, I]`.
    pub down: Array2<f32>,
}

#[derive(Debug, Clone)]
pub struct MoeWeights {
    /// Router `[E, hidden]`.
    pub router: Array2<f32>,
    /// `e_score_correction_bias` `[E]` (V3 only).
    pub bias: Option<Array1<f32>>,
    /// `[E, I, hidden]`.
    pub gate: Array3<f32>,
    pub up: Array3<f32>,
    /// `[E, hidden, I]`.
    pub down: Array3<f32>,
    pub shared: MlpWeights,
}

#[derive(Debug, Clone)]
pub enum FfnWeights {
    Dense(MlpWeights),
    Moe(Box<MoeWeights>),
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub input_norm: Array1<f32>,
    pub attention: AttentionWeights,
    pub post_attention_norm: Array1<f32>,
    pub ffn: FfnWeights,
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// `[V, hidden]`.
    pub embed: Array2<f32>,
    pub layers: Vec<LayerWeights>,
    pub norm: Array1<f32>,
    /// `[V, hidden]`.
    pub lm_head: Array2<f32>,
}

impl ModelWeights {
    /// Read every weight of `cfg` from `ckpt`; `progress(done, total)` is called after each layer.
    pub fn load(
        cfg: &ModelConfig,
        ckpt: &Checkpoint,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        check_counts_against(cfg, ckpt)?;
        let total = cfg.num_hidden_layers + 2;
        let embed = ckpt.matrix("model.embed_tokens.weight", cfg.vocab_size, cfg.hidden_size)?;
        progress(1, total);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(load_layer(cfg, ckpt, i)?);
            progress(i + 2, total);
        }
        let norm = ckpt.vector("model.norm.weight", cfg.hidden_size)?;
        let lm_head = if cfg.tie_word_embeddings && !ckpt.contains("lm_head.weight") {
            embed.clone()
        } else {
            ckpt.matrix("lm_head.weight", cfg.vocab_size, cfg.hidden_size)?
        };
        progress(total, total);
        Ok(ModelWeights {
            embed,
            layers,
            norm,
            lm_head,
        })
    }
}

impl ModelWeights {
    /// Checks that these weights are what [`ModelWeights::load`] builds for `cfg`: one layer per
    /// `num_hidden_layers`, dense or MoE as `first_k_dense_replace` says, the query projection
    /// `q_lora_rank` implies, V3's correction bias, and every array's shape. A tensor of another shape
    /// is [`ModelError::TensorShape`] under its hub name (`w_uk`/`w_uv_t`, split from `kv_b_proj`,
    /// under that name with the part added); anything else is [`ModelError::InvalidInput`]. Weights
    /// built by hand and handed to [`crate::DeepseekV3::from_parts`] are checked so: the model indexes
    /// the cache by layer and reshapes by the config's sizes, and panicked on a mismatch.
    pub fn check_against(&self, cfg: &ModelConfig) -> Result<()> {
        let (h, v, heads) = (cfg.hidden_size, cfg.vocab_size, cfg.num_attention_heads);
        let (dn, dr, dv, dl) = (
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.v_head_dim,
            cfg.kv_lora_rank,
        );
        if cfg.rope.dim != dr {
            return Err(config_err(
                "qk_rope_head_dim",
                format!("{dr}, but the rope configuration rotates {}", cfg.rope.dim),
            ));
        }
        if self.layers.len() != cfg.num_hidden_layers {
            return Err(invalid_input(format!(
                "the weights hold {} layers, num_hidden_layers is {}",
                self.layers.len(),
                cfg.num_hidden_layers
            )));
        }
        // The config may not have been validated (its fields are public): sizes are computed checked.
        let size = |terms: &[usize], factor: usize| {
            terms
                .iter()
                .try_fold(0usize, |s, &t| s.checked_add(t))
                .and_then(|sum| sum.checked_mul(factor))
                .ok_or_else(|| invalid_input("the configuration's sizes overflow usize"))
        };
        let shape = |name: &str, got: &[usize], expected: &[usize]| {
            if got == expected {
                Ok(())
            } else {
                Err(ModelError::TensorShape {
                    name: name.to_string(),
                    got: got.to_vec(),
                    expected: expected.to_vec(),
                })
            }
        };
        let mlp = |p: &str, m: &MlpWeights, inter: usize| -> Result<()> {
            shape(
                &format!("{p}gate_proj.weight + up_proj.weight"),
                m.gate_up.shape(),
                &[size(&[inter], 2)?, h],
            )?;
            shape(&format!("{p}down_proj.weight"), m.down.shape(), &[h, inter])
        };
        shape("model.embed_tokens.weight", self.embed.shape(), &[v, h])?;
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}.");
            shape(
                &format!("{p}input_layernorm.weight"),
                l.input_norm.shape(),
                &[h],
            )?;
            let a = &l.attention;
            let sa = format!("{p}self_attn.");
            let q_out = size(&[dn, dr], heads)?;
            match (&a.q, cfg.q_lora_rank) {
                (QueryProj::LowRank { a, a_norm, b }, Some(r)) => {
                    shape(&format!("{sa}q_a_proj.weight"), a.shape(), &[r, h])?;
                    shape(&format!("{sa}q_a_layernorm.weight"), a_norm.shape(), &[r])?;
                    shape(&format!("{sa}q_b_proj.weight"), b.shape(), &[q_out, r])?;
                }
                (QueryProj::Full(q), None) => {
                    shape(&format!("{sa}q_proj.weight"), q.shape(), &[q_out, h])?
                }
                (_, r) => {
                    return Err(invalid_input(format!(
                        "layer {i}: the query projection is {}, but q_lora_rank is {}",
                        match &a.q {
                            QueryProj::LowRank { .. } => "low-rank",
                            QueryProj::Full(_) => "one matrix",
                        },
                        r.map_or("null".to_string(), |r| r.to_string())
                    )))
                }
            }
            let kv_b = format!("{sa}kv_b_proj.weight");
            shape(
                &format!("{sa}kv_a_proj_with_mqa.weight"),
                a.kv_a.shape(),
                &[size(&[dl, dr], 1)?, h],
            )?;
            shape(
                &format!("{sa}kv_a_layernorm.weight"),
                a.kv_a_norm.shape(),
                &[dl],
            )?;
            shape(&kv_b, a.kv_b.shape(), &[size(&[dn, dv], heads)?, dl])?;
            shape(&format!("{kv_b} (w_uk)"), a.w_uk.shape(), &[heads, dn, dl])?;
            shape(
                &format!("{kv_b} (w_uv_t)"),
                a.w_uv_t.shape(),
                &[heads, dl, dv],
            )?;
            shape(
                &format!("{sa}o_proj.weight"),
                a.o.shape(),
                &[h, size(&[dv], heads)?],
            )?;
            shape(
                &format!("{p}post_attention_layernorm.weight"),
                l.post_attention_norm.shape(),
                &[h],
            )?;
            let m = format!("{p}mlp.");
            match (&l.ffn, cfg.is_moe_layer(i)) {
                (FfnWeights::Dense(d), false) => mlp(&m, d, cfg.intermediate_size)?,
                (FfnWeights::Moe(moe), true) => {
                    let (e, inter) = (cfg.n_routed_experts, cfg.moe_intermediate_size);
                    shape(&format!("{m}gate.weight"), moe.router.shape(), &[e, h])?;
                    let bias = format!("{m}gate.e_score_correction_bias");
                    match (&moe.bias, cfg.model_type) {
                        (Some(b), ModelType::DeepseekV3) => shape(&bias, b.shape(), &[e])?,
                        (None, ModelType::DeepseekV2) => {}
                        (b, _) => {
                            return Err(invalid_input(format!(
                                "layer {i}: {} `{bias}`, but the model type is {:?}",
                                if b.is_some() { "a" } else { "no" },
                                cfg.model_type
                            )))
                        }
                    }
                    shape(
                        &format!("{m}experts.*.gate_proj.weight"),
                        moe.gate.shape(),
                        &[e, inter, h],
                    )?;
                    shape(
                        &format!("{m}experts.*.up_proj.weight"),
                        moe.up.shape(),
                        &[e, inter, h],
                    )?;
                    shape(
                        &format!("{m}experts.*.down_proj.weight"),
                        moe.down.shape(),
                        &[e, h, inter],
                    )?;
                    mlp(
                        &format!("{m}shared_experts."),
                        &moe.shared,
                        size(&[inter], cfg.n_shared_experts)?,
                    )?;
                }
                (_, moe) => {
                    return Err(invalid_input(format!(
                        "layer {i}: a {} MLP, but first_k_dense_replace {} makes it {}",
                        if moe { "dense" } else { "MoE" },
                        cfg.first_k_dense_replace,
                        if moe { "MoE" } else { "dense" }
                    )))
                }
            }
        }
        shape("model.norm.weight", self.norm.shape(), &[h])?;
        shape("lm_head.weight", self.lm_head.shape(), &[v, h])
    }
}

/// The counts the checkpoint bounds: `num_hidden_layers` by the layers it holds tensors for and
/// `n_routed_experts` by the experts it holds, so an overstated count fails here with both numbers instead
/// of on an allocation sized by it (or after reading every tensor up to the first missing one). A count is
/// the indices held from 0 without a gap, not the largest index named: one stray (even empty) tensor
/// named `model.layers.999999999999.x` must not let a config claim 10^12 layers, which every loader sizes
/// allocations by. Counted so, neither count exceeds the number of tensors the header lists.
pub(crate) fn check_counts_against(cfg: &ModelConfig, ckpt: &Checkpoint) -> Result<()> {
    let (mut layers, mut experts) = (BTreeSet::new(), BTreeSet::new());
    for name in ckpt.names() {
        let Some((layer, rest)) = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
        else {
            continue;
        };
        let Ok(layer) = layer.parse::<usize>() else {
            continue;
        };
        layers.insert(layer);
        let expert = rest
            .strip_prefix("mlp.experts.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(x, _)| x.parse::<usize>().ok());
        if let Some(x) = expert {
            experts.insert(x);
        }
    }
    // The first index not held (sorted and distinct: index i is held iff the i-th element is i).
    let held = |set: &BTreeSet<usize>| set.iter().enumerate().take_while(|(i, x)| i == *x).count();
    let (layers, experts) = (held(&layers), held(&experts));
    if cfg.num_hidden_layers > layers {
        return Err(config_err(
            "num_hidden_layers",
            format!(
                "{} exceeds the {layers} layers the checkpoint holds",
                cfg.num_hidden_layers
            ),
        ));
    }
    if cfg.first_k_dense_replace < cfg.num_hidden_layers && cfg.n_routed_experts > experts {
        return Err(config_err(
            "n_routed_experts",
            format!(
                "{} exceeds the {experts} routed experts the checkpoint holds",
                cfg.n_routed_experts
            ),
        ));
    }
    Ok(())
}

fn load_layer(cfg: &ModelConfig, ckpt: &Checkpoint, i: usize) -> Result<LayerWeights> {
    let p = format!("model.layers.{i}.");
    let h = cfg.hidden_size;
    Ok(LayerWeights {
        input_norm: ckpt.vector(&format!("{p}input_layernorm.weight"), h)?,
        attention: load_attention(cfg, ckpt, &format!("{p}self_attn."))?,
        post_attention_norm: ckpt.vector(&format!("{p}post_attention_layernorm.weight"), h)?,
        ffn: if cfg.is_moe_layer(i) {
            FfnWeights::Moe(Box::new(load_moe(cfg, ckpt, &format!("{p}mlp."))?))
        } else {
            FfnWeights::Dense(load_mlp(
                ckpt,
                &format!("{p}mlp."),
                h,
                cfg.intermediate_size,
            )?)
        },
    })
}

fn load_attention(cfg: &ModelConfig, ckpt: &Checkpoint, p: &str) -> Result<AttentionWeights> {
    let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    let (dn, dr, dv, dl) = (
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        cfg.kv_lora_rank,
    );
    let q_out = heads * (dn + dr);
    let q = match cfg.q_lora_rank {
        Some(r) => QueryProj::LowRank {
            a: ckpt.matrix(&format!("{p}q_a_proj.weight"), r, h)?,
            a_norm: ckpt.vector(&format!("{p}q_a_layernorm.weight"), r)?,
            b: ckpt.matrix(&format!("{p}q_b_proj.weight"), q_out, r)?,
        },
        None => QueryProj::Full(ckpt.matrix(&format!("{p}q_proj.weight"), q_out, h)?),
    };
    let kv_b = ckpt.matrix(&format!("{p}kv_b_proj.weight"), heads * (dn + dv), dl)?;
    let w_uk = Array3::from_shape_fn((heads, dn, dl), |(hd, j, c)| kv_b[[hd * (dn + dv) + j, c]]);
    let w_uv_t = Array3::from_shape_fn((heads, dl, dv), |(hd, c, j)| {
        kv_b[[hd * (dn + dv) + dn + j, c]]
    });
    Ok(AttentionWeights {
        q,
        kv_a: ckpt.matrix(&format!("{p}kv_a_proj_with_mqa.weight"), dl + dr, h)?,
        kv_a_norm: ckpt.vector(&format!("{p}kv_a_layernorm.weight"), dl)?,
        kv_b,
        w_uk,
        w_uv_t,
        o: ckpt.matrix(&format!("{p}o_proj.weight"), h, heads * dv)?,
    })
}

fn load_mlp(ckpt: &Checkpoint, p: &str, hidden: usize, inter: usize) -> Result<MlpWeights> {
    let gate = ckpt.matrix(&format!("{p}gate_proj.weight"), inter, hidden)?;
    let up = ckpt.matrix(&format!("{p}up_proj.weight"), inter, hidden)?;
    Ok(MlpWeights {
        gate_up: concatenate(Axis(0), &[gate.view(), up.view()]).expect("same column count"),
        down: ckpt.matrix(&format!("{p}down_proj.weight"), hidden, inter)?,
    })
}

fn load_moe(cfg: &ModelConfig, ckpt: &Checkpoint, p: &str) -> Result<MoeWeights> {
    let (h, e, inter) = (
        cfg.hidden_size,
        cfg.n_routed_experts,
        cfg.moe_intermediate_size,
    );
    let bias_name = format!("{p}gate.e_score_correction_bias");
    let bias = match cfg.model_type {
        ModelType::DeepseekV3 => Some(ckpt.vector(&bias_name, e)?),
        ModelType::DeepseekV2 => None,
    };
    // Read (and shape-check) every expert before allocating the stacks, so a config that overstates the
    // expert count fails on the first missing tensor instead of on an enormous allocation.
    let (mut gate, mut up, mut down) = (
        Vec::with_capacity(e),
        Vec::with_capacity(e),
        Vec::with_capacity(e),
    );
    for x in 0..e {
        let q = format!("{p}experts.{x}.");
        gate.push(ckpt.matrix(&format!("{q}gate_proj.weight"), inter, h)?);
        up.push(ckpt.matrix(&format!("{q}up_proj.weight"), inter, h)?);
        down.push(ckpt.matrix(&format!("{q}down_proj.weight"), h, inter)?);
    }
    let stack3 = |m: Vec<Array2<f32>>| {
        let views: Vec<_> = m.iter().map(|a| a.view()).collect();
        ndarray::stack(Axis(0), &views).expect("experts share one shape, checked on read")
    };
    let (gate, up, down) = (stack3(gate), stack3(up), stack3(down));
    Ok(MoeWeights {
        router: ckpt.matrix(&format!("{p}gate.weight"), e, h)?,
        bias,
        gate,
        up,
        down,
        shared: load_mlp(
            ckpt,
            &format!("{p}shared_experts."),
            h,
            // Bounded with the other sizes by the config's validation.
            inter * cfg.n_shared_experts,
        )?,
    })
}
