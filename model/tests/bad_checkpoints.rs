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
