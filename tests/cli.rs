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
    if std::env::var_os("DSNPU_SIM_AICORE_NUM").is_none() {
        assert!(
            stdout.contains("; 24 AI Cores (cube), 48 vector cores"),
            "{stdout}"
        );
    }
    // The cores as the simulator is configured.
    let out = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .arg("info")
        .env_remove("DSNPU_ACL_LIB")
        .env_remove("ASCEND_HOME_PATH")
        .env_remove("ASCEND_TOOLKIT_HOME")
        .env("DSNPU_SIM_AICORE_NUM", "20,40")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("; 20 AI Cores (cube), 40 vector cores"),
        "{stdout}"
    );
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

// ---- Bad input on the command line and in checkpoints: clean failures (issue 15) ----

/// Runs `dsnpu args` with a 60 s limit; a run that hangs is killed and fails the test.
fn dsnpu_within_60s(args: &[&str]) -> Output {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        .env_remove("DSNPU_ACL_LIB")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dsnpu");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dsnpu {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The run failed with exit code 1 and one `error:` line; returns that line.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

/// A temp copy of a committed checkpoint.
fn copy_checkpoint(variant: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(checkpoint(variant)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let dir = tmp.path().to_path_buf();
    (tmp, dir)
}

/// Replaces f32 tensor `name` of `dir/model.safetensors` by `edit` of its values.
fn edit_f32_tensor(dir: &Path, name: &str, edit: impl FnOnce(&mut [f32])) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    let (_, dtype, _, data) = tensors.iter_mut().find(|t| t.0 == name).unwrap();
    assert_eq!(*dtype, Dtype::F32);
    let mut values = f32s(data);
    edit(&mut values);
    *data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &path).unwrap();
}

#[test]
fn generate_with_the_largest_max_new_tokens_fails_without_wrapping() {
    // Every way to run `generate` checks the lengths the same way, with the same words: on the CPU, on
    // one device and over expert-parallel ranks (whose coordinator refuses before it spawns a rank).
    let model = checkpoint("v3_base");
    for backend in [&[][..], &["--backend", "npu"], &["--ep", "2"]] {
        for (n, positions) in [
            ("18446744073709551615", None),
            ("62", Some(64)),
            ("63", None),
        ] {
            let mut args = vec![
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--prompt-ids",
                "1,2,3",
                "--max-new-tokens",
                n,
            ];
            args.extend_from_slice(backend);
            let out = dsnpu_within_60s(&args);
            if positions.is_some() {
                // 3 prompt + 62 new tokens need exactly the 64 positions there are.
                assert!(out.status.success(), "{backend:?} {n}: {out:?}");
                continue;
            }
            assert_eq!(
                error_line(&out),
                format!(
                    "error: invalid input: prompt 0: 3 prompt + {n} new tokens need more than the 64 \
                     positions of max_position_embeddings"
                ),
                "{backend:?}"
            );
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn an_os_error_is_printed_once() {
    let out = dsnpu_within_60s(&[
        "forward",
        "--model",
        "/nonexistent/dsnpu-model",
        "--prompt-ids",
        "1",
        "--out",
        // A writable folder: a missing one is refused first (outputs are checked before the model).
        std::env::temp_dir()
            .join("dsnpu-never-written.safetensors")
            .to_str()
            .unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = error_line(&out);
    assert_eq!(
        line,
        "error: /nonexistent/dsnpu-model/config.json: No such file or directory (os error 2)"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("caused by"), "{stderr}");
}

#[test]
fn max_new_tokens_0_still_checks_the_checkpoint_the_options_and_the_prompts() {
    // Asking for no tokens used to skip every check on the device engine (a missing checkpoint exited
    // 0) and the prompt check on the CPU: now each way to run `generate` refuses what it would refuse
    // for one token, and answers a valid request with one empty line per prompt.
    let model = checkpoint("v3_base");
    let m = model.to_str().unwrap();
    for backend in [&[][..], &["--backend", "npu"], &["--ep", "2"]] {
        let run = |model: &str, ids: &str, extra: &[&str]| {
            let mut args = vec![
                "generate",
                "--model",
                model,
                "--prompt-ids",
                ids,
                "--max-new-tokens",
                "0",
            ];
            args.extend_from_slice(backend);
            args.extend_from_slice(extra);
            dsnpu_within_60s(&args)
        };
        let out = run("/nonexistent/dsnpu-model", "1", &[]);
        assert!(
            error_line(&out).ends_with(
                "/nonexistent/dsnpu-model/config.json: No such file or directory (os error 2)"
            ),
            "{backend:?}: {out:?}"
        );
        let out = run(m, "1,2;5,128", &[]);
        assert!(
            error_line(&out).contains(
                "invalid input: prompt 1: token 1 is 128, outside the vocabulary (0..128)"
            ),
            "{backend:?}: {out:?}"
        );
        let out = run(m, "1", &["--temperature", "nan"]);
        assert!(
            error_line(&out).contains("argument `temperature` is invalid"),
            "{backend:?}: {out:?}"
        );
        let out = run(m, "1,2;3", &[]);
        assert!(out.status.success(), "{backend:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "\n\n", "{backend:?}");
    }
}

#[test]
fn outputs_that_cannot_be_created_are_refused_before_the_model_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let missing = tmp.path().join("no-such-folder/logits.safetensors");
    let model = checkpoint("v3_base");
    let m = model.to_str().unwrap();
    for backend in ["cpu", "npu"] {
        let forward = |out: &str, extra: &[&str]| {
            let mut args = vec![
                "forward",
                "--model",
                m,
                "--prompt-ids",
                "1,2",
                "--out",
                out,
                "--backend",
                backend,
            ];
            args.extend_from_slice(extra);
            dsnpu_within_60s(&args)
        };
        for (out, extra, want) in [
            (
                missing.to_str().unwrap(),
                &[][..],
                format!(
                    "error: --out {}: the folder {} does not exist",
                    missing.display(),
                    missing.parent().unwrap().display()
                ),
            ),
            (
                dir,
                &[],
                format!("error: --out {dir}: is a directory, not a file"),
            ),
            (
                &format!("{dir}/logits.safetensors"),
                &["--stats-json", dir],
                format!("error: --stats-json {dir}: is a directory, not a file"),
            ),
        ] {
            let run = forward(out, extra);
            assert_eq!(error_line(&run), want, "{backend}");
            // Nothing was loaded or computed first.
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(!stderr.contains("loaded"), "{backend}: {stderr}");
        }
        let run = dsnpu_within_60s(&[
            "generate",
            "--model",
            m,
            "--prompt-ids",
            "1",
            "--max-new-tokens",
            "1",
            "--backend",
            backend,
            "--stats-json",
            dir,
        ]);
        assert_eq!(
            error_line(&run),
            format!("error: --stats-json {dir}: is a directory, not a file")
        );
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn a_fifo_config_fails_without_blocking() {
    let (_tmp, dir) = copy_checkpoint("v3_base");
    let config = dir.join("config.json");
    std::fs::remove_file(&config).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap()
        .success());
    let out = dsnpu_within_60s(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "--max-new-tokens",
        "1",
    ]);
    assert_eq!(
        error_line(&out),
        format!(
            "error: {}: expected a regular file, found a FIFO (named pipe)",
            config.display()
        )
    );
}

#[test]
fn dev_zero_as_the_weights_is_named_a_character_device() {
    let (_tmp, dir) = copy_checkpoint("v3_base");
    let weights = dir.join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &weights).unwrap();
    let out = dsnpu_within_60s(&[
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "--out",
        dir.join("out.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(
        error_line(&out),
        format!(
            "error: {}: expected a regular file, found a character device",
            weights.display()
        )
    );
}

#[test]
fn nan_weights_are_refused_and_non_finite_logits_never_written_or_sampled() {
    // A NaN in the final norm: rejected at load.
    let (_tmp, dir) = copy_checkpoint("v3_base");
    edit_f32_tensor(&dir, "model.norm.weight", |v| v[3] = f32::NAN);
    let out_file = dir.join("logits.safetensors");
    let args = [
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1,2,3",
        "--out",
        out_file.to_str().unwrap(),
    ];
    assert_eq!(
        error_line(&dsnpu_within_60s(&args)),
        "error: tensor `model.norm.weight` holds NaN at index [3]"
    );
    assert!(!out_file.exists());

    // Finite weights that overflow: lm_head row 9 of 3e38 makes logit column 9 non-finite, on both backends.
    let (_tmp, dir) = copy_checkpoint("v3_base");
    edit_f32_tensor(&dir, "lm_head.weight", |v| v[9 * 64..10 * 64].fill(3e38));
    let out_file = dir.join("logits.safetensors");
    for backend in ["cpu", "npu"] {
        let out = dsnpu_within_60s(&[
            "forward",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--out",
            out_file.to_str().unwrap(),
            "--backend",
            backend,
        ]);
        let line = error_line(&out);
        // The CPU backend checks every stage and names the first; the device engine checks the logits
        // it downloads.
        let named = match backend {
            "cpu" => "error: lm_head (linear) produced ",
            _ => "error: the device forward's logits (lm_head; ",
        };
        assert!(
            line.starts_with(named) && line.contains(", 9] "),
            "{backend}: {line}"
        );
        assert!(!out_file.exists(), "{backend}");
    }
    // Greedy generation: the device engine downloads only the ids, and its argmax marks the row whose
    // logits are not finite instead of returning an id from it (it used to exit 0 with ids).
    for backend in ["cpu", "npu"] {
        let out = dsnpu_within_60s(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--max-new-tokens",
            "2",
            "--backend",
            backend,
        ]);
        let line = error_line(&out);
        let named = match backend {
            "cpu" => "error: lm_head (linear) produced ",
            _ => "error: the device's logits (lm_head; ",
        };
        assert!(line.starts_with(named), "{backend}: {line}");
    }
}

/// `forward` on v3_fp8 with `extra` arguments: the logits `[prompt, vocab]` and stderr.
fn fp8_forward(prompt: &[i32], extra: &[&str]) -> (Vec<f32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logits.safetensors");
    let model = checkpoint("v3_fp8");
    let mut args = vec![
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
    ];
    let ids = join(prompt);
    args.push(&ids);
    args.extend_from_slice(&["--out", file.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let out = dsnpu(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stderr: {stderr}");
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    assert_eq!(t.shape()[0], prompt.len());
    (f32s(t.data()), stderr)
}

/// The FP8 checkpoint on the device (weights kept FP8, dequantized tile by tile in the kernels)
/// against the CPU backend (weights dequantized at load): the same greedy ids, and logits within 1e-3
/// (the engine's tolerance against transformers), in f32.
#[test]
fn fp8_checkpoint_on_the_npu_backend_matches_the_cpu_backend() {
    let (_, prompt, _) = reference_tensor("v3_fp8", "prompt_ids");
    let prompt = i32s(&prompt);
    let (cpu, _) = fp8_forward(&prompt, &[]);
    let (npu, stderr) = fp8_forward(&prompt, &["--backend", "npu"]);
    let worst = cpu
        .iter()
        .zip(&npu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let max = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("v3_fp8 forward, npu vs cpu: max |logit difference| {worst}, max |logit| {max}");
    assert!(worst <= 1e-3, "max |logit difference| {worst}");
    assert!(stderr.contains("linear_fp8"), "{stderr}");
    assert!(stderr.contains("expert_ffn_fp8"), "{stderr}");

    let model = checkpoint("v3_fp8");
    let ids = join(&prompt);
    let generate = |backend: &str| {
        let out = dsnpu(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            &ids,
            "--max-new-tokens",
            "8",
            "--backend",
            backend,
        ]);
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (cpu_ids, npu_ids) = (generate("cpu"), generate("npu"));
    assert_eq!(cpu_ids.lines().count(), 1, "{cpu_ids}");
    assert_eq!(npu_ids, cpu_ids);
}
