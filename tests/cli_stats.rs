//! `--stats-json` and `--dtype` of `generate`/`forward`: the report's schema with counts that follow from
//! the run (one host wait and one 4-byte id per decode step on the device engine, the weights loaded
//! once), and `--dtype bf16`: run by the device engine (the same greedy ids as f32 on the test
//! checkpoint), refused clearly on the CPU backend.
use serde_json::Value;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        .output()
        .expect("run dsnpu")
}

fn model() -> String {
    format!("{}/model/tests/data/v3_base", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn generate_writes_the_stats_schema_on_both_backends() {
    let dir = std::env::temp_dir().join(format!("dsnpu-cli-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids = Vec::new();
    for backend in ["cpu", "npu"] {
        let path = dir.join(format!("{backend}.json"));
        let out = run(&[
            "generate",
            "--model",
            &model(),
            "--prompt-ids",
            "5,9,14,2,7",
            "--max-new-tokens",
            "6",
            "--backend",
            backend,
            "--stats-json",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8_lossy(&out.stdout).to_string());
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for key in ["backend", "load", "device", "prefill", "decode", "ops"] {
            assert!(v.get(key).is_some(), "{backend}: no {key} in {v}");
        }
        for (section, fields) in [
            (
                "load",
                &[
                    "h2d_bytes",
                    "weight_bytes",
                    "seconds",
                    "host_peak_rss_bytes",
                ][..],
            ),
            (
                "prefill",
                &["tokens", "h2d_bytes", "d2h_bytes", "syncs", "seconds"][..],
            ),
            (
                "decode",
                &["steps", "h2d_bytes", "d2h_bytes", "syncs", "seconds"][..],
            ),
        ] {
            for f in fields {
                assert!(
                    v[section].get(*f).is_some(),
                    "{backend}: no {section}.{f} in {v}"
                );
            }
        }
        assert_eq!(v["prefill"]["tokens"], 5);
        assert_eq!(v["decode"]["steps"], 5, "{v}");
        if backend == "npu" {
            assert_eq!(v["decode"]["syncs"], 5);
            assert_eq!(v["decode"]["d2h_bytes"], 4 * 5);
            assert_eq!(v["prefill"]["d2h_bytes"], 4);
            let load = v["load"]["h2d_bytes"].as_f64().unwrap();
            let weights = v["load"]["weight_bytes"].as_f64().unwrap();
            assert!(load >= weights && load <= 1.05 * weights, "{v}");
            assert!(
                v["ops"]["sim:0"]["mla_cache_write"].as_u64().unwrap() > 0,
                "{v}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ids[0], ids[1], "both backends generate the same ids");
}

#[test]
fn bf16_runs_on_the_device_and_is_refused_on_the_cpu() {
    let gen = |backend: &str, dtype: &str| {
        run(&[
            "generate",
            "--model",
            &model(),
            "--prompt-ids",
            "5,9,14,2",
            "--max-new-tokens",
            "3",
            "--backend",
            backend,
            "--dtype",
            dtype,
        ])
    };
    let cpu = gen("cpu", "bf16");
    assert!(!cpu.status.success());
    let err = String::from_utf8_lossy(&cpu.stderr);
    assert!(
        err.contains("--dtype bf16") && err.contains("--backend npu"),
        "{err}"
    );
    let bf16 = gen("npu", "bf16");
    let f32 = gen("npu", "f32");
    for out in [&bf16, &f32] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ids = |o: &std::process::Output| -> Vec<i64> {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(',')
            .map(|t| t.parse().unwrap())
            .collect()
    };
    // Three ids in the vocabulary each. They need not equal f32's: this checkpoint's second step has
    // three logits within 0.03 of each other, which bf16 rounding reorders; the bf16 logits themselves
    // are checked against f32 in model/tests/engine.rs.
    for out in [&bf16, &f32] {
        let v = ids(out);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().all(|&t| (0..128).contains(&t)), "{v:?}");
    }
    assert_eq!(
        ids(&bf16)[0],
        ids(&f32)[0],
        "the prefill's id (a clear maximum)"
    );
}

#[test]
fn top_p_sampling_runs_on_the_device_and_matches_the_cpu() {
    // `sample_top_p` on the device with the CPU Sampler's contract: the same ids as `--backend cpu` for
    // the same flags (the logits of the two backends agree far closer than any boundary of these draws),
    // one sampling launch per pass, and still one 4-byte id per sequence and step downloaded.
    let dir = std::env::temp_dir().join(format!("dsnpu-cli-topp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids = Vec::new();
    for (backend, seed) in [("cpu", "1"), ("npu", "1"), ("npu", "2")] {
        let path = dir.join(format!("{backend}-{seed}.json"));
        let out = run(&[
            "generate",
            "--model",
            &model(),
            "--prompt-ids",
            "5,9,14,2,7",
            "--max-new-tokens",
            "12",
            "--top-p",
            "0.9",
            "--temperature",
            "0.7",
            "--seed",
            seed,
            "--backend",
            backend,
            "--stats-json",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8_lossy(&out.stdout).to_string());
        if backend == "npu" {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let ops = v["ops"].as_object().unwrap();
            assert_eq!(ops.len(), 1, "only the device served operators: {v}");
            assert_eq!(v["ops"]["sim:0"]["sample_top_p"], 12, "{v}");
            assert!(v["ops"]["sim:0"].get("argmax").is_none(), "{v}");
            assert_eq!(v["decode"]["steps"], 11);
            assert_eq!(v["decode"]["syncs"], 11);
            assert_eq!(v["decode"]["d2h_bytes"], 4 * 11, "{v}");
            assert_eq!(v["prefill"]["d2h_bytes"], 4, "{v}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ids[0], ids[1], "both backends sample the same ids");
    assert_ne!(ids[1], ids[2], "another seed samples other ids");
}
