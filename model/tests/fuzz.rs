//! Property/fuzz suite over the inputs a user hands the model crate: `config.json` (parsed alone, and loaded
//! with the real weights) and `model.safetensors` (mutated headers, offsets, dtypes, shapes, bytes, lengths).
//! Seeds are the committed tiny checkpoints (tests/data); mutants are written to a temp dir.
//!
//! Every case must end in `Ok` or a clean error: no panic (proptest reports it), no abort or signal (the cases
//! run in a forked child: a crash is reported with its input), no hang (each case has a time limit). A clean
//! error is one line, non-empty, free of Rust debug formatting and of wrapped numbers: any number above
//! `MAX_ELEMENTS` (2^61 - 1, the bound every computed size is checked against) that it prints must be one the
//! input holds or a documented limit; a computed size is never that large, a wrapped one usually is. A model that loads must run a short
//! forward pass to finite logits or a clean error. Mutated configs and safetensors files also go through the
//! device engine's own loader (`Engine::load` on the simulator, which plans and sizes its uploads and cache
//! itself), then its prompt logits and a short greedy generation.
//!
//! Case counts are fixed per property (below) so the suite runs in well under a minute; `PROPTEST_CASES`
//! raises them for a longer run.

mod common;

use common::{data_dir, VARIANTS};
use dsnpu_model::config::{MAX_ELEMENTS, MAX_POSITIONS};
use dsnpu_model::device::{Engine, EngineOptions};
use dsnpu_model::{Checkpoint, DeepseekV3, ModelConfig, ModelError};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};
use std::path::Path;

/// `n` cases unless `PROPTEST_CASES` says otherwise; each case in a forked child with a 30 s limit.
fn config(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        failure_persistence: None,
        fork: true,
        timeout: 30_000,
        ..ProptestConfig::default()
    }
}

// ---- what a clean error looks like ----

/// Numbers a message may print that the input does not hold: the documented limits.
fn known_limits() -> Vec<u128> {
    vec![
        MAX_ELEMENTS as u128,
        MAX_POSITIONS as u128,
        i32::MAX as u128,
        64 << 20, // files::MAX_JSON_BYTES
    ]
}

/// Every integer in `text` (digits of floats such as `1.5e-30` are not integers).
fn numbers(text: &str) -> Vec<u128> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .flat_map(|w| w.split(['+', '-']))
        .filter_map(|w| w.parse::<u128>().ok())
        .collect()
}

/// `msg` with every path under the temporary directory (up to the next `:` or space) replaced by
/// `<path>`: a test checkpoint's directory has a random name, which may spell `None` or carry digits.
fn without_temp_paths(msg: &str) -> String {
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_string_lossy();
    let (mut out, mut rest) = (String::new(), msg);
    while let Some(i) = rest.find(tmp.as_ref()) {
        out.push_str(&rest[..i]);
        let path = &rest[i..];
        let end = path
            .find(|c: char| c == ':' || c.is_whitespace())
            .unwrap_or(path.len());
        out.push_str("<path>");
        rest = &path[end..];
    }
    out.push_str(rest);
    out
}

/// Panics unless `err` is a clean error for an input whose text (JSON or header) is `input`.
fn assert_clean(err: &ModelError, input: &str) {
    let msg = without_temp_paths(&err.to_string());
    assert!(!msg.trim().is_empty(), "empty message for {err:?}");
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    for debug in [
        "Some(",
        "None",
        "Error {",
        "kind:",
        "Custom {",
        "InvalidOffset(",
    ] {
        assert!(!msg.contains(debug), "debug formatting `{debug}` in: {msg}");
    }
    let input_numbers = numbers(input);
    let limits = known_limits();
    // A float field is printed as the f32 it became: within f32 precision of the number written.
    let near_input = |n: u128| input_numbers.iter().any(|&m| n.abs_diff(m) <= m >> 23);
    for n in numbers(&msg) {
        assert!(
            n <= MAX_ELEMENTS as u128 || near_input(n) || limits.contains(&n),
            "{n} in `{msg}` is neither in the input nor a documented limit (wrapped?)"
        );
    }
}

/// Loads `dir`; if it loads, a short forward pass must give finite logits or a clean error.
fn load_and_run(dir: &Path, input: &str) {
    let outcome = load_and_run_inner(dir, input);
    if std::env::var_os("DSNPU_FUZZ_STATS").is_some() {
        eprintln!("fuzz outcome: {outcome}");
    }
}

/// What happened, for the `DSNPU_FUZZ_STATS` tally: `ran`, or the error's kind.
fn load_and_run_inner(dir: &Path, input: &str) -> String {
    let kind = |err: &ModelError| {
        let dbg = format!("{err:?}");
        dbg.split([' ', '(', '{']).next().unwrap_or("").to_string()
    };
    match DeepseekV3::load(dir) {
        Err(err) => {
            assert_clean(&err, input);
            format!("load error {}", kind(&err))
        }
        Ok(model) => {
            let vocab = model.config().vocab_size as i32;
            let ids: Vec<i32> = [1, 2, 3].iter().map(|i| i % vocab).collect();
            match model.forward(&ids) {
                Ok(logits) => {
                    assert_eq!(logits.shape(), &[3, vocab as usize]);
                    assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits");
                    "ran".into()
                }
                Err(err) => {
                    assert_clean(&err, input);
                    format!("forward error {}", kind(&err))
                }
            }
        }
    }
}

/// Loads `dir` on the device engine (the simulator); if it loads, a prompt's logits must be finite and
/// a short greedy generation must give ids inside the vocabulary, or a clean error.
fn load_and_run_on_device(dir: &Path, input: &str) {
    let opts = EngineOptions {
        num_blocks: 4,
        block_size: 16,
        ..EngineOptions::default()
    };
    let mut engine = match Engine::load(dir, opts, &mut |_, _| {}) {
        Err(err) => return assert_clean(&err, input),
        Ok(e) => e,
    };
    let vocab = engine.config().vocab_size;
    let ids: Vec<i32> = [1, 2, 3].iter().map(|i| i % vocab as i32).collect();
    match engine.prompt_logits(&ids) {
        Ok(logits) => {
            assert_eq!(logits.len(), 3 * vocab);
            assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits");
        }
        Err(err) => assert_clean(&err, input),
    }
    match engine.generate(&[ids], 2, &[]) {
        Ok(out) => assert!(
            out[0].iter().all(|&t| t >= 0 && (t as usize) < vocab),
            "{out:?}"
        ),
        Err(err) => assert_clean(&err, input),
    }
}

// ---- config.json ----

fn seed_config(variant: &str) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(data_dir(variant).join("config.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// Field paths to mutate: every field of the seeds, nested ones, and some the seeds lack.
fn config_keys() -> Vec<String> {
    let mut keys: Vec<String> = VARIANTS
        .iter()
        .flat_map(|v| {
            seed_config(v)
                .into_iter()
                .flat_map(|(k, v)| match v {
                    Value::Object(m) => m.keys().map(|n| format!("{k}.{n}")).collect(),
                    _ => vec![k],
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for extra in [
        "rope_scaling.factor",
        "rope_scaling.type",
        "rope_scaling.rope_type",
        "rope_scaling.original_max_position_embeddings",
        "rope_scaling.attention_factor",
        "rope_scaling.truncate",
        "rope_parameters",
        "rope_parameters.rope_theta",
        "rope_parameters.factor",
        "quantization_config",
        "quantization_config.quant_method",
        "quantization_config.weight_block_size",
        "quantization_config.fmt",
        "num_key_value_heads",
        "moe_layer_freq",
        "attention_bias",
        "topk_method",
        "scoring_func",
        "tie_word_embeddings",
        "eos_token_id",
        "bos_token_id",
    ] {
        keys.push(extra.into());
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Values a config field may be set to: edge integers, any integers, odd floats, strings, other JSON types.
fn json_value() -> impl Strategy<Value = Value> {
    let edge_ints: Vec<u64> = vec![
        0,
        1,
        2,
        3,
        7,
        8,
        64,
        4096,
        1 << 20,
        (1 << 20) + 1,
        i32::MAX as u64,
        1 << 31,
        1 << 32,
        1 << 40,
        1 << 53,
        1 << 60,
        1 << 62,
        1 << 63,
        u64::MAX,
    ];
    prop_oneof![
        4 => proptest::sample::select(edge_ints).prop_map(Value::from),
        2 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => proptest::sample::select(vec![-1.0f64, 0.0, 0.5, 1.0, 1.5, 8.0, 1e-30, 1e30, 1e39, 1e300, -1e300])
            .prop_map(Value::from),
        2 => proptest::sample::select(vec![
            "", "yarn", "default", "linear", "awq", "fp8", "e5m2", "silu", "gelu", "sigmoid", "softmax",
            "noaux_tc", "greedy", "group_limited_greedy", "deepseek_v2", "deepseek_v3", "llama", "\u{0}",
        ])
        .prop_map(Value::from),
        1 => "[a-z0-9_]{0,12}".prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => proptest::collection::vec(0u64..300, 0..4).prop_map(|v| json!(v)),
        1 => Just(json!({})),
        1 => Just(json!({"rope_type": "yarn", "factor": 4.0})),
    ]
}

/// A mutation of a config: set a field path to a value, or remove it.
#[derive(Debug, Clone)]
enum Edit {
    Set(String, Value),
    Remove(String),
}

fn edits() -> impl Strategy<Value = (usize, Vec<Edit>)> {
    let keys = config_keys();
    let edit = prop_oneof![
        4 => (proptest::sample::select(keys.clone()), json_value()).prop_map(|(k, v)| Edit::Set(k, v)),
        1 => proptest::sample::select(keys).prop_map(Edit::Remove),
    ];
    (0..VARIANTS.len(), proptest::collection::vec(edit, 1..4))
}

fn apply(map: &mut serde_json::Map<String, Value>, edit: &Edit) {
    let (path, value) = match edit {
        Edit::Set(p, v) => (p, Some(v.clone())),
        Edit::Remove(p) => (p, None),
    };
    let (map, key) = match path.split_once('.') {
        None => (map, path.as_str()),
        Some((outer, inner)) => {
            let slot = map.entry(outer).or_insert_with(|| json!({}));
            match slot.as_object_mut() {
                Some(m) => (m, inner),
                None => return, // the outer field is no object (an earlier edit): nothing to set in it
            }
        }
    };
    match value {
        Some(v) => {
            map.insert(key.to_string(), v);
        }
        None => {
            map.remove(key);
        }
    }
}

fn mutated_config(variant: usize, edits: &[Edit]) -> String {
    let mut map = seed_config(VARIANTS[variant]);
    for e in edits {
        apply(&mut map, e);
    }
    serde_json::to_string_pretty(&Value::Object(map)).unwrap()
}

/// Text-level damage to a config: truncation and byte replacement.
fn damaged_text() -> impl Strategy<Value = String> {
    (
        0..VARIANTS.len(),
        any::<prop::sample::Index>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(v, cut, flips)| {
            let mut bytes = std::fs::read(data_dir(VARIANTS[v]).join("config.json")).unwrap();
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let keep = cut.index(bytes.len() + 1);
            bytes.truncate(keep.max(bytes.len() * 3 / 4));
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

proptest! {
    #![proptest_config(config(2000))]

    /// 2000 configs through the parser alone: every derived size of an accepted one is computable.
    #[test]
    fn config_parser_ends_in_ok_or_a_clean_error((variant, edits) in edits()) {
        let text = mutated_config(variant, &edits);
        match ModelConfig::from_json_str(&text) {
            Err(err) => assert_clean(&err, &text),
            Ok(c) => {
                // With overflow checks on (tests), any unchecked arithmetic here would panic.
                let _ = (c.qk_head_dim(), c.latent_cache_dim(), c.softmax_scale(), c.gating());
                let q = c.num_attention_heads.checked_mul(c.qk_head_dim());
                prop_assert!(q.is_some_and(|n| n <= MAX_ELEMENTS));
                prop_assert!(c.max_position_embeddings <= MAX_POSITIONS);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// 500 damaged config texts (bytes replaced, truncated).
    #[test]
    fn damaged_config_text_ends_in_ok_or_a_clean_error(text in damaged_text()) {
        if let Err(err) = ModelConfig::from_json_str(&text) {
            assert_clean(&err, &text);
        }
    }
}

/// A temp checkpoint dir holding `config` and symlinks to the seed's other files.
fn checkpoint_with_config(variant: &str, config: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data_dir(variant)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::os::unix::fs::symlink(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(tmp.path().join("config.json"), config).unwrap();
    tmp
}

proptest! {
    #![proptest_config(config(1000))]

    /// 1000 mutated configs loaded with the seed's real weights, and run when they load.
    #[test]
    fn mutated_configs_with_real_weights_load_cleanly((variant, edits) in edits()) {
        let text = mutated_config(variant, &edits);
        let tmp = checkpoint_with_config(VARIANTS[variant], &text);
        load_and_run(tmp.path(), &text);
    }
}

proptest! {
    #![proptest_config(config(150))]

    /// 150 mutated configs loaded with the seed's real weights on the device engine, and run when they
    /// load: the engine plans and sizes its uploads and cache from the config on its own.
    #[test]
    fn mutated_configs_load_cleanly_on_the_device_engine((variant, edits) in edits()) {
        let text = mutated_config(variant, &edits);
        let tmp = checkpoint_with_config(VARIANTS[variant], &text);
        load_and_run_on_device(tmp.path(), &text);
    }
}

// ---- model.safetensors ----

/// The single-file seeds (v3_yarn is sharded).
const SINGLE_FILE_SEEDS: [&str; 4] = ["v3_base", "v3_bf16", "v3_fp8", "v2_lite"];

fn split_file(bytes: &[u8]) -> (serde_json::Map<String, Value>, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), &bytes[8 + n..])
}

fn join_file(header: &serde_json::Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_string(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A mutation of a safetensors file.
#[derive(Debug, Clone)]
enum StMutation {
    /// One tensor's dtype.
    Dtype(prop::sample::Index, String),
    /// One tensor's shape.
    Shape(prop::sample::Index, Vec<u64>),
    /// One tensor's data offsets.
    Offsets(prop::sample::Index, u64, u64),
    /// Swap two tensors' names (same dtype family or not).
    Rename(prop::sample::Index, prop::sample::Index),
    /// Drop a tensor from the header (the data is then not covered exactly).
    Drop(prop::sample::Index),
    /// NaN or an infinity (of the tensor's dtype) written into one element of a tensor.
    Poison(prop::sample::Index, prop::sample::Index, bool, bool),
    /// The 8-byte header length.
    HeaderLen(u64),
    /// Bytes replaced, mostly in the header.
    Bytes(Vec<(prop::sample::Index, u8)>, bool),
    /// Truncate to a fraction of the file, or append bytes.
    Length(prop::sample::Index, Vec<u8>),
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => proptest::sample::select(vec![0u64, 1, 2, 8, 16, 64, 128, 144]),
        1 => proptest::sample::select(vec![1u64 << 31, 1 << 32, 1 << 40, 1 << 62, u64::MAX]),
        1 => any::<u64>(),
    ]
}

fn st_mutation() -> impl Strategy<Value = StMutation> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        2 => (idx(), proptest::sample::select(vec![
            "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "f32", "Q4",
        ]).prop_map(String::from)).prop_map(|(i, d)| StMutation::Dtype(i, d)),
        2 => (idx(), proptest::collection::vec(dim(), 0..4)).prop_map(|(i, s)| StMutation::Shape(i, s)),
        2 => (idx(), dim(), dim()).prop_map(|(i, a, b)| StMutation::Offsets(i, a, b)),
        1 => (idx(), idx()).prop_map(|(a, b)| StMutation::Rename(a, b)),
        1 => idx().prop_map(StMutation::Drop),
        3 => (idx(), idx(), any::<bool>(), any::<bool>()).prop_map(|(t, e, nan, neg)| StMutation::Poison(t, e, nan, neg)),
        1 => dim().prop_map(StMutation::HeaderLen),
        2 => (proptest::collection::vec((idx(), any::<u8>()), 1..8), any::<bool>())
            .prop_map(|(b, h)| StMutation::Bytes(b, h)),
        1 => (idx(), proptest::collection::vec(any::<u8>(), 0..16)).prop_map(|(i, a)| StMutation::Length(i, a)),
    ]
}

/// The mutated file and the header text the errors may quote numbers from.
fn mutate_file(seed: &[u8], m: &StMutation) -> (Vec<u8>, String) {
    let (mut header, data) = split_file(seed);
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let pick = |i: &prop::sample::Index| names[i.index(names.len())].clone();
    let mut bytes = match m {
        StMutation::Dtype(i, d) => {
            header[&pick(i)]["dtype"] = d.clone().into();
            join_file(&header, data)
        }
        StMutation::Shape(i, s) => {
            header[&pick(i)]["shape"] = json!(s);
            join_file(&header, data)
        }
        StMutation::Offsets(i, a, b) => {
            header[&pick(i)]["data_offsets"] = json!([a, b]);
            join_file(&header, data)
        }
        StMutation::Rename(a, b) => {
            let (a, b) = (pick(a), pick(b));
            let (va, vb) = (header[&a].clone(), header[&b].clone());
            header.insert(a, vb);
            header.insert(b, va);
            join_file(&header, data)
        }
        StMutation::Drop(i) => {
            header.remove(&pick(i));
            join_file(&header, data)
        }
        StMutation::Poison(t, e, nan, neg) => {
            let info = &header[&pick(t)];
            let dtype = info["dtype"].as_str().unwrap_or("");
            let offset = |i: usize| info["data_offsets"][i].as_u64().unwrap_or(u64::MAX) as usize;
            let (start, end) = (offset(0), offset(1));
            let sign = if *neg { 0x80u8 } else { 0 };
            let pattern: Vec<u8> = match (dtype, nan) {
                ("F32", true) => f32::NAN.to_le_bytes().to_vec(),
                ("F32", false) => f32::INFINITY.to_le_bytes().to_vec(),
                ("BF16", true) => vec![0xc0, 0x7f | sign],
                ("BF16", false) => vec![0x80, 0x7f | sign],
                ("F16", true) => vec![0x00, 0x7e | sign],
                ("F16", false) => vec![0x00, 0x7c | sign],
                // e4m3fn has no infinity: both bytes are its NaN.
                ("F8_E4M3", _) => vec![0x7f | sign],
                _ => vec![],
            };
            let mut data = data.to_vec();
            let width = pattern.len().max(1);
            // An earlier mutation may have left offsets that do not describe the data: then poison nothing.
            let count = if start <= end && end <= data.len() {
                (end - start) / width
            } else {
                0
            };
            if !pattern.is_empty() && count > 0 {
                let at = start + e.index(count) * width;
                data[at..at + width].copy_from_slice(&pattern);
            }
            join_file(&header, &data)
        }
        StMutation::HeaderLen(n) => {
            let mut out = seed.to_vec();
            out[..8].copy_from_slice(&n.to_le_bytes());
            out
        }
        StMutation::Bytes(flips, in_header) => {
            let mut out = seed.to_vec();
            let header_end = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
            let span = if *in_header { header_end } else { out.len() };
            for (at, b) in flips {
                out[at.index(span)] = *b;
            }
            out
        }
        StMutation::Length(at, extra) => {
            let mut out = seed.to_vec();
            if extra.is_empty() {
                out.truncate(at.index(out.len()));
            } else {
                out.extend_from_slice(extra);
            }
            out
        }
    };
    if bytes.len() < 8 {
        bytes.truncate(bytes.len()); // stays short: the loader must say so
    }
    let text = match bytes.get(..8) {
        Some(n) => {
            let n = u64::from_le_bytes(n.try_into().unwrap());
            let end = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(bytes.len() - 8)
                + 8;
            format!(
                "{n} {} {}",
                bytes.len(),
                String::from_utf8_lossy(&bytes[8..end])
            )
        }
        None => bytes.len().to_string(),
    };
    (bytes, text)
}

proptest! {
    #![proptest_config(config(1500))]

    /// 1500 mutated safetensors files: opened, every tensor read with its stored shape, then loaded and run.
    #[test]
    fn mutated_safetensors_end_in_ok_or_a_clean_error(
        seed in 0..SINGLE_FILE_SEEDS.len(),
        mutations in proptest::collection::vec(st_mutation(), 1..3),
    ) {
        let variant = SINGLE_FILE_SEEDS[seed];
        let mut bytes = std::fs::read(data_dir(variant).join("model.safetensors")).unwrap();
        let mut text = String::new();
        for m in &mutations {
            // Later structural mutations need a parsable header; after byte damage they are skipped.
            let parsable = bytes.len() >= 8 && {
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                usize::try_from(n).ok().and_then(|n| n.checked_add(8)).is_some_and(|e| e <= bytes.len())
                    && serde_json::from_slice::<Value>(&bytes[8..8 + n as usize]).is_ok_and(|v| v.is_object())
            };
            if !parsable {
                break;
            }
            let (b, t) = mutate_file(&bytes, m);
            bytes = b;
            text.push_str(&t);
            text.push(' ');
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(data_dir(variant).join("config.json"), tmp.path().join("config.json")).unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), &bytes).unwrap();
        text.push_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap());

        match Checkpoint::open(tmp.path()) {
            Err(err) => assert_clean(&err, &text),
            Ok(ckpt) => {
                let names: Vec<String> = ckpt.names().map(String::from).collect();
                for name in names {
                    let meta = ckpt.meta(&name).unwrap();
                    if let Err(err) = ckpt.read_f32(&name, &meta.shape) {
                        assert_clean(&err, &text);
                    }
                }
            }
        }
        load_and_run(tmp.path(), &text);
        load_and_run_on_device(tmp.path(), &text);
    }
}
