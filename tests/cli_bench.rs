//! `dsnpu bench` end to end on the simulator (quick preset): the JSON report has every kernel with
//! positive modelled and roofline times, figures that agree with sizes worked out here, and `--plot`
//! writes a PNG; `--op` selects and an unknown operator is a usage error.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const KERNELS: [&str; 20] = [
    "moe_gating_topk_f32",
    "moe_init_routing_bf16",
    "moe_init_routing_quant_bf16",
    "grouped_matmul_bf16",
    "expert_ffn_bf16",
    "moe_finalize_routing_bf16",
    "linear_bf16",
    "rms_norm_bf16",
    "add_rms_norm_bf16",
    "rope_bf16",
    "silu_mul_bf16",
    "mla_cache_write_bf16",
    "mla_decode_bf16",
    "mla_prefill_f32",
    "mla_prefill_f16",
    "mla_prefill_bf16",
    "gather_rows_bf16",
    "argmax_bf16",
    "softmax_bf16",
    "sample_top_p_bf16",
];

fn bench(args: &[&str]) -> Output {
    bench_on(args, None)
}

/// `dsnpu bench` on the simulator, with the simulated cores `cores` (`DSNPU_SIM_AICORE_NUM`) or its
/// default, one 910B2 die.
fn bench_on(args: &[&str], cores: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsnpu"));
    cmd.arg("bench")
        .args(args)
        .env_remove("DSNPU_ACL_LIB")
        .env_remove("ASCEND_HOME_PATH")
        .env_remove("ASCEND_TOOLKIT_HOME")
        .env_remove("DSNPU_SIM_AICORE_NUM");
    if let Some(c) = cores {
        cmd.env("DSNPU_SIM_AICORE_NUM", c);
    }
    cmd.output().expect("run dsnpu bench")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dsnpu-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Width and height from a PNG's signature and IHDR chunk, or None when it is not a PNG.
fn png_size(path: &Path) -> Option<(u32, u32)> {
    let b = std::fs::read(path).ok()?;
    let sig = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    if b.len() < 33 || b[..8] != sig || &b[12..16] != b"IHDR" || !b.ends_with(b"IEND\xaeB`\x82") {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some((be(16), be(20)))
}

#[test]
fn quick_preset_reports_every_kernel_and_draws_the_roofline() {
    let dir = temp_dir("all");
    let (json, png) = (dir.join("bench.json"), dir.join("roofline.png"));
    let out = bench(&[
        "--preset",
        "quick",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("MODELLED"), "{stdout}");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["timing"], "modelled");
    assert_eq!(doc["device"], "910B2 model");
    let cases = doc["cases"].as_array().unwrap();
    let kernels: Vec<&str> = cases
        .iter()
        .map(|c| c["kernel"].as_str().unwrap())
        .collect();
    assert_eq!(kernels, KERNELS);
    for c in cases {
        let k = c["kernel"].as_str().unwrap();
        for field in ["model_us", "roof_us", "ratio"] {
            assert!(
                c[field].as_f64().unwrap() > 0.0,
                "{k}: {field} {}",
                c[field]
            );
        }
        for field in ["gm_read_bytes", "gm_write_bytes", "minimal_bytes"] {
            assert!(c[field].as_u64().unwrap() > 0, "{k}: {field}");
        }
        assert!(c["shape"].is_string() && c["bound"].is_string(), "{k}");
        // The pipe model's time includes the 3 µs launch latency.
        assert!(c["model_us"].as_f64().unwrap() >= 3.0, "{k}");
    }

    // silu_mul at the quick preset (4 tokens, intermediate 1024, bf16): it must read gate_up once and
    // write out once, and as a vector-only operator its roofline is its minimal bytes at 1.6 TB/s.
    let silu = &cases[10];
    let (t, i) = (4u64, 1024u64);
    assert_eq!(silu["minimal_bytes"].as_u64(), Some(3 * t * i * 2));
    assert_eq!(silu["gm_read_bytes"].as_u64(), Some(2 * t * i * 2));
    assert_eq!(silu["gm_write_bytes"].as_u64(), Some(t * i * 2));
    assert_eq!(silu["cube_macs"].as_u64(), Some(0));
    let roof = silu["roof_us"].as_f64().unwrap();
    assert!(
        (roof - (3 * t * i * 2) as f64 / 1.6e12 * 1e6).abs() < 1e-9,
        "{roof}"
    );
    // linear [4, 512] x [576, 512]^T: exactly 4 * 576 * 512 multiply-adds on the cube.
    assert_eq!(cases[6]["cube_macs"].as_u64(), Some(4 * 576 * 512));

    // mla_prefill at the quick preset: 64 tokens as two causal sequences of 32, 16 heads, q/k 192 and
    // v 128 wide, in f32, f16 and bf16. Its minimum reads q, k, v and writes out and lse once (plus the
    // two 3-entry cumulative-length lists); the cube must do at least the 32·33/2 visible pairs per
    // sequence and head, 192 + 128 multiply-adds each (whole tiles may do more, never less).
    let (t, h, pairs) = (64u64, 16u64, 2 * 32 * 33 / 2);
    for (c, (dtype, e)) in cases[13..]
        .iter()
        .zip([("f32", 4u64), ("f16", 2), ("bf16", 2)])
    {
        assert_eq!(c["op"], "mla_prefill");
        assert_eq!(c["dtype"], dtype);
        assert_eq!(
            c["minimal_bytes"].as_u64(),
            Some(t * h * (2 * 192 + 2 * 128) * e + t * h * 4 + 24),
            "{dtype}"
        );
        assert!(
            c["cube_macs"].as_u64().unwrap() >= h * pairs * (192 + 128),
            "{dtype}: {}",
            c["cube_macs"]
        );
    }

    // The step's ends at the quick preset (4 tokens, hidden 512, vocab 16384, bf16): the embedding
    // lookup reads and writes each of the 4 rows once (its minimum adds the 4 ids); argmax reads the
    // logits once and writes 4 ids; softmax reads them twice; top-p sampling writes 4 ids and reads the logits at least once
    // (its nucleus search reads them again: its ratio is above 1).
    let (t, h, v) = (4u64, 512u64, 16384u64);
    let step = &cases[16..];
    assert_eq!(
        step.iter()
            .map(|c| c["op"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["embedding", "argmax", "softmax", "sample_top_p"]
    );
    assert_eq!(
        step[0]["minimal_bytes"].as_u64(),
        Some(4 * t + 2 * t * h * 2)
    );
    assert_eq!(step[0]["gm_write_bytes"].as_u64(), Some(t * h * 2));
    assert_eq!(step[1]["minimal_bytes"].as_u64(), Some(t * v * 2 + 4 * t));
    assert_eq!(step[1]["gm_read_bytes"].as_u64(), Some(t * v * 2));
    assert_eq!(step[1]["gm_write_bytes"].as_u64(), Some(4 * t));
    // Softmax reads the logits in two passes and writes the f32 probabilities once.
    assert_eq!(step[2]["minimal_bytes"].as_u64(), Some(t * v * (2 + 4)));
    assert_eq!(step[2]["gm_read_bytes"].as_u64(), Some(2 * t * v * 2));
    assert_eq!(step[2]["gm_write_bytes"].as_u64(), Some(4 * t * v));
    assert_eq!(step[3]["minimal_bytes"].as_u64(), Some(t * v * 2 + 8 * t));
    assert!(step[3]["gm_read_bytes"].as_u64().unwrap() >= t * v * 2);
    assert_eq!(step[3]["gm_write_bytes"].as_u64(), Some(4 * t));

    let (w, h) = png_size(&png).expect("a PNG");
    assert!(w > 0 && h > 0);
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn op_selects_cases_and_an_unknown_op_is_refused() {
    let dir = temp_dir("op");
    let json = dir.join("bench.json");
    let out = bench(&[
        "--preset",
        "quick",
        "--op",
        "mla_cache_write_fused",
        "--op",
        "mla_prefill",
        "--op",
        "rms_norm",
        "--op",
        "sample_top_p",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops: Vec<&str> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["op"].as_str().unwrap())
        .collect();
    // In the bench's order, not the arguments'; prefill in each of its dtypes.
    assert_eq!(
        ops,
        [
            "rms_norm",
            "mla_cache_write_fused",
            "mla_prefill",
            "mla_prefill",
            "mla_prefill",
            "sample_top_p"
        ]
    );

    let out = bench(&["--preset", "quick", "--op", "flash_attention"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown operator(s) flash_attention"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn outputs_and_launch_counts_are_checked_before_any_case_runs() {
    let dir = temp_dir("outputs");
    let d = dir.to_str().unwrap();
    let chart = dir.join("chart");
    let missing = dir.join("no-such-folder/roofline.png");
    for (args, want) in [
        // plotters chose its encoder by the extension and failed, after the whole run, with a debug
        // dump of its error.
        (
            vec!["--plot", chart.to_str().unwrap()],
            format!(
                "error: --plot {}: the chart is a PNG: the file name must end in .png",
                chart.display()
            ),
        ),
        (
            vec!["--plot", missing.to_str().unwrap()],
            format!(
                "error: --plot {}: the folder {} does not exist",
                missing.display(),
                missing.parent().unwrap().display()
            ),
        ),
        (
            vec!["--json", d],
            format!("error: --json {d}: is a directory, not a file"),
        ),
        // The timings are held in memory: u64::MAX launches was an allocation that could not succeed.
        (
            vec!["--repeats", "18446744073709551615"],
            "error: --warmup 5 --repeats 18446744073709551615: at most 1000000 launches each"
                .into(),
        ),
    ] {
        let mut all = vec!["--preset", "quick", "--op", "rms_norm"];
        all.extend(&args);
        let out = bench(&all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end(), want, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
    assert!(!chart.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// The simulator's bench models a 910B2 die: a simulated device with fewer cores is told so before
/// anything runs (its launches would otherwise ask for blocks the device never runs at once).
#[test]
fn a_simulated_device_smaller_than_a_910b2_is_refused() {
    let out = bench_on(&["--preset", "quick", "--op", "rms_norm"], Some("20,40"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: on the simulator, bench models one 910B2 die and needs its 24 cube and 48 vector \
         cores; the simulated device has 20 and 40 (DSNPU_SIM_AICORE_NUM)"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
}
