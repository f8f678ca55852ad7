//! Peak host memory while the device engine loads a sharded checkpoint (issue 10 item 2): a checkpoint
//! of 5 shards and ~376 MiB (the test checkpoint's layout with a 131072-token vocabulary, a 131072-wide
//! dense MLP and 16384-wide experts; the largest tensor is 32 MiB) is written here, then a fresh child
//! process loads it onto the (simulated) device and reads its `VmHWM` before and after.
//!
//! On the simulator the device memory is host memory of the same process, so the bound is on what the
//! load holds **besides** the device allocations: peak RSS − RSS before the load − device memory the
//! engine's pool reserved ≤ the largest tensor after conversion + 256 MiB. A loader that read whole
//! shards or the whole checkpoint into host memory (or kept every mapped page resident) exceeds it.
use std::collections::HashMap;
use std::path::Path;

use dsnpu_model::device::{Engine, EngineOptions};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

const VOCAB: usize = 131_072;
const INTER: usize = 131_072;
const MOE_INTER: usize = 16_384;
const MIB: u64 = 1 << 20;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `VmHWM` and `VmRSS` of this process, bytes.
fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let get = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (get("VmHWM:"), get("VmRSS:"))
}

/// The enlarged shape of a test-checkpoint tensor.
fn shape(name: &str, shape: &[usize]) -> Vec<usize> {
    if name.contains("embed_tokens") || name.starts_with("lm_head") {
        return vec![VOCAB, shape[1]];
    }
    if name.contains(".mlp.") && !name.contains(".mlp.gate.") {
        return shape
            .iter()
            .map(|&d| match d {
                96 => INTER,
                16 => MOE_INTER,
                d => d,
            })
            .collect();
    }
    shape.to_vec()
}

/// Small deterministic values (norm weights 1, the router bias 0).
fn values(name: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 4);
    let mut x = 0x9E37_79B9u32 ^ name.len() as u32;
    for _ in 0..n {
        let v = if name.contains("norm") {
            1.0f32
        } else if name.contains("e_score_correction_bias") {
            0.0
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.04
        };
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes the enlarged checkpoint into `dir` as one shard per layer plus one for the rest; returns the
/// largest tensor's bytes and the total.
fn write_checkpoint(dir: &Path) -> (u64, u64) {
    let base = std::fs::read(data("v3_base").join("model.safetensors")).unwrap();
    let base = SafeTensors::deserialize(&base).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("v3_base").join("config.json")).unwrap(),
    )
    .unwrap();
    config["vocab_size"] = VOCAB.into();
    config["intermediate_size"] = INTER.into();
    config["moe_intermediate_size"] = MOE_INTER.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut shards: HashMap<String, Vec<(String, Vec<usize>)>> = HashMap::new();
    for (name, view) in base.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let shard = match name.strip_prefix("model.layers.") {
            Some(rest) => format!("layer-{}.safetensors", rest.split('.').next().unwrap()),
            None => "rest.safetensors".to_string(),
        };
        let s = shape(&name, view.shape());
        shards.entry(shard).or_default().push((name, s));
    }
    let (mut largest, mut total) = (0u64, 0u64);
    let mut index = serde_json::Map::new();
    for (file, tensors) in &shards {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s)| (n.clone(), s.clone(), values(n, s.iter().product())))
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        for (n, _, b) in &bytes {
            largest = largest.max(b.len() as u64);
            total += b.len() as u64;
            index.insert(n.clone(), file.clone().into());
        }
        safetensors::serialize_to_file(views, &None, &dir.join(file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": index});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    (largest, total)
}

#[test]
fn loading_a_sharded_checkpoint_holds_one_tensor_at_a_time() {
    if let Some(dir) = std::env::var_os("LOAD_RSS_CHILD") {
        let (hwm_before, rss_before) = rss();
        let opts = EngineOptions {
            num_blocks: 4,
            block_size: 16,
            ..EngineOptions::default()
        };
        let engine = Engine::load(&dir, opts, &mut |_, _| {}).unwrap();
        let (hwm_after, _) = rss();
        println!(
            "LOAD-RSS {} {} {} {} {}",
            hwm_before,
            rss_before,
            hwm_after,
            engine.device_peak_bytes(),
            engine.stats().weight_bytes
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (largest, total) = write_checkpoint(dir.path());
    assert_eq!(largest, 32 * MIB);
    assert!(
        total > largest + 256 * MIB,
        "{total}: the bound must be meaningful"
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "loading_a_sharded_checkpoint_holds_one_tensor_at_a_time",
            "--exact",
            "--nocapture",
        ])
        .env("LOAD_RSS_CHILD", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.split("LOAD-RSS ").nth(1))
        .unwrap_or_else(|| panic!("no LOAD-RSS line in {text}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (rss_before, hwm_after, device, weights) = (n[1], n[2], n[3], n[4]);
    assert!(weights >= total - MIB, "{weights} of {total} weight bytes");
    let held = hwm_after.saturating_sub(rss_before).saturating_sub(device);
    eprintln!(
        "checkpoint {} MiB, largest tensor {} MiB, peak RSS {} MiB (before load {} MiB), device memory {} MiB: \
         the load held {} MiB besides the device allocations",
        total / MIB,
        largest / MIB,
        hwm_after / MIB,
        rss_before / MIB,
        device / MIB,
        held / MIB
    );
    assert!(
        held <= largest + 256 * MIB,
        "the load held {} MiB besides the device memory; the bound is {} MiB",
        held / MIB,
        (largest + 256 * MIB) / MIB
    );
}
