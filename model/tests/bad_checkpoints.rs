//! Broken checkpoints, written at test time from the committed v3_base/v3_fp8/v3_yarn ones: each gives a typed
//! error that names the problem (tensor, file, field), and nothing panics.

mod common;

use common::data_dir;
use dsnpu_model::{DeepseekV3, ModelError};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Owned copy of a safetensors file's tensors.
type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect()
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// A temp copy of a committed variant.
fn copy_variant(variant: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(variant);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(data_dir(variant)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn edit_tensors(dir: &Path, file: &str, edit: impl FnOnce(&mut Tensors)) {
    let path = dir.join(file);
    let mut t = read_tensors(&path);
    edit(&mut t);
    write_tensors(&path, &t);
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> ModelError {
    DeepseekV3::load(dir).expect_err("a broken checkpoint must not load")
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = copy_variant("v3_base");
    let name = "model.layers.2.mlp.experts.5.up_proj.weight";
    edit_tensors(&dir, "model.safetensors", |t| {
        t.remove(name).unwrap();
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::MissingTensor(n) if n == name),
        "{err}"
    );
    assert!(err.to_string().contains(name));
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let (_tmp, dir) = copy_variant("v3_base");
    let name = "model.layers.1.self_attn.kv_b_proj.weight";
    edit_tensors(&dir, "model.safetensors", |t| {
        let (_, shape, bytes) = t.get_mut(name).unwrap();
        assert_eq!(shape, &vec![128, 32]);
        *shape = vec![64, 64]; // same byte count, wrong shape
        assert_eq!(bytes.len(), 64 * 64 * 4);
    });
    match load_err(&dir) {
        ModelError::TensorShape {
            name: n,
            got,
            expected,
        } => {
            assert_eq!(n, name);
            assert_eq!(got, vec![64, 64]);
            assert_eq!(expected, vec![128, 32]);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn corrupt_safetensors_headers_name_the_file() {
    type Corruption = fn(&mut Vec<u8>);
    let cases: [(&str, Corruption); 4] = [
        ("garbage in the JSON header", |b| {
            b[8..24].copy_from_slice(b"not json at all!")
        }),
        ("truncated data", |b| b.truncate(b.len() - 10)),
        ("header length past the end", |b| {
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes())
        }),
        ("shorter than the length prefix", |b| b.truncate(5)),
    ];
    for (what, corrupt) in cases {
        let (_tmp, dir) = copy_variant("v3_base");
        let path = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        corrupt(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        match load_err(&dir) {
            ModelError::Safetensors { path: p, reason } => {
                assert_eq!(p, path, "{what}");
                assert!(!reason.is_empty());
            }
            other => panic!("{what}: unexpected error {other}"),
        }
    }
}

/// Rewrites the JSON header of the safetensors file at `path` (its data bytes unchanged).
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header.as_object_mut().unwrap());
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn headers_that_are_json_but_not_safetensors_name_the_tensor_and_the_field() {
    let name = "model.norm.weight";
    type Edit = fn(&mut serde_json::Map<String, serde_json::Value>);
    let cases: [(Edit, &str); 4] = [
        (
            |h| h["model.norm.weight"]["dtype"] = "Q4_K".into(),
            "an unknown dtype `Q4_K`",
        ),
        (
            |h| h["model.norm.weight"]["shape"] = serde_json::json!([64, -1]),
            "its shape is not",
        ),
        (
            |h| h["model.norm.weight"]["data_offsets"] = serde_json::json!([0]),
            "its data_offsets are not",
        ),
        (
            |h| h["model.norm.weight"] = serde_json::json!("F32"),
            "is not a JSON object",
        ),
    ];
    for (edit, want) in cases {
        let (_tmp, dir) = copy_variant("v3_base");
        let path = dir.join("model.safetensors");
        edit_header(&path, edit);
        match load_err(&dir) {
            ModelError::Safetensors { path: p, reason } => {
                assert_eq!(p, path);
                assert!(
                    reason.contains(&format!("tensor `{name}`")) && reason.contains(want),
                    "{want}: {reason}"
                );
            }
            other => panic!("{want}: unexpected error {other}"),
        }
    }
}

#[test]
fn offsets_pointing_outside_the_data_are_rejected() {
    let (_tmp, dir) = copy_variant("v3_base");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    // Shift the first tensor's start by 4 bytes, keeping the header length (offsets are no longer contiguous).
    let needle = "\"data_offsets\":[0,";
    assert!(header.contains(needle));
    let broken = header.replacen(needle, "\"data_offsets\":[4,", 1);
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(broken.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    assert!(matches!(load_err(&dir), ModelError::Safetensors { .. }));
}

#[test]
fn unknown_model_type_is_named() {
    let (_tmp, dir) = copy_variant("v3_base");
    edit_config(&dir, |c| {
        c.insert("model_type".into(), "llama".into());
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::UnknownModelType(t) if t == "llama"),
        "{err}"
    );
}

#[test]
fn inconsistent_configs_name_the_field() {
    let cases: [(&str, serde_json::Value, &str); 6] = [
        ("n_group", 3.into(), "n_group"), // 8 experts do not split into 3 groups
        ("num_experts_per_tok", 5.into(), "num_experts_per_tok"), // > topk_group·E/n_group = 4
        ("topk_group", 5.into(), "topk_group"), // > n_group
        ("num_key_value_heads", 2.into(), "num_key_value_heads"), // MLA has one per head
        ("qk_rope_head_dim", 7.into(), "qk_rope_head_dim"), // odd
        ("hidden_size", "64".into(), "hidden_size"), // not a number
    ];
    for (key, value, field) in cases {
        let (_tmp, dir) = copy_variant("v3_base");
        edit_config(&dir, |c| {
            c.insert(key.into(), value.clone());
        });
        match load_err(&dir) {
            ModelError::Config { field: f, .. } => assert_eq!(f, field, "{key} = {value}"),
            other => panic!("{key} = {value}: unexpected error {other}"),
        }
    }
}

#[test]
fn config_and_checkpoint_that_disagree_fail_on_the_first_mismatched_tensor() {
    // A config claiming a wider latent than the weights have.
    let (_tmp, dir) = copy_variant("v3_base");
    edit_config(&dir, |c| {
        c.insert("kv_lora_rank".into(), 48.into());
    });
    match load_err(&dir) {
        ModelError::TensorShape { name, .. } => {
            assert_eq!(name, "model.layers.0.self_attn.kv_b_proj.weight")
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn missing_files_are_named() {
    let (_tmp, dir) = copy_variant("v3_base");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(matches!(load_err(&dir), ModelError::Checkpoint { dir: d, .. } if d == dir));
    std::fs::remove_file(dir.join("config.json")).unwrap();
    match load_err(&dir) {
        ModelError::Io { path, .. } => assert_eq!(path, dir.join("config.json")),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn inconsistent_shard_index_is_rejected() {
    let (_tmp, dir) = copy_variant("v3_yarn");
    let index_path = dir.join("model.safetensors.index.json");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let name = "model.norm.weight";
    let file = index["weight_map"][name].as_str().unwrap().to_string();
    let other = if file.contains("00001") {
        "model-00002-of-00002.safetensors"
    } else {
        "model-00001-of-00002.safetensors"
    };

    // The index places a tensor in the shard that does not hold it.
    let mut moved = index.clone();
    moved["weight_map"][name] = other.into();
    std::fs::write(&index_path, moved.to_string()).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::Checkpoint { reason, .. } if reason.contains(name)),
        "{err}"
    );

    // The index names a shard that does not exist.
    let mut missing = index.clone();
    missing["weight_map"][name] = "model-00003-of-00002.safetensors".into();
    std::fs::write(&index_path, missing.to_string()).unwrap();
    match load_err(&dir) {
        ModelError::Io { path, .. } => {
            assert_eq!(path, dir.join("model-00003-of-00002.safetensors"))
        }
        other => panic!("unexpected error {other}"),
    }

    // The index escapes the directory.
    let mut escape = index;
    escape["weight_map"][name] = "../model-00001-of-00002.safetensors".into();
    std::fs::write(&index_path, escape.to_string()).unwrap();
    assert!(matches!(load_err(&dir), ModelError::Checkpoint { .. }));

    std::fs::write(&index_path, "{\"weight_map\": 3}").unwrap();
    assert!(matches!(load_err(&dir), ModelError::Json { path, .. } if path == index_path));
}

#[test]
fn fp8_weights_need_well_shaped_scales() {
    let name = "model.layers.0.mlp.gate_proj.weight";
    let scale = format!("{name}_scale_inv");

    let (_tmp, dir) = copy_variant("v3_fp8");
    edit_tensors(&dir, "model.safetensors", |t| {
        t.remove(&scale).unwrap();
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::TensorDType { name: n, reason } if n == name && reason.contains(&scale)),
        "{err}"
    );

    let (_tmp, dir) = copy_variant("v3_fp8");
    edit_tensors(&dir, "model.safetensors", |t| {
        let (_, shape, bytes) = t.get_mut(&scale).unwrap();
        assert_eq!(shape, &vec![2, 2]); // 136×144 in 128×128 blocks
        *shape = vec![4, 1];
        assert_eq!(bytes.len(), 16);
    });
    match load_err(&dir) {
        ModelError::TensorShape {
            name: n,
            got,
            expected,
        } => {
            assert_eq!((n, got, expected), (scale.clone(), vec![4, 1], vec![2, 2]));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn unsupported_dtypes_are_named() {
    let (_tmp, dir) = copy_variant("v3_base");
    let name = "model.norm.weight";
    edit_tensors(&dir, "model.safetensors", |t| {
        let (dtype, _, _) = t.get_mut(name).unwrap();
        *dtype = Dtype::I32; // same size as f32
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::TensorDType { name: n, .. } if n == name),
        "{err}"
    );
}

// ---- Sizes from config.json: bounded, checked, named (issue 15) ----

/// The `Config` error of loading `variant` with `key` set to `value`: (field, whole message).
fn config_error(variant: &str, edits: &[(&str, serde_json::Value)]) -> (String, String) {
    let (_tmp, dir) = copy_variant(variant);
    edit_config(&dir, |c| {
        for (k, v) in edits {
            c.insert((*k).into(), v.clone());
        }
    });
    match load_err(&dir) {
        err @ ModelError::Config { .. } => {
            let ModelError::Config { field, .. } = &err else {
                unreachable!()
            };
            (field.clone(), err.to_string())
        }
        other => panic!("{edits:?}: unexpected error {other}"),
    }
}

/// No number in `msg` is one that arithmetic wrapped to (anything ≥ 2^63 that is not a value we put in).
fn assert_no_wrapped_numbers(msg: &str, put_in: &[u64]) {
    for word in msg.split(|c: char| !c.is_ascii_digit()) {
        if let Ok(n) = word.parse::<u128>() {
            assert!(
                n < 1 << 63 || put_in.contains(&(n as u64)),
                "{n} in `{msg}`"
            );
        }
    }
}

#[test]
fn layer_counts_beyond_the_checkpoint_are_refused_before_allocating() {
    for layers in [1u64 << 40, 1 << 60, u64::MAX] {
        let (field, msg) = config_error("v3_base", &[("num_hidden_layers", layers.into())]);
        assert_eq!(field, "num_hidden_layers", "{msg}");
        assert!(
            msg.contains(&format!(
                "{layers} exceeds the 3 layers the checkpoint holds"
            )),
            "{msg}"
        );
    }
}

/// Loading `dir` on the device engine (the simulator) must fail; the error.
fn engine_load_err(dir: &Path) -> ModelError {
    dsnpu_model::device::Engine::load(
        dir,
        dsnpu_model::device::EngineOptions::default(),
        &mut |_, _| {},
    )
    .expect_err("a broken checkpoint must not load on the device")
}

#[test]
fn the_device_engine_checks_the_counts_against_the_checkpoint_too() {
    // It used to upload layers 0..2 and fail on layer 3's first tensor; with 10^12 layers it listed a
    // plan entry per layer's tensor until the process ran out of memory.
    for layers in [5u64, 1_000_000_000_000] {
        let (_tmp, dir) = copy_variant("v3_base");
        edit_config(&dir, |c| {
            c.insert("num_hidden_layers".into(), layers.into());
        });
        let err = engine_load_err(&dir);
        assert!(
            matches!(&err, ModelError::Config { field, .. } if field == "num_hidden_layers"),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!(
                "{layers} exceeds the 3 layers the checkpoint holds"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_stray_tensor_far_past_the_last_layer_or_expert_does_not_raise_the_counts() {
    // An empty tensor named for layer (or expert) 10^12 used to count as 10^12 + 1 layers held, so a
    // config claiming that many passed the check and the loader aborted allocating room for them.
    let n = 1_000_000_000_000u64;
    for (stray, field, msg) in [
        (
            format!("model.layers.{n}.input_layernorm.weight"),
            "num_hidden_layers",
            format!("{n} exceeds the 3 layers the checkpoint holds"),
        ),
        (
            format!("model.layers.1.mlp.experts.{n}.up_proj.weight"),
            "n_routed_experts",
            format!("{n} exceeds the 8 routed experts the checkpoint holds"),
        ),
    ] {
        let (_tmp, dir) = copy_variant("v3_base");
        edit_tensors(&dir, "model.safetensors", |t| {
            t.insert(stray.clone(), (Dtype::F32, vec![0], Vec::new()));
        });
        edit_config(&dir, |c| {
            c.insert(field.into(), n.into());
        });
        for err in [load_err(&dir), engine_load_err(&dir)] {
            assert!(
                matches!(&err, ModelError::Config { field: f, .. } if f == field),
                "{stray}: {err}"
            );
            assert!(err.to_string().contains(&msg), "{stray}: {err}");
        }
    }
}

#[test]
fn weights_whose_bytes_add_up_past_u64_are_a_device_memory_error() {
    // Each table is 2^61 - 2^30 elements, within the config's bound; their f32 bytes, embedding and
    // lm_head together, exceed u64. The sum used to overflow (a panic in debug builds, a wrapped and
    // too small total in release).
    let (_tmp, dir) = copy_variant("v3_base");
    edit_config(&dir, |c| {
        c.insert("vocab_size".into(), (i32::MAX as u64).into());
        c.insert("hidden_size".into(), (1u64 << 30).into());
    });
    match engine_load_err(&dir) {
        ModelError::DeviceMemory {
            tensor,
            needed,
            free,
        } => {
            assert_eq!(tensor, "model.embed_tokens.weight");
            assert_eq!(needed, u64::MAX, "saturated");
            assert!(free < needed);
        }
        other => panic!("expected a device-memory error, got {other}"),
    }
}

#[test]
fn huge_expert_counts_are_refused_for_deepseek_v2() {
    // Small enough that the stacked experts fit in memory's address space: the checkpoint bounds it.
    let (field, msg) = config_error("v2_lite", &[("n_routed_experts", (1u64 << 40).into())]);
    assert_eq!(field, "n_routed_experts", "{msg}");
    assert!(
        msg.contains("1099511627776 exceeds the 8 routed experts the checkpoint holds"),
        "{msg}"
    );
    // Large enough that n_routed_experts × moe_intermediate_size × hidden_size overflows: the config does.
    let (field, msg) = config_error("v2_lite", &[("n_routed_experts", (1u64 << 60).into())]);
    assert_eq!(field, "n_routed_experts", "{msg}");
    assert!(
        msg.contains("n_routed_experts × moe_intermediate_size × hidden_size = 1152921504606846976 × 16 × 64"),
        "{msg}"
    );
    assert_no_wrapped_numbers(&msg, &[]);
}

#[test]
fn a_head_count_that_would_wrap_the_query_width_is_named_with_its_factors() {
    let heads = 1u64 << 62;
    let (field, msg) = config_error(
        "v3_base",
        &[
            ("num_attention_heads", heads.into()),
            ("num_key_value_heads", heads.into()),
        ],
    );
    assert_eq!(field, "num_attention_heads", "{msg}");
    assert!(
        msg.contains("num_attention_heads = 4611686018427387904 is too large"),
        "{msg}"
    );
    assert!(
        msg.contains("the most f32 elements one array can hold"),
        "{msg}"
    );
    assert_no_wrapped_numbers(&msg, &[]);

    // A sum that overflows on its own.
    let (field, msg) = config_error("v3_base", &[("qk_nope_head_dim", u64::MAX.into())]);
    assert_eq!(field, "qk_nope_head_dim", "{msg}");
    assert!(
        msg.contains("qk_nope_head_dim = 18446744073709551615 is too large")
            && msg.contains("(18446744073709551615 + "),
        "{msg}"
    );
    assert_no_wrapped_numbers(&msg, &[u64::MAX]);
}

#[test]
fn nested_fields_are_named_by_their_full_path() {
    let (_tmp, dir) = copy_variant("v3_bf16");
    edit_config(&dir, |c| {
        c["rope_scaling"]["factor"] = "four".into();
    });
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "rope_scaling.factor"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "config: field `rope_scaling.factor`: expected a number, got \"four\""
    );
}

#[test]
fn fields_of_the_v5_rope_block_are_named_by_their_full_path() {
    let (_tmp, dir) = copy_variant("v3_yarn");
    edit_config(&dir, |c| {
        c["rope_parameters"]["factor"] = (-2.0).into();
    });
    let err = load_err(&dir);
    assert_eq!(
        err.to_string(),
        "config: field `rope_parameters.factor`: must be positive, got -2"
    );
}

#[test]
fn an_unsupported_quantization_is_quoted_without_debug_formatting() {
    let (field, msg) = config_error(
        "v3_base",
        &[(
            "quantization_config",
            serde_json::json!({"quant_method": "awq"}),
        )],
    );
    assert_eq!(field, "quantization_config.quant_method");
    assert!(msg.contains("only `fp8` is supported, got `awq`"), "{msg}");
    assert!(!msg.contains("Some("), "{msg}");
}

// ---- NaN and infinities in the weights (issue 15) ----

/// Loading fails with `NonFiniteWeight` naming `name` at `index`; returns the message.
fn assert_non_finite(dir: &Path, name: &str, index: &[usize]) -> String {
    match load_err(dir) {
        err @ ModelError::NonFiniteWeight { .. } => {
            let ModelError::NonFiniteWeight {
                name: n, index: i, ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!((n.as_str(), i.as_slice()), (name, index), "{err}");
            err.to_string()
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_nan_in_the_final_norm_is_rejected_at_load() {
    let (_tmp, dir) = copy_variant("v3_base");
    let name = "model.norm.weight";
    edit_tensors(&dir, "model.safetensors", |t| {
        let (_, _, bytes) = t.get_mut(name).unwrap();
        bytes[4 * 37..4 * 38].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let msg = assert_non_finite(&dir, name, &[37]);
    assert_eq!(msg, "tensor `model.norm.weight` holds NaN at index [37]");
}

#[test]
fn an_infinity_in_a_shared_expert_is_rejected_at_load() {
    let (_tmp, dir) = copy_variant("v3_bf16");
    let name = "model.layers.1.mlp.shared_experts.up_proj.weight"; // bf16 [16, 64]
    edit_tensors(&dir, "model.safetensors", |t| {
        let (_, _, bytes) = t.get_mut(name).unwrap();
        let flat = 5 * 64 + 9;
        bytes[2 * flat..2 * flat + 2].copy_from_slice(&half::bf16::NEG_INFINITY.to_le_bytes());
    });
    let msg = assert_non_finite(&dir, name, &[5, 9]);
    assert!(msg.contains("holds -inf at index [5, 9]"), "{msg}");
}

#[test]
fn a_nan_byte_in_an_fp8_weight_is_rejected_at_load() {
    for byte in [0x7fu8, 0xff] {
        let (_tmp, dir) = copy_variant("v3_fp8");
        let name = "model.layers.1.mlp.experts.0.gate_proj.weight"; // e4m3 [16, 144]
        edit_tensors(&dir, "model.safetensors", |t| {
            let (_, _, bytes) = t.get_mut(name).unwrap();
            bytes[3 * 144 + 130] = byte;
        });
        let msg = assert_non_finite(&dir, name, &[3, 130]);
        assert!(
            msg.contains(&format!("NaN (e4m3 byte 0x{byte:02X})")),
            "{msg}"
        );
    }
}

#[test]
fn a_non_finite_fp8_block_scale_is_rejected_at_load() {
    let (_tmp, dir) = copy_variant("v3_fp8");
    let name = "model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv"; // f32 [1, 2]
    edit_tensors(&dir, "model.safetensors", |t| {
        let (_, _, bytes) = t.get_mut(name).unwrap();
        bytes[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    assert_non_finite(&dir, name, &[0, 1]);
}

#[test]
fn a_nan_row_in_lm_head_is_rejected_at_load() {
    let (_tmp, dir) = copy_variant("v3_base");
    let name = "lm_head.weight"; // f32 [128, 64]
    edit_tensors(&dir, "model.safetensors", |t| {
        let (_, _, bytes) = t.get_mut(name).unwrap();
        for v in bytes[4 * 64 * 90..4 * 64 * 91].chunks_exact_mut(4) {
            v.copy_from_slice(&f32::NAN.to_le_bytes());
        }
    });
    assert_non_finite(&dir, name, &[90, 0]);
}

// ---- Non-finite activations: no step returns them (issue 15) ----

#[test]
fn from_parts_refuses_weights_that_do_not_match_the_config() {
    // These used to be accepted: a fourth layer (or a config of two) then panicked indexing the cache by
    // layer in prefill, a config of 2 heads panicked reshaping the query, a missing layer ran a 2-layer
    // model, and a 100-row lm_head returned 100 logits per position.
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    type Edit = fn(&mut dsnpu_model::ModelConfig, &mut dsnpu_model::weights::ModelWeights);
    let cases: [(Edit, &str); 6] = [
        (
            |_, w| w.layers.push(w.layers[2].clone()),
            "invalid input: the weights hold 4 layers, num_hidden_layers is 3",
        ),
        (
            |c, _| c.num_hidden_layers = 2,
            "invalid input: the weights hold 3 layers, num_hidden_layers is 2",
        ),
        (
            |c, _| c.num_attention_heads = 2,
            "tensor `model.layers.0.self_attn.q_b_proj.weight` has shape [96, 32], expected [48, 32]",
        ),
        (
            |_, w| w.layers[0].attention.w_uk = ndarray::Array3::zeros((4, 16, 31)),
            "tensor `model.layers.0.self_attn.kv_b_proj.weight (w_uk)` has shape [4, 16, 31], expected [4, 16, 32]",
        ),
        (
            |_, w| w.lm_head = w.lm_head.slice(ndarray::s![..100, ..]).to_owned(),
            "tensor `lm_head.weight` has shape [100, 64], expected [128, 64]",
        ),
        (
            |c, _| c.first_k_dense_replace = 0,
            "invalid input: layer 0: a dense MLP, but first_k_dense_replace 0 makes it MoE",
        ),
    ];
    for (edit, msg) in cases {
        let (mut config, mut weights) = (model.config().clone(), model.weights().clone());
        edit(&mut config, &mut weights);
        match DeepseekV3::from_parts(config, weights) {
            Err(e) => assert_eq!(e.to_string(), msg),
            Ok(m) => panic!(
                "accepted ({msg}); forward: {:?}",
                m.forward(&[1, 2, 3]).map(|l| l.dim())
            ),
        }
    }
    // The weights load builds pass.
    let (config, weights) = (model.config().clone(), model.weights().clone());
    assert!(DeepseekV3::from_parts(config, weights).is_ok());
}

#[test]
fn an_overflowing_lm_head_fails_the_step_naming_it() {
    // Finite weights whose product overflows f32: 64 columns of 3e38 times a normed hidden state.
    let mut model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let (config, mut weights) = (model.config().clone(), model.weights().clone());
    weights.lm_head.row_mut(7).fill(3e38);
    model = DeepseekV3::from_parts(config, weights).unwrap();
    match model.forward(&[1, 2, 3]) {
        Err(ModelError::NonFiniteOutput { op, index, value }) => {
            assert_eq!(op, "lm_head (linear)");
            assert_eq!(index[1], 7, "the overflowing vocabulary column");
            assert!(!value.is_finite(), "{value}");
        }
        other => panic!("unexpected result {other:?}"),
    }
}

#[test]
fn a_nan_inside_a_layer_is_named_by_the_first_stage_it_reaches() {
    let model = DeepseekV3::load(data_dir("v3_base")).unwrap();
    let (config, mut weights) = (model.config().clone(), model.weights().clone());
    // Layer 1's o_proj: attention's output goes NaN there, before any later stage.
    weights.layers[1].attention.o[[3, 5]] = f32::NAN;
    let model = DeepseekV3::from_parts(config, weights).unwrap();
    let err = model.forward(&[1, 2, 3]).unwrap_err();
    assert!(
        matches!(&err, ModelError::NonFiniteOutput { op, .. } if op.starts_with("layer 1 self_attn")),
        "{err}"
    );
    // Generation fails the same way instead of sampling from NaN.
    let gen = dsnpu_model::Generator::new(&model, dsnpu_model::GenerateOptions::greedy(3)).unwrap();
    assert!(matches!(
        gen.generate(&[1, 2, 3]),
        Err(ModelError::NonFiniteOutput { .. })
    ));
}

// ---- Files that are not regular files (issue 15) ----

/// Runs `f` on another thread; fails the test if it takes more than 10 s (a blocked open).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the loader blocked")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_fifo_config_is_reported_without_blocking() {
    let (tmp, dir) = copy_variant("v3_base");
    let config = dir.join("config.json");
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    let err = within_10s(move || load_err(&dir));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: expected a regular file, found a FIFO (named pipe)",
            config.display()
        )
    );
    drop(tmp);
}

#[test]
fn weights_that_are_not_regular_files_say_what_they_are() {
    type Make = fn(&Path);
    let cases: [(&str, Make); 5] = [
        ("a directory", |p| std::fs::create_dir(p).unwrap()),
        ("a symbolic link to `", |p| {
            std::os::unix::fs::symlink(p.with_extension("gone"), p).unwrap()
        }),
        // A link to itself used to be reported as a link to a file that does not exist.
        (
            "a symbolic link to `model.safetensors` that cannot be followed: ",
            |p| std::os::unix::fs::symlink("model.safetensors", p).unwrap(),
        ),
        ("a character device", |p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("a FIFO (named pipe)", mkfifo),
    ];
    for (found, make) in cases {
        let (_tmp, dir) = copy_variant("v3_base");
        let path = dir.join("model.safetensors");
        std::fs::remove_file(&path).unwrap();
        make(&path);
        let err = within_10s(move || load_err(&dir));
        match &err {
            ModelError::NotAFile { path: p, found: f } => {
                assert_eq!(p, &path);
                assert!(f.starts_with(found), "{err}");
            }
            other => panic!("{found}: unexpected error {other}"),
        }
        assert!(!err.to_string().contains("holds neither"), "{err}");
    }
}

#[test]
fn a_shard_that_is_a_fifo_is_reported_without_blocking() {
    let (tmp, dir) = copy_variant("v3_yarn");
    let shard = dir.join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    mkfifo(&shard);
    let err = within_10s(move || load_err(&dir));
    assert!(
        matches!(&err, ModelError::NotAFile { path, .. } if path == &shard),
        "{err}"
    );
    drop(tmp);
}
