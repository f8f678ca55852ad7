//! Hugging Face `config.json` for `deepseek_v3` and `deepseek_v2`.
//!
//! # Contract
//! - Accepts the hub form (`rope_theta` + `rope_scaling`, with `type` or `rope_type`) and the transformers v5
//!   form (`rope_parameters` holding `rope_theta` and the scaling fields). Unknown fields are ignored.
//! - Fields the model's shapes depend on must be present (`hidden_size`, `num_hidden_layers`, the MLA head
//!   dimensions, ...). Optional fields take transformers' defaults for the model type (e.g. `rms_norm_eps` 1e-6,
//!   `rope_interleave` true, `first_k_dense_replace` 3 for V3 and 0 for V2).
//! - Validates consistency (experts divisible into groups, `num_experts_per_tok ≤ topk_group·E/n_group`, at least
//!   two experts per group for V3's top-2 group score, MLA's one KV head per query head, an even rope dimension,
//!   ...) and rejects what this crate cannot run (other activations, attention/MLP biases, `moe_layer_freq ≠ 1`,
//!   other rope types, V2's `group_limited_greedy`) with [`ModelError::Config`] naming the field by its full
//!   path (`rope_scaling.factor`) and quoting the value it found.
//! - Bounds every size before anything is allocated: each weight's element count the fields imply
//!   (`num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim) × q_lora_rank`, `n_routed_experts ×
//!   moe_intermediate_size × hidden_size`, ...) is computed with checked arithmetic and must not exceed
//!   [`MAX_ELEMENTS`]; `max_position_embeddings` must not exceed [`MAX_POSITIONS`]; `vocab_size` must fit i32.
//!   The error names the largest field of the formula and prints the formula with every field's value,
//!   never a computed (possibly wrapped) size. The counts the checkpoint bounds (`num_hidden_layers`,
//!   `n_routed_experts`) are checked against it when the weights load ([`crate::weights`]).
//! - `config.json` must be a regular file (after symlinks) of at most 64 MiB; a FIFO, directory or device is
//!   reported without being opened.
//!
//! Semantics follow transformers 5.24's `DeepseekV3ForCausalLM` / `DeepseekV2ForCausalLM`, the acceptance peer:
//! V3 routes with sigmoid scores, the correction bias and group-limited top-k whatever `topk_method` says; V2
//! routes with softmax and never normalises the top-k weights (transformers ignores `norm_topk_prob` for V2,
//! DeepSeek's own code honours it — the released V2 configs set it false, where both agree). V2 always uses
//! interleaved rope pairs.

use crate::error::{config_err, ModelError, Result};
use dsnpu_ops::moe::{GatingConfig, ScoreFunc};
use dsnpu_ops::rope::{RopeConfig, RopeLayout, YarnScaling};
use serde_json::{Map, Value};
use std::path::Path;

/// The supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    DeepseekV2,
    DeepseekV3,
}

/// FP8 block quantization of the released DeepSeek-V3/R1 checkpoints (`quantization_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Quantization {
    /// `weight_block_size`: rows × columns of weight covered by one `weight_scale_inv` entry.
    pub block: [usize; 2],
}

/// A validated model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense MLP width (the first `first_k_dense_replace` layers).
    pub intermediate_size: usize,
    /// Routed expert width; the shared experts are `n_shared_experts` times this.
    pub moe_intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub n_shared_experts: usize,
    pub n_routed_experts: usize,
    pub num_experts_per_tok: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub routed_scaling_factor: f32,
    pub norm_topk_prob: bool,
    pub first_k_dense_replace: usize,
    pub kv_lora_rank: usize,
    /// `None`: a plain `q_proj` (V2-Lite style) instead of `q_a_proj`/`q_b_proj`.
    pub q_lora_rank: Option<usize>,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
    pub rope: RopeConfig,
    pub rope_layout: RopeLayout,
    pub bos_token_id: Option<i32>,
    pub eos_token_ids: Vec<i32>,
    pub quantization: Option<Fp8Quantization>,
}

/// The most f32 elements one array may hold: `isize::MAX` bytes, Rust's limit on one allocation, over 4 bytes.
/// Every weight's element count the configuration implies is checked against it (with checked arithmetic)
/// before anything is allocated, so no size wraps.
pub const MAX_ELEMENTS: usize = isize::MAX as usize / 4;

/// The most positions `max_position_embeddings` may ask for: the rope table is built for every position when
/// the model loads (DeepSeek-V3 uses 163,840; positions are i32 on the device either way).
pub const MAX_POSITIONS: usize = 1 << 20;

/// The eps of the latent norms (`q_a_layernorm`, `kv_a_layernorm`): both transformers and DeepSeek build them
/// with the RMSNorm default, not `rms_norm_eps`.
pub const LATENT_NORM_EPS: f32 = 1e-6;

impl ModelConfig {
    /// Read and validate `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = crate::files::read_json_text(path)?;
        Self::from_json_str(&text).map_err(|e| match e {
            ModelError::Json { reason, .. } => ModelError::Json {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parse and validate the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
            path: "config.json".into(),
            reason: e.to_string(),
        })?;
        let Value::Object(map) = value else {
            return Err(ModelError::Json {
                path: "config.json".into(),
                reason: "not a JSON object".into(),
            });
        };
        parse(&Fields::top(&map))
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Values per token per layer in the latent cache (V3: 512 + 64 = 576).
    pub fn latent_cache_dim(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Whether layer `i` has a mixture-of-experts MLP (else the dense one).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        i >= self.first_k_dense_replace
    }

    /// Routing as the gating operator takes it.
    pub fn gating(&self) -> GatingConfig {
        match self.model_type {
            ModelType::DeepseekV3 => GatingConfig {
                top_k: self.num_experts_per_tok,
                n_group: self.n_group,
                topk_group: self.topk_group,
                score: ScoreFunc::Sigmoid,
                normalize: self.norm_topk_prob,
                routed_scaling_factor: self.routed_scaling_factor,
            },
            ModelType::DeepseekV2 => GatingConfig {
                top_k: self.num_experts_per_tok,
                n_group: 1,
                topk_group: 1,
                score: ScoreFunc::Softmax,
                normalize: false,
                routed_scaling_factor: self.routed_scaling_factor,
            },
        }
    }

    /// The attention softmax scale: `qk_head_dim^-0.5`, times `mscale²` under YaRN.
    pub fn softmax_scale(&self) -> f32 {
        (self.qk_head_dim() as f32).powf(-0.5)
            * dsnpu_ops::rope::softmax_scale_correction(&self.rope)
    }
}

/// Typed access to the fields of a JSON object; errors name the field by its full path
/// (`rope_scaling.factor`).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// `""` at the top level, `"rope_scaling."` in a nested object.
    prefix: String,
}

impl<'a> Fields<'a> {
    fn top(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            prefix: String::new(),
        }
    }

    fn nested(map: &'a Map<String, Value>, name: &str) -> Self {
        Fields {
            map,
            prefix: format!("{name}."),
        }
    }

    /// The full path of `key`.
    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> ModelError {
        config_err(&self.path(key), reason)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }

    fn token_ids(&self, key: &str) -> Result<Vec<i32>> {
        let one = |v: &Value| {
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| self.err(key, format!("expected a token id, got {v}")))
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

fn parse(f: &Fields) -> Result<ModelConfig> {
    let model_type = match f.str_opt("model_type")? {
        Some("deepseek_v3") => ModelType::DeepseekV3,
        Some("deepseek_v2") => ModelType::DeepseekV2,
        Some(other) => return Err(ModelError::UnknownModelType(other.to_string())),
        None => return Err(config_err("model_type", "missing")),
    };
    let v3 = model_type == ModelType::DeepseekV3;

    let num_attention_heads = f.usize_req("num_attention_heads")?;
    let num_hidden_layers = f.usize_req("num_hidden_layers")?;
    let first_k_dense_replace = f.usize_or("first_k_dense_replace", if v3 { 3 } else { 0 })?;
    let has_moe = first_k_dense_replace < num_hidden_layers;
    let n_routed_experts = if has_moe {
        f.usize_req("n_routed_experts")?
    } else {
        f.usize_or("n_routed_experts", 0)?
    };
    // Routing.
    let (n_group, topk_group) = if v3 {
        (f.usize_or("n_group", 8)?, f.usize_or("topk_group", 4)?)
    } else {
        (f.usize_or("n_group", 1)?, f.usize_or("topk_group", 1)?)
    };
    let num_experts_per_tok = if has_moe {
        f.usize_req("num_experts_per_tok")?
    } else {
        0
    };

    let cfg = ModelConfig {
        model_type,
        vocab_size: f.usize_req("vocab_size")?,
        hidden_size: f.usize_req("hidden_size")?,
        intermediate_size: if first_k_dense_replace > 0 {
            f.usize_req("intermediate_size")?
        } else {
            0
        },
        moe_intermediate_size: if has_moe {
            f.usize_req("moe_intermediate_size")?
        } else {
            0
        },
        num_hidden_layers,
        num_attention_heads,
        n_shared_experts: f.usize_or("n_shared_experts", if v3 { 1 } else { 2 })?,
        n_routed_experts,
        num_experts_per_tok,
        n_group,
        topk_group,
        routed_scaling_factor: f.f32_opt("routed_scaling_factor")?.unwrap_or(if v3 {
            2.5
        } else {
            1.0
        }),
        norm_topk_prob: f.bool_or("norm_topk_prob", v3)?,
        first_k_dense_replace,
        kv_lora_rank: f.usize_req("kv_lora_rank")?,
        q_lora_rank: match f.map.get("q_lora_rank") {
            // Present and null: the plain q_proj. Absent: transformers' default rank.
            Some(Value::Null) => None,
            None => Some(1536),
            Some(_) => Some(f.usize_req("q_lora_rank")?),
        },
        qk_nope_head_dim: f.usize_req("qk_nope_head_dim")?,
        qk_rope_head_dim: f.usize_req("qk_rope_head_dim")?,
        v_head_dim: f.usize_req("v_head_dim")?,
        max_position_embeddings: f
            .usize_or("max_position_embeddings", if v3 { 4096 } else { 2048 })?,
        rms_norm_eps: f.f32_opt("rms_norm_eps")?.unwrap_or(1e-6),
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        rope: parse_rope(f)?,
        rope_layout: if !v3 || f.bool_or("rope_interleave", true)? {
            RopeLayout::Interleaved
        } else {
            RopeLayout::HalfSplit
        },
        bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: f.token_ids("eos_token_id")?,
        quantization: parse_quantization(f)?,
    };
    check_unsupported(f, v3)?;
    validate(&cfg, f)?;
    Ok(cfg)
}

fn parse_rope(f: &Fields) -> Result<RopeConfig> {
    let dim = f.usize_req("qk_rope_head_dim")?;
    // v5 form: everything in rope_parameters; hub form: rope_theta at the top, scaling in rope_scaling.
    let (block_name, block) = match (f.get("rope_parameters"), f.get("rope_scaling")) {
        (Some(p), _) => ("rope_parameters", Some(p)),
        (None, s) => ("rope_scaling", s),
    };
    let block = match block {
        None => None,
        Some(Value::Object(m)) => Some(Fields::nested(m, block_name)),
        Some(v) => {
            return Err(config_err(
                block_name,
                format!("expected an object, got {v}"),
            ))
        }
    };
    let (theta_field, theta) = match block
        .as_ref()
        .map(|b| b.f32_opt("rope_theta"))
        .transpose()?
        .flatten()
    {
        Some(t) => (format!("{block_name}.rope_theta"), t),
        None => (
            "rope_theta".to_string(),
            f.f32_opt("rope_theta")?.unwrap_or(10000.0),
        ),
    };
    if theta <= 1.0 {
        return Err(config_err(
            &theta_field,
            format!("must be > 1, got {theta}"),
        ));
    }
    let Some(b) = block else {
        return Ok(RopeConfig {
            dim,
            theta,
            scaling: None,
        });
    };
    let kind = match b.str_opt("rope_type")? {
        Some(k) => Some(k),
        None => b.str_opt("type")?,
    };
    match kind.unwrap_or("default") {
        "default" => {
            return Ok(RopeConfig {
                dim,
                theta,
                scaling: None,
            })
        }
        "yarn" => {}
        other => return Err(b.err("rope_type", format!("unsupported rope type `{other}`"))),
    }
    if b.get("attention_factor").is_some() {
        return Err(b.err(
            "attention_factor",
            "an explicit YaRN attention factor is not supported",
        ));
    }
    if !b.bool_or("truncate", true)? {
        return Err(b.err(
            "truncate",
            "only the truncated YaRN correction range is supported",
        ));
    }
    let max_pos = f.usize_or("max_position_embeddings", 4096)?;
    let original = b
        .usize_opt("original_max_position_embeddings")?
        .or(f.usize_opt("original_max_position_embeddings")?)
        .unwrap_or(max_pos);
    if original == 0 {
        return Err(b.err("original_max_position_embeddings", "must be positive"));
    }
    let factor = b
        .f32_opt("factor")?
        .unwrap_or(max_pos as f32 / original as f32);
    if factor <= 0.0 {
        return Err(b.err("factor", format!("must be positive, got {factor}")));
    }
    // transformers: a zero/absent beta falls back to the paper's 32/1.
    let beta_fast = b
        .f32_opt("beta_fast")?
        .filter(|x| *x != 0.0)
        .unwrap_or(32.0);
    let beta_slow = b.f32_opt("beta_slow")?.filter(|x| *x != 0.0).unwrap_or(1.0);
    let mscale = b.f32_opt("mscale")?.unwrap_or(0.0);
    let mscale_all_dim = b.f32_opt("mscale_all_dim")?.unwrap_or(0.0);
    // transformers: the cos/sin factor is mscale(factor, mscale)/mscale(factor, mscale_all_dim) when both are
    // set, else mscale(factor, 1); the softmax scale is corrected by mscale(factor, mscale_all_dim)² when
    // mscale_all_dim is set. With mscale_all_dim = 0 the ratio form gives exactly the second case.
    let (mscale, mscale_all_dim) = if mscale != 0.0 && mscale_all_dim != 0.0 {
        (mscale, mscale_all_dim)
    } else {
        (1.0, 0.0)
    };
    Ok(RopeConfig {
        dim,
        theta,
        scaling: Some(YarnScaling {
            factor,
            original_max_position_embeddings: original,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
        }),
    })
}

fn parse_quantization(f: &Fields) -> Result<Option<Fp8Quantization>> {
    let Some(q) = f.get("quantization_config") else {
        return Ok(None);
    };
    let Value::Object(m) = q else {
        return Err(config_err(
            "quantization_config",
            format!("expected an object, got {q}"),
        ));
    };
    let q = Fields::nested(m, "quantization_config");
    match q.str_opt("quant_method")? {
        Some("fp8") => {}
        other => {
            return Err(config_err(
                "quantization_config.quant_method",
                match other {
                    Some(m) => format!("only `fp8` is supported, got `{m}`"),
                    None => "missing (only `fp8` is supported)".to_string(),
                },
            ))
        }
    }
    if let Some(fmt) = q.str_opt("fmt")? {
        if fmt != "e4m3" {
            return Err(config_err(
                "quantization_config.fmt",
                format!("only `e4m3` is supported, got `{fmt}`"),
            ));
        }
    }
    let block = match q.get("weight_block_size") {
        None => [128, 128],
        Some(Value::Array(v)) if v.len() == 2 => {
            let dim = |x: &Value| x.as_u64().filter(|n| *n > 0).map(|n| n as usize);
            match (dim(&v[0]), dim(&v[1])) {
                (Some(r), Some(c)) => [r, c],
                _ => {
                    return Err(config_err(
                        "quantization_config.weight_block_size",
                        "expected two positive integers",
                    ))
                }
            }
        }
        Some(v) => {
            return Err(config_err(
                "quantization_config.weight_block_size",
                format!("expected [rows, cols], got {v}"),
            ))
        }
    };
    Ok(Some(Fp8Quantization { block }))
}

fn check_unsupported(f: &Fields, v3: bool) -> Result<()> {
    if let Some(act) = f.str_opt("hidden_act")? {
        if act != "silu" {
            return Err(config_err(
                "hidden_act",
                format!("only `silu` is supported, got `{act}`"),
            ));
        }
    }
    for key in ["attention_bias", "mlp_bias"] {
        if f.bool_or(key, false)? {
            return Err(config_err(key, "biases are not supported"));
        }
    }
    if f.usize_or("moe_layer_freq", 1)? != 1 {
        return Err(config_err(
            "moe_layer_freq",
            "only 1 is supported (every layer after the dense ones is MoE)",
        ));
    }
    let scoring = f.str_opt("scoring_func")?;
    let method = f.str_opt("topk_method")?;
    if v3 {
        if scoring.is_some_and(|s| s != "sigmoid") {
            return Err(config_err(
                "scoring_func",
                "deepseek_v3 routes with `sigmoid` scores",
            ));
        }
        if method.is_some_and(|m| m != "noaux_tc") {
            return Err(config_err(
                "topk_method",
                "deepseek_v3 routes with `noaux_tc`",
            ));
        }
    } else {
        if scoring.is_some_and(|s| s != "softmax") {
            return Err(config_err(
                "scoring_func",
                "deepseek_v2 routes with `softmax` scores",
            ));
        }
        match method.unwrap_or("greedy") {
            "greedy" => {}
            "group_limited_greedy" => return Err(config_err(
                "topk_method",
                "`group_limited_greedy` (max-score groups) is not supported by the gating operator",
            )),
            other => {
                return Err(config_err(
                    "topk_method",
                    format!("unknown method `{other}`"),
                ))
            }
        }
    }
    Ok(())
}

fn validate(c: &ModelConfig, f: &Fields) -> Result<()> {
    let positive = [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("kv_lora_rank", c.kv_lora_rank),
        ("qk_nope_head_dim", c.qk_nope_head_dim),
        ("qk_rope_head_dim", c.qk_rope_head_dim),
        ("v_head_dim", c.v_head_dim),
        ("max_position_embeddings", c.max_position_embeddings),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(config_err(name, "must be positive"));
        }
    }
    if c.vocab_size > i32::MAX as usize {
        return Err(config_err(
            "vocab_size",
            format!(
                "{} exceeds {}: token ids must fit in i32",
                c.vocab_size,
                i32::MAX
            ),
        ));
    }
    if c.max_position_embeddings > MAX_POSITIONS {
        return Err(config_err(
            "max_position_embeddings",
            format!(
                "{} exceeds {MAX_POSITIONS}, the most positions dsnpu builds a rope table for",
                c.max_position_embeddings
            ),
        ));
    }
    check_sizes(c)?;
    if c.q_lora_rank == Some(0) {
        return Err(config_err("q_lora_rank", "must be positive or null"));
    }
    if !c.qk_rope_head_dim.is_multiple_of(2) {
        return Err(config_err(
            "qk_rope_head_dim",
            format!("must be even, got {}", c.qk_rope_head_dim),
        ));
    }
    if let Some(kv) = f.usize_opt("num_key_value_heads")? {
        if kv != c.num_attention_heads {
            return Err(config_err(
                "num_key_value_heads",
                format!(
                    "MLA needs one per query head ({}), got {kv}",
                    c.num_attention_heads
                ),
            ));
        }
    }
    if c.first_k_dense_replace > 0 && c.intermediate_size == 0 {
        return Err(config_err("intermediate_size", "must be positive"));
    }
    if c.rms_norm_eps <= 0.0 {
        return Err(config_err("rms_norm_eps", "must be positive"));
    }
    for &id in &c.eos_token_ids {
        if id as usize >= c.vocab_size {
            return Err(config_err(
                "eos_token_id",
                format!("{id} is outside the vocabulary ({})", c.vocab_size),
            ));
        }
    }
    if c.first_k_dense_replace >= c.num_hidden_layers {
        return Ok(()); // no MoE layer: the routing fields are unused
    }
    let e = c.n_routed_experts;
    if e == 0 || c.moe_intermediate_size == 0 {
        return Err(config_err(
            if e == 0 {
                "n_routed_experts"
            } else {
                "moe_intermediate_size"
            },
            "must be positive",
        ));
    }
    if c.n_shared_experts == 0 {
        return Err(config_err(
            "n_shared_experts",
            "MoE layers without shared experts are not supported",
        ));
    }
    if c.num_experts_per_tok == 0 || c.num_experts_per_tok > e {
        return Err(config_err(
            "num_experts_per_tok",
            format!(
                "must be in 1..={e} (n_routed_experts), got {}",
                c.num_experts_per_tok
            ),
        ));
    }
    if c.model_type == ModelType::DeepseekV3 {
        if c.n_group == 0 || !e.is_multiple_of(c.n_group) {
            return Err(config_err(
                "n_group",
                format!("must divide n_routed_experts ({e}), got {}", c.n_group),
            ));
        }
        if c.topk_group == 0 || c.topk_group > c.n_group {
            return Err(config_err(
                "topk_group",
                format!("must be in 1..={}, got {}", c.n_group, c.topk_group),
            ));
        }
        let per_group = e / c.n_group;
        if per_group < 2 {
            return Err(config_err(
                "n_group",
                "each group needs at least 2 experts (group score = top-2 sum)",
            ));
        }
        if c.num_experts_per_tok > c.topk_group * per_group {
            return Err(config_err(
                "num_experts_per_tok",
                format!(
                    "{} exceeds the {} experts in topk_group ({}) groups of {per_group}",
                    c.num_experts_per_tok,
                    c.topk_group * per_group,
                    c.topk_group
                ),
            ));
        }
    }
    if c.routed_scaling_factor <= 0.0 {
        return Err(config_err("routed_scaling_factor", "must be positive"));
    }
    Ok(())
}

/// One size the configuration implies: a product of factors, each a sum of named fields.
struct Size {
    /// What the product is the size of, e.g. `q_b_proj.weight`.
    what: &'static str,
    factors: Vec<Vec<(&'static str, usize)>>,
}

impl Size {
    /// `heads × (nope + rope)` and `4 × (16 + 8)`: the formula and its values, as the error prints them.
    fn describe(&self, part: impl Fn(&(&'static str, usize)) -> String) -> String {
        let factors: Vec<String> = self
            .factors
            .iter()
            .map(|terms| {
                let t: Vec<String> = terms.iter().map(&part).collect();
                if t.len() > 1 {
                    format!("({})", t.join(" + "))
                } else {
                    t.join("")
                }
            })
            .collect();
        factors.join(" × ")
    }
}

/// Every element count the configuration implies (each weight matrix, each stacked expert tensor), computed
/// with checked arithmetic and bounded by [`MAX_ELEMENTS`]. The error names the largest field among the
/// factors (the likely culprit) and the whole formula with every field's value, never a computed result, so
/// no wrapped number can appear.
fn check_sizes(c: &ModelConfig) -> Result<()> {
    let heads = ("num_attention_heads", c.num_attention_heads);
    let hidden = ("hidden_size", c.hidden_size);
    let (nope, rope, dv, dl) = (
        ("qk_nope_head_dim", c.qk_nope_head_dim),
        ("qk_rope_head_dim", c.qk_rope_head_dim),
        ("v_head_dim", c.v_head_dim),
        ("kv_lora_rank", c.kv_lora_rank),
    );
    let size = |what, factors: &[&[(&'static str, usize)]]| Size {
        what,
        factors: factors.iter().map(|t| t.to_vec()).collect(),
    };
    let mut sizes = vec![
        size(
            "embed_tokens.weight and lm_head.weight",
            &[&[("vocab_size", c.vocab_size)], &[hidden]],
        ),
        size("kv_a_proj_with_mqa.weight", &[&[dl, rope], &[hidden]]),
        size("kv_b_proj.weight", &[&[heads], &[nope, dv], &[dl]]),
        size("o_proj.weight", &[&[hidden], &[heads], &[dv]]),
        size("the latent cache's token width", &[&[dl, rope]]),
    ];
    match c.q_lora_rank {
        Some(r) => {
            let r = ("q_lora_rank", r);
            sizes.push(size("q_a_proj.weight", &[&[r], &[hidden]]));
            sizes.push(size("q_b_proj.weight", &[&[heads], &[nope, rope], &[r]]));
        }
        None => sizes.push(size("q_proj.weight", &[&[heads], &[nope, rope], &[hidden]])),
    }
    if c.first_k_dense_replace > 0 {
        sizes.push(size(
            "a dense layer's gate_proj and up_proj, stacked",
            &[
                &[("2", 2)],
                &[("intermediate_size", c.intermediate_size)],
                &[hidden],
            ],
        ));
    }
    if c.first_k_dense_replace < c.num_hidden_layers {
        let inter = ("moe_intermediate_size", c.moe_intermediate_size);
        sizes.push(size(
            "a MoE layer's routed experts, stacked",
            &[
                &[("n_routed_experts", c.n_routed_experts)],
                &[inter],
                &[hidden],
            ],
        ));
        sizes.push(size(
            "a MoE layer's shared experts' gate_proj and up_proj, stacked",
            &[
                &[("2", 2)],
                &[("n_shared_experts", c.n_shared_experts)],
                &[inter],
                &[hidden],
            ],
        ));
    }
    for size in &sizes {
        let product = size.factors.iter().try_fold(1usize, |acc, terms| {
            let sum = terms
                .iter()
                .try_fold(0usize, |s, &(_, v)| s.checked_add(v))?;
            acc.checked_mul(sum)
        });
        if matches!(product, Some(n) if n <= MAX_ELEMENTS) {
            continue;
        }
        let &(culprit, value) = size
            .factors
            .iter()
            .flatten()
            .filter(|(name, _)| name.contains('_'))
            .max_by_key(|(_, v)| *v)
            .expect("every size has a field among its factors");
        return Err(config_err(
            culprit,
            format!(
                "{culprit} = {value} is too large: {} = {} for {} exceeds {MAX_ELEMENTS}, the most f32 elements one array can hold",
                size.describe(|(name, _)| name.to_string()),
                size.describe(|(_, v)| v.to_string()),
                size.what,
            ),
        ));
    }
    Ok(())
}
