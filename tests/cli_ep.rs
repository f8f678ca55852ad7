//! `generate --ep N` / `forward --ep N`: the model over N worker processes (attention data-parallel,
//! MoE expert-parallel over the simulator's HCCL) prints the single-device ids, each rank loads only
//! its experts, and a failing worker ends the run with an error, never a hang.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a run may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(90);

fn data(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("model/tests/data/{variant}"))
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dsnpu-cli-ep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs dsnpu, failing the test if it outlives [`DEADLINE`].
fn run(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        .env_remove("DSNPU_SIM_DEVICES")
        .env("DSNPU_SIM_HCCL_TIMEOUT_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            child.kill().unwrap();
            panic!("dsnpu {args:?} still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

fn ok(args: &[&str]) -> String {
    let (out, _) = run(args);
    assert!(
        out.status.success(),
        "dsnpu {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn generate(variant: &str, prompts: &str, n: usize, extra: &[&str]) -> String {
    let model = data(variant);
    let ep = n.to_string();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        prompts,
        "--max-new-tokens",
        "6",
        "--ep",
        &ep,
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

/// The committed transformers reference of a variant: (prompt, greedy continuation).
fn reference(variant: &str) -> (Vec<i32>, Vec<i32>) {
    let bytes = std::fs::read(data(variant).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> Vec<i32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    (ints("prompt_ids"), ints("generated_ids"))
}

fn csv(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn ep_2_and_4_print_the_ids_of_ep_1_and_of_transformers() {
    for variant in ["v3_base", "v2_lite", "v3_fp8"] {
        let (prompt, want) = reference(variant);
        let model = data(variant);
        let n_new = want.len().to_string();
        let one = |ep: &str| {
            ok(&[
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--prompt-ids",
                &csv(&prompt),
                "--max-new-tokens",
                &n_new,
                "--ep",
                ep,
            ])
        };
        let ep1 = one("1");
        assert_eq!(ep1.trim(), csv(&want), "{variant}: --ep 1 vs transformers");
        for ep in ["2", "4"] {
            assert_eq!(one(ep), ep1, "{variant}: --ep {ep} vs --ep 1");
        }
    }
}

#[test]
fn a_batch_spread_over_the_ranks_prints_each_prompts_single_device_ids() {
    let prompts = ["5,9,14,2,7", "3,1,4", "8,8,8,8,1,2,3,4,5", "77", "6,0"];
    let batch = prompts.join(";");
    let ep1 = generate("v3_base", &batch, 1, &[]);
    assert_eq!(ep1.lines().count(), prompts.len());
    // Each prompt alone on the plain device engine.
    let model = data("v3_base");
    for (line, p) in ep1.lines().zip(prompts) {
        let alone = ok(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            p,
            "--max-new-tokens",
            "6",
            "--backend",
            "npu",
        ]);
        assert_eq!(line, alone.trim(), "prompt {p}");
    }
    // 5 prompts over 2 and 4 ranks: uneven shares, ranks finishing their sequences at different
    // steps (rank 0 holds two prompts at --ep 4), all serving experts until the last one is done.
    for n in [2, 4] {
        assert_eq!(generate("v3_base", &batch, n, &[]), ep1, "--ep {n}");
    }
    // Sampled: prompt i draws with seed 5 + i whatever rank runs it, as in the single-device batch.
    let sampled = ["--temperature", "0.8", "--top-p", "0.9", "--seed", "5"];
    let mut one_device = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        &batch,
        "--max-new-tokens",
        "6",
        "--backend",
        "npu",
    ];
    one_device.extend_from_slice(&sampled);
    let one_device = ok(&one_device);
    for n in [1, 2] {
        assert_eq!(
            generate("v3_base", &batch, n, &sampled),
            one_device,
            "sampled, --ep {n}"
        );
    }
    // Chunked prefill: the ranks run different numbers of passes per step (a 9-token prompt in
    // passes of 2 is 5), matched by idle ones.
    assert_eq!(
        generate("v3_base", &batch, 2, &["--max-prefill-tokens", "2"]),
        ep1,
        "--ep 2 with chunked prefill"
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn each_rank_loads_attention_shared_and_its_own_experts_and_counts_its_hccl_bytes() {
    let dir = scratch("stats");
    let model = data("v3_base");
    let cfg = read_json(&model.join("config.json"));
    let field = |k: &str| cfg[k].as_u64().unwrap();
    let (e, h, inter, layers, dense) = (
        field("n_routed_experts"),
        field("hidden_size"),
        field("moe_intermediate_size"),
        field("num_hidden_layers"),
        field("first_k_dense_replace"),
    );
    // One routed expert: gate, up [I, H] and down [H, I] in f32.
    let expert_bytes = 3 * inter * h * 4;
    let moe_layers = layers - dense;
    let full = dir.join("full.json");
    ok(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        "5,9,14,2,7",
        "--max-new-tokens",
        "4",
        "--backend",
        "npu",
        "--stats-json",
        full.to_str().unwrap(),
    ]);
    let all_weights = read_json(&full)["load"]["weight_bytes"].as_u64().unwrap();
    for n in [2u64, 4] {
        let stats = dir.join(format!("ep{n}.json"));
        generate(
            "v3_base",
            "5,9,14,2,7;3,1,4",
            n as usize,
            &["--stats-json", stats.to_str().unwrap()],
        );
        assert!(!stats.exists(), "per-rank files only");
        let (mut sent, mut recv) = (0, 0);
        for k in 0..n {
            let v = read_json(&dir.join(format!("ep{n}.json.rank{k}")));
            let local = e / n;
            assert_eq!(
                v["load"]["weight_bytes"].as_u64().unwrap(),
                all_weights - moe_layers * (e - local) * expert_bytes,
                "--ep {n} rank {k}: everything but the other ranks' experts"
            );
            assert_eq!(
                v["ep"]["experts"],
                serde_json::json!([k * local, (k + 1) * local])
            );
            let (s, r) = (
                v["hccl"]["sent_bytes"].as_u64().unwrap(),
                v["hccl"]["recv_bytes"].as_u64().unwrap(),
            );
            assert!(s > 0 && r > 0, "--ep {n} rank {k}: {}", v["hccl"]);
            sent += s;
            recv += r;
        }
        assert_eq!(sent, recv, "--ep {n}: every byte sent is received");
        assert!(!dir.join(format!("ep{n}.json.rank{n}")).exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forward_over_2_ranks_writes_the_single_device_logits() {
    let dir = scratch("forward");
    let model = data("v3_base");
    let logits = |extra: &[&str], name: &str| -> Vec<f32> {
        let out = dir.join(name);
        let mut args = vec![
            "forward",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            "3,1,4,1,5,9,2,6",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&args);
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("logits")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let single = logits(&["--backend", "npu"], "npu.safetensors");
    assert_eq!(single.len(), 8 * 128);
    // Each token's top-k outputs are summed in k order on its own rank, as on one device: the
    // same kernels on the same rows, so the logits agree to rounding. Also in passes of 3 tokens
    // (rank 0 runs 3 passes, rank 1 as many idle ones).
    let scale = single.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (extra, name) in [
        (&["--ep", "2"][..], "ep.safetensors"),
        (
            &["--ep", "2", "--max-prefill-tokens", "3"][..],
            "ep-chunked.safetensors",
        ),
    ] {
        let ep = logits(extra, name);
        assert_eq!(ep.len(), single.len());
        let worst = single
            .iter()
            .zip(&ep)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{extra:?}: max |ep - single| {worst}, scale {scale}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of v3_base without one tensor of expert `missing` of the last layer.
fn checkpoint_without_expert(dir: &Path, missing: usize) -> PathBuf {
    let src = data("v3_base");
    let out = dir.join("broken");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let layers = read_json(&src.join("config.json"))["num_hidden_layers"]
        .as_u64()
        .unwrap();
    let gone = format!(
        "model.layers.{}.mlp.experts.{missing}.down_proj.weight",
        layers - 1
    );
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| *name != gone)
        .collect();
    assert_eq!(kept.len() + 1, st.len(), "{gone} was in the checkpoint");
    safetensors::serialize_to_file(kept, &None, &out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn a_failing_worker_fails_the_run_with_its_error_and_the_others_are_stopped() {
    let dir = scratch("broken");
    // Only the last rank of 4 holds expert 7: it fails loading while the others load fine and wait
    // for it at the rendezvous or in a collective.
    let broken = checkpoint_without_expert(&dir, 7);
    let (out, took) = run(&[
        "generate",
        "--model",
        broken.to_str().unwrap(),
        "--prompt-ids",
        "5,9,14,2,7",
        "--max-new-tokens",
        "4",
        "--ep",
        "4",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(out.stdout.is_empty(), "no ids printed");
    assert!(err.contains("rank 3 failed"), "{err}");
    assert!(err.contains("experts.7.down_proj.weight"), "{err}");
    // Well before the 60 s HCCL timeout: the parent stops the waiting ranks itself.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Every rank failing (a checkpoint that is not there) is reported too.
    let (out, _) = run(&[
        "generate",
        "--model",
        dir.join("nothing").to_str().unwrap(),
        "--prompt-ids",
        "5",
        "--max-new-tokens",
        "1",
        "--ep",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("config.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_ep_arguments_are_usage_errors() {
    let model = data("v3_base");
    let m = model.to_str().unwrap();
    // 8 experts do not divide over 3 ranks.
    let (out, _) = run(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "5",
        "--max-new-tokens",
        "1",
        "--ep",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("8 routed experts do not divide over 3 ranks"),
        "{err}"
    );
    let (out, _) = run(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "5",
        "--max-new-tokens",
        "1",
        "--ep",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ep needs at least 1 rank"));
}

#[test]
fn forward_refuses_a_bad_prompt_before_any_rank_is_spawned() {
    // It used to start the workers, and report rank 0's failure (the others stopped) with its lines.
    let model = data("v3_base");
    let out_file = scratch("fwd-prompt").join("logits.safetensors");
    let long = vec!["1"; 65].join(",");
    for (ids, msg) in [
        (
            "1,200",
            "error: invalid input: prompt 0: token 1 is 200, outside the vocabulary (0..128)",
        ),
        (
            long.as_str(),
            "error: invalid input: prompt 0: 65 prompt + 0 new tokens need more than the 64 positions of max_position_embeddings",
        ),
    ] {
        let (out, _) = run(&[
            "forward",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            ids,
            "--out",
            out_file.to_str().unwrap(),
            "--ep",
            "2",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end(), msg);
    }
    let _ = std::fs::remove_dir_all(out_file.parent().unwrap());
}

#[test]
fn rank_counts_the_experts_do_not_divide_over_fail_before_any_rank_is_spawned() {
    // `--ep 18446744073709551615` used to panic allocating the workers' table, and `--ep 16` started
    // 16 workers that each failed on their own: the coordinator now refuses both itself.
    let model = data("v3_base");
    let m = model.to_str().unwrap();
    let out_file = scratch("count").join("logits.safetensors");
    for n in ["18446744073709551615", "9223372036854775808", "16", "3"] {
        for cmd in ["generate", "forward"] {
            let mut args = vec![cmd, "--model", m, "--prompt-ids", "5", "--ep", n];
            if cmd == "generate" {
                args.extend(["--max-new-tokens", "1"]);
            } else {
                args.extend(["--out", out_file.to_str().unwrap()]);
            }
            let (out, _) = run(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd} --ep {n}: {err}");
            assert_eq!(
                err.trim_end(),
                format!("error: --ep {n}: 8 routed experts do not divide over {n} ranks"),
                "{cmd}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(out_file.parent().unwrap());
}

#[test]
fn a_worker_whose_root_file_can_never_be_read_fails_at_once_naming_it() {
    // Rank 1 used to wait out the 120 s rendezvous for a root file that could never appear.
    let dir = scratch("root");
    let model = data("v3_base");
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, "garbage").unwrap();
    let missing = dir.join("no-such-folder/root");
    for (root, want) in [
        (
            String::new(),
            "error: DSNPU_EP_ROOT_FILE is set but empty: give the path rank 0 writes the HCCL root info to"
                .to_string(),
        ),
        (
            missing.display().to_string(),
            format!(
                "error: DSNPU_EP_ROOT_FILE={}: the folder {} does not exist",
                missing.display(),
                missing.parent().unwrap().display()
            ),
        ),
        (
            dir.display().to_string(),
            format!(
                "error: device: invalid argument: root info file {}: Is a directory (os error 21)",
                dir.display()
            ),
        ),
        (
            garbage.display().to_string(),
            format!(
                "error: device: invalid argument: root info file {}: a root info is 4108 bytes, got 7",
                garbage.display()
            ),
        ),
    ] {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
            .args(["generate", "--model", model.to_str().unwrap()])
            .args(["--prompt-ids", "5", "--max-new-tokens", "1", "--ep", "2"])
            .env("DSNPU_SIM_DEVICES", "2")
            .env("DSNPU_EP_ROOT_FILE", &root)
            .env("RANK", "1")
            .env("WORLD_SIZE", "2")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{root:?}: {err}");
        assert_eq!(err.trim_end(), want, "{root:?}");
        assert!(start.elapsed() < Duration::from_secs(30), "{root:?} waited");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
