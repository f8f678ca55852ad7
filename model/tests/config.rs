#![recursion_limit = "256"]
//! config.json parsing: the hub form and the transformers v5 form, defaults, and rejections.

use dsnpu_model::config::{ModelConfig, ModelType};
use dsnpu_model::ModelError;
use dsnpu_ops::rope::RopeLayout;
use serde_json::{json, Value};

/// DeepSeek-V3's hub config.json (the fields that matter; values as published).
fn deepseek_v3_hub() -> Value {
    json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
        "n_shared_experts": 1, "n_routed_experts": 256, "routed_scaling_factor": 2.5,
        "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
        "topk_method": "noaux_tc", "scoring_func": "sigmoid", "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
        "first_k_dense_replace": 3, "moe_layer_freq": 1, "norm_topk_prob": true, "hidden_act": "silu",
        "max_position_embeddings": 163840, "rms_norm_eps": 1e-06, "tie_word_embeddings": false,
        "rope_theta": 10000,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "attention_bias": false, "bos_token_id": 0, "eos_token_id": 1, "num_nextn_predict_layers": 1,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "weight_block_size": [128, 128]},
        "torch_dtype": "bfloat16"
    })
}

fn parse(v: &Value) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json_str(&v.to_string())
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v.as_object_mut().unwrap().insert(key.into(), value);
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

fn field_of(e: ModelError) -> String {
    match e {
        ModelError::Config { field, .. } => field,
        other => panic!("expected a config error, got {other}"),
    }
}

#[test]
fn deepseek_v3_hub_config() {
    let c = parse(&deepseek_v3_hub()).unwrap();
    assert_eq!(c.model_type, ModelType::DeepseekV3);
    assert_eq!(c.q_lora_rank, Some(1536));
    assert_eq!(c.latent_cache_dim(), 576);
    assert_eq!(c.qk_head_dim(), 192);
    assert!(!c.is_moe_layer(2) && c.is_moe_layer(3));
    assert_eq!(c.rope_layout, RopeLayout::Interleaved); // transformers' default for V3
    let y = c.rope.scaling.unwrap();
    assert_eq!(
        (
            y.factor,
            y.original_max_position_embeddings,
            y.mscale,
            y.mscale_all_dim
        ),
        (40.0, 4096, 1.0, 1.0)
    );
    assert_eq!(c.quantization.unwrap().block, [128, 128]);
    assert_eq!(c.eos_token_ids, vec![1]);
    // Softmax scale 192^-0.5 · (0.1·ln 40 + 1)², evaluated here independently in f64.
    let expected = 192f64.powf(-0.5) * (0.1 * 40f64.ln() + 1.0).powi(2);
    assert!(
        (c.softmax_scale() as f64 - expected).abs() < 1e-6,
        "{} vs {expected}",
        c.softmax_scale()
    );
    assert!((c.softmax_scale() - 0.1352).abs() < 1e-4);
    let g = c.gating();
    assert_eq!(
        (g.top_k, g.n_group, g.topk_group, g.normalize),
        (8, 8, 4, true)
    );
}

#[test]
fn v5_rope_parameters_form_equals_hub_form() {
    let hub = deepseek_v3_hub();
    let mut v5 = without(without(hub.clone(), "rope_theta"), "rope_scaling");
    v5 = with(
        v5,
        "rope_parameters",
        json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 4096,
               "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}),
    );
    assert_eq!(parse(&v5).unwrap(), parse(&hub).unwrap());
    // The hub block with `rope_type` instead of the legacy `type` key.
    let mut s = hub["rope_scaling"].clone();
    let o = s.as_object_mut().unwrap();
    o.remove("type");
    o.insert("rope_type".into(), "yarn".into());
    assert_eq!(
        parse(&with(hub.clone(), "rope_scaling", s)).unwrap(),
        parse(&hub).unwrap()
    );
    // v5 default rope: theta from rope_parameters, no scaling.
    let plain = with(
        without(without(hub, "rope_theta"), "rope_scaling"),
        "rope_parameters",
        json!({"rope_type": "default", "rope_theta": 50000.0}),
    );
    let c = parse(&plain).unwrap();
    assert_eq!((c.rope.theta, c.rope.scaling), (50000.0, None));
    assert_eq!(c.softmax_scale(), 192f32.powf(-0.5));
}

#[test]
fn yarn_factor_defaults_to_the_context_ratio_and_mscale_fallbacks() {
    let mut s = deepseek_v3_hub()["rope_scaling"].clone();
    s.as_object_mut().unwrap().remove("factor");
    let c = parse(&with(deepseek_v3_hub(), "rope_scaling", s.clone())).unwrap();
    assert_eq!(c.rope.scaling.unwrap().factor, 40.0); // 163840 / 4096
                                                      // Without mscale_all_dim transformers neither corrects the softmax scale nor uses `mscale`.
    s.as_object_mut().unwrap().remove("mscale_all_dim");
    s.as_object_mut()
        .unwrap()
        .insert("mscale".into(), 0.5.into());
    let c = parse(&with(deepseek_v3_hub(), "rope_scaling", s)).unwrap();
    let y = c.rope.scaling.unwrap();
    assert_eq!((y.mscale, y.mscale_all_dim), (1.0, 0.0));
    assert_eq!(c.softmax_scale(), 192f32.powf(-0.5));
}

#[test]
fn optional_fields_take_transformers_defaults() {
    let c = parse(&with(deepseek_v3_hub(), "q_lora_rank", Value::Null)).unwrap();
    assert_eq!(c.q_lora_rank, None);
    let c = parse(&without(deepseek_v3_hub(), "q_lora_rank")).unwrap();
    assert_eq!(c.q_lora_rank, Some(1536));
    let c = parse(&with(deepseek_v3_hub(), "rope_interleave", false.into())).unwrap();
    assert_eq!(c.rope_layout, RopeLayout::HalfSplit);
    let c = parse(&with(deepseek_v3_hub(), "eos_token_id", json!([1, 7]))).unwrap();
    assert_eq!(c.eos_token_ids, vec![1, 7]);
    let c = parse(&without(
        without(deepseek_v3_hub(), "rms_norm_eps"),
        "first_k_dense_replace",
    ))
    .unwrap();
    assert_eq!((c.rms_norm_eps, c.first_k_dense_replace), (1e-6, 3));
}

#[test]
fn deepseek_v2_config() {
    let v2 = json!({
        "model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16,
        "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6, "routed_scaling_factor": 1.0,
        "kv_lora_rank": 512, "q_lora_rank": null, "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
        "topk_method": "greedy", "scoring_func": "softmax", "n_group": 1, "topk_group": 1, "norm_topk_prob": false,
        "first_k_dense_replace": 1, "rope_interleave": false, "max_position_embeddings": 163840, "rope_theta": 10000,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                         "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}
    });
    let c = parse(&v2).unwrap();
    assert_eq!(c.model_type, ModelType::DeepseekV2);
    assert_eq!(c.q_lora_rank, None);
    assert_eq!(
        c.rope_layout,
        RopeLayout::Interleaved,
        "V2 always rotates interleaved pairs"
    );
    let g = c.gating();
    assert_eq!(g.score, dsnpu_ops::moe::ScoreFunc::Softmax);
    assert_eq!((g.n_group, g.topk_group, g.normalize), (1, 1, false));
    // transformers never normalises V2's weights, so norm_topk_prob changes nothing.
    let c = parse(&with(v2.clone(), "norm_topk_prob", true.into())).unwrap();
    assert!(!c.gating().normalize);
    assert_eq!(
        field_of(
            parse(&with(
                v2.clone(),
                "topk_method",
                "group_limited_greedy".into()
            ))
            .unwrap_err()
        ),
        "topk_method"
    );
    assert_eq!(
        field_of(parse(&with(v2, "scoring_func", "sigmoid".into())).unwrap_err()),
        "scoring_func"
    );
}

#[test]
fn unsupported_and_inconsistent_configs_are_rejected() {
    let hub = deepseek_v3_hub();
    let cases: Vec<(Value, &str)> = vec![
        (with(hub.clone(), "hidden_act", "gelu".into()), "hidden_act"),
        (
            with(hub.clone(), "attention_bias", true.into()),
            "attention_bias",
        ),
        (
            with(hub.clone(), "moe_layer_freq", 2.into()),
            "moe_layer_freq",
        ),
        (
            with(hub.clone(), "scoring_func", "softmax".into()),
            "scoring_func",
        ),
        (with(hub.clone(), "n_group", 256.into()), "n_group"), // one expert per group: no top-2 score
        (
            with(hub.clone(), "num_experts_per_tok", 0.into()),
            "num_experts_per_tok",
        ),
        (
            with(hub.clone(), "num_experts_per_tok", 129.into()),
            "num_experts_per_tok",
        ), // > 4 groups of 32
        (
            with(hub.clone(), "eos_token_id", 129280.into()),
            "eos_token_id",
        ),
        (with(hub.clone(), "q_lora_rank", 0.into()), "q_lora_rank"),
        (
            with(
                hub.clone(),
                "rope_scaling",
                json!({"type": "linear", "factor": 2.0}),
            ),
            "rope_scaling.rope_type",
        ),
        (
            with(
                hub.clone(),
                "rope_scaling",
                json!({"type": "yarn", "factor": 4.0, "truncate": false}),
            ),
            "rope_scaling.truncate",
        ),
        (
            with(
                hub.clone(),
                "quantization_config",
                json!({"quant_method": "gptq"}),
            ),
            "quantization_config.quant_method",
        ),
        (
            with(
                hub.clone(),
                "quantization_config",
                json!({"quant_method": "fp8", "weight_block_size": [128]}),
            ),
            "quantization_config.weight_block_size",
        ),
        (without(hub.clone(), "kv_lora_rank"), "kv_lora_rank"),
        (without(hub.clone(), "model_type"), "model_type"),
        (with(hub.clone(), "vocab_size", (-3).into()), "vocab_size"),
    ];
    for (cfg, field) in cases {
        assert_eq!(field_of(parse(&cfg).unwrap_err()), field);
    }
    assert!(
        matches!(parse(&with(hub, "model_type", "qwen2".into())), Err(ModelError::UnknownModelType(t)) if t == "qwen2")
    );
    assert!(matches!(
        ModelConfig::from_json_str("{not json"),
        Err(ModelError::Json { .. })
    ));
    assert!(matches!(
        ModelConfig::from_json_str("[1, 2]"),
        Err(ModelError::Json { .. })
    ));
}

#[test]
fn committed_configs_parse_as_the_script_describes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let yarn = ModelConfig::from_file(dir.join("v3_yarn/config.json")).unwrap();
    assert_eq!(
        (yarn.q_lora_rank, yarn.rope_layout),
        (None, RopeLayout::HalfSplit)
    );
    let y = yarn.rope.scaling.unwrap();
    assert_eq!((y.factor, y.mscale, y.mscale_all_dim), (4.0, 0.8, 0.6));
    let bf16 = ModelConfig::from_file(dir.join("v3_bf16/config.json")).unwrap();
    assert_eq!(bf16.eos_token_ids, vec![1, 2]);
    assert_eq!(bf16.rope.scaling.unwrap().factor, 8.0);
    let fp8 = ModelConfig::from_file(dir.join("v3_fp8/config.json")).unwrap();
    assert_eq!(fp8.quantization.unwrap().block, [128, 128]);
    let base = ModelConfig::from_file(dir.join("v3_base/config.json")).unwrap();
    // Group-limited routing that can exclude experts: top_k 3 ≤ topk_group 2 · 8/4.
    assert!(
        base.topk_group < base.n_group
            && base.num_experts_per_tok <= base.topk_group * base.n_routed_experts / base.n_group
    );
}
