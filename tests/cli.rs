//! The `dsnpu` binary end to end: `info` on the simulator, and `generate`/`forward` on a tiny checkpoint
//! against the outputs Hugging Face transformers produced for it (model/tests/data, made by
//! scripts/make_tiny_checkpoints.py).

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dsnpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        // The search must reach the simulator, whatever the developer's environment says.
        .env_remove("DSNPU_ACL_LIB")
        .env_remove("ASCEND_HOME_PATH")
        .env_remove("ASCEND_TOOLKIT_HOME")
        .output()
        .expect("run dsnpu")
}

fn checkpoint(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("model/tests/data")
        .join(variant)
}

fn reference_tensor(variant: &str, name: &str) -> (Vec<usize>, Vec<u8>, Dtype) {
    let bytes = std::fs::read(checkpoint(variant).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), t.data().to_vec(), t.dtype())
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn join(ids: &[i32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn info_reports_the_simulator_and_its_device() {
    let out = dsnpu(&["info"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("AscendCL library: simulator"), "{stdout}");
    assert!(stdout.contains("libdsnpu_sim.so"), "{stdout}");
    assert!(stdout.contains("devices: 1"), "{stdout}");
    // The simulator's default capacity is 64 GiB.
    assert!(stdout.contains("68719476736 bytes) total"), "{stdout}");
}

#[test]
fn info_with_a_bad_explicit_library_fails_and_names_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .arg("info")
        .env("DSNPU_ACL_LIB", "/nonexistent/libascendcl.so")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An explicit path is taken at its word: no silent fallback to another library.
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("/nonexistent/libascendcl.so"), "{stderr}");
    assert!(
        stderr.contains("ASCEND_HOME_PATH"),
        "the variables consulted are listed: {stderr}"
    );
}

/// Runs `dsnpu generate` on v3_base's reference prompt with `extra` arguments; checks that stdout is
/// exactly one line holding transformers' greedy ids, and returns stderr.
fn generate_reference_ids(extra: &[&str]) -> String {
    let (_, prompt, _) = reference_tensor("v3_base", "prompt_ids");
    let (_, generated, _) = reference_tensor("v3_base", "generated_ids");
    let (prompt, generated) = (i32s(&prompt), i32s(&generated));
    let model = checkpoint("v3_base");
    let (prompt, max_new) = (join(&prompt), generated.len().to_string());
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        &prompt,
        "--max-new-tokens",
        &max_new,
    ];
    args.extend_from_slice(extra);
    let out = dsnpu(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![join(&generated).as_str()],
        "stdout must be exactly one line of ids"
    );
    stderr
}

#[test]
fn generate_matches_transformers_greedy_ids() {
    generate_reference_ids(&[]);
}

#[test]
fn forward_writes_logits_matching_transformers() {
    let (_, prompt, _) = reference_tensor("v3_base", "prompt_ids");
    let prompt = i32s(&prompt);
    let (shape, logits, dtype) = reference_tensor("v3_base", "logits");
    assert_eq!(dtype, Dtype::F32);
    let vocab = shape[1];
    let expected = f32s(&logits);
    let dir = std::env::temp_dir().join(format!("dsnpu-cli-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("logits.safetensors");
    let model = checkpoint("v3_base");
    let out = dsnpu(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        &join(&prompt),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    assert_eq!(t.shape(), &[prompt.len(), vocab]);
    let got = f32s(t.data());
    // The reference covers the prompt and then generated positions; the prompt rows come first.
    let worst = got
        .iter()
        .zip(&expected[..prompt.len() * vocab])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-3, "max |logit difference| {worst}");
}

#[test]
fn generate_rejects_malformed_prompt_ids() {
    let model = checkpoint("v3_base");
    let out = dsnpu(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        "1,x,3",
        "--max-new-tokens",
        "2",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error:"), "{stderr}");
}

#[test]
fn generate_on_the_npu_backend_matches_transformers_and_reports_where_ops_ran() {
    let stderr = generate_reference_ids(&["--backend", "npu"]);
    // Operators with kernels ran on the simulator's device 0, the rest on the CPU references.
    let device = stderr
        .lines()
        .find(|l| l.starts_with("ops on sim:0: "))
        .unwrap_or_else(|| panic!("no device line: {stderr}"));
    for op in ["linear ", "rms_norm ", "moe_init_routing ", "mla_decode "] {
        assert!(device.contains(op), "{op}missing: {device}");
    }
}
