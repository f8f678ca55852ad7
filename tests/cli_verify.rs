//! `dsnpu verify` end to end on the simulator: a clean run of a few suites exits 0 and writes the
//! JSON report; `--quick` has an `ok` row in every dtype for every operator with a kernel (the fused
//! MLA cache write and top-p sampling included); a deliberately corrupted operator
//! (`DSNPU_VERIFY_BREAK`) makes it exit non-zero and name that operator, while the others still pass.

use std::process::{Command, Output};

fn verify(args: &[&str], broken: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsnpu"));
    cmd.arg("verify")
        .args(args)
        .env_remove("DSNPU_ACL_LIB")
        .env_remove("ASCEND_HOME_PATH")
        .env_remove("ASCEND_TOOLKIT_HOME")
        .env_remove("DSNPU_VERIFY_BREAK");
    if let Some(op) = broken {
        cmd.env("DSNPU_VERIFY_BREAK", op);
    }
    cmd.output().expect("run dsnpu verify")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn passing_suites_exit_zero_with_a_json_report() {
    let dir = std::env::temp_dir().join(format!("dsnpu-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("verify.json");
    let out = verify(
        &[
            "--op",
            "rms_norm",
            "--op",
            "moe_gating_topk",
            "--op",
            "softmax",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(doc["library"].as_str().unwrap().contains("simulator"));
    let results = doc["results"].as_array().unwrap();
    // 3 operators x 3 dtypes, in Op order and f32, f16, bf16.
    assert_eq!(results.len(), 9);
    assert_eq!(results[0]["op"], "rms_norm");
    assert_eq!(results[0]["dtype"], "f32");
    assert_eq!(results[8]["op"], "moe_gating_topk");
    assert_eq!(results[8]["dtype"], "bf16");
    for r in results {
        let (cases, passed) = (r["cases"].as_u64().unwrap(), r["passed"].as_u64().unwrap());
        assert_eq!(cases, passed, "{r}");
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["skipped"], 0, "{r}");
        assert!(cases >= 10, "{r}");
        let (err, tol) = (
            r["worst_error"].as_f64().unwrap(),
            r["tolerance"].as_f64().unwrap(),
        );
        assert!(err <= tol && tol > 0.0, "{r}");
    }
    assert!(stdout.contains("9 suites: 9 passed, 0 failed"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_broken_kernel_fails_and_is_named() {
    let out = verify(
        &["--op", "silu_mul", "--op", "rms_norm", "--dtype", "bf16"],
        Some("silu_mul"),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 of 2 suites failed: silu_mul bf16"),
        "{stderr}"
    );
    let row = |op: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("no {op} row in {stdout}"))
            .to_string()
    };
    assert!(row("silu_mul").ends_with("FAIL"), "{stdout}");
    assert!(row("rms_norm").ends_with("ok"), "{stdout}");
}

#[test]
fn a_json_report_in_a_missing_folder_is_refused_before_the_suites_run() {
    let out = verify(
        &[
            "--op",
            "rms_norm",
            "--dtype",
            "f32",
            "--json",
            "/nonexistent/dsnpu/verify.json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: --json /nonexistent/dsnpu/verify.json: the folder /nonexistent/dsnpu does not exist"
    );
    assert!(out.stdout.is_empty(), "no suite ran: {}", text(&out.stdout));
}

#[test]
fn unknown_operators_are_a_usage_error() {
    let out = verify(&["--op", "flash_attention"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown operator \"flash_attention\""));
}

/// MLA prefill has a kernel in every dtype: its suites run every case (none skipped) and pass, and a
/// corrupted prefill fails and is named.
#[test]
fn mla_prefill_is_verified_on_its_kernel_in_every_dtype() {
    let dir = std::env::temp_dir().join(format!("dsnpu-verify-prefill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("verify.json");
    let out = verify(
        &[
            "--quick",
            "--op",
            "mla_prefill",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    let dtypes: Vec<&str> = results
        .iter()
        .map(|r| r["dtype"].as_str().unwrap())
        .collect();
    assert_eq!(dtypes, ["f32", "f16", "bf16"]);
    for r in results {
        assert_eq!(r["op"], "mla_prefill");
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["skipped"], 0, "{r}");
        assert!(r["cases"].as_u64().unwrap() >= 10, "{r}");
        assert_eq!(r["cases"], r["passed"], "{r}");
    }
    std::fs::remove_dir_all(&dir).ok();

    let out = verify(
        &["--op", "mla_prefill", "--dtype", "f16"],
        Some("mla_prefill"),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 of 1 suites failed: mla_prefill f16"),
        "{stderr}"
    );
}

/// Issue 12's acceptance: `verify --json` on the simulator covers every operator that has a kernel, in
/// f32, f16 and bf16, and each of those rows is `ok` with nothing skipped. The only rows that are not
/// are the operator without a kernel (the trait's unfused mla_cache_write): `no kernel`.
#[test]
fn quick_verify_covers_every_kernel_in_every_dtype() {
    let dir = std::env::temp_dir().join(format!("dsnpu-verify-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("verify.json");
    let out = verify(&["--quick", "--json", json.to_str().unwrap()], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    let rows: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap(),
                r["dtype"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    let no_kernel = ["mla_cache_write"];
    for op in [
        "softmax",
        "rms_norm",
        "add_rms_norm",
        "rope",
        "linear",
        "batched_matmul",
        "silu_mul",
        "embedding",
        "argmax",
        "sample_top_p",
        "moe_gating_topk",
        "moe_init_routing",
        "moe_init_routing_quant",
        "grouped_matmul",
        "expert_ffn",
        "moe_finalize_routing",
        "mla_cache_write_fused",
        "mla_decode",
        "mla_prefill",
    ] {
        for dtype in ["f32", "f16", "bf16"] {
            assert!(
                rows.contains(&(op, dtype, "ok")),
                "no ok row for {op} {dtype}: {rows:?}"
            );
        }
    }
    for r in results {
        let op = r["op"].as_str().unwrap();
        if no_kernel.contains(&op) {
            assert_eq!(r["status"], "no kernel", "{r}");
        } else {
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["skipped"], 0, "{r}");
            assert_eq!(r["cases"], r["passed"], "{r}");
        }
    }
    // Every operator but the whole MoE layer (left out by --quick), in three dtypes.
    assert_eq!(results.len(), 20 * 3, "{rows:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The fused MLA cache write and top-p sampling: their kernels' rows are `ok` in every dtype (the
/// sampling ids compared exactly, so no error and no tolerance), and corrupting either makes verify
/// exit non-zero naming it while the other still passes.
#[test]
fn the_fused_cache_write_and_top_p_sampling_are_verified_and_can_fail() {
    let ops = ["--op", "mla_cache_write_fused", "--op", "sample_top_p"];
    for backend in ["npu", "cpu"] {
        let mut args = ops.to_vec();
        args.extend(["--backend", backend]);
        let out = verify(&args, None);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        ok_rows(&stdout);
    }

    for (broken, dtype, other) in [
        ("sample_top_p", "f32", "mla_cache_write_fused"),
        ("mla_cache_write_fused", "bf16", "sample_top_p"),
    ] {
        let mut args = ops.to_vec();
        args.extend(["--dtype", dtype]);
        let out = verify(&args, Some(broken));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("1 of 2 suites failed: {broken} {dtype}")),
            "{stderr}"
        );
        let row = |op: &str| {
            stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(op))
                .unwrap_or_else(|| panic!("no {op} row in {stdout}"))
                .to_string()
        };
        assert!(row(broken).ends_with("FAIL"), "{stdout}");
        assert!(row(other).ends_with("ok"), "{stdout}");
    }
}

/// The two operators' rows in `stdout` (a run of `--op mla_cache_write_fused --op sample_top_p`): `ok`
/// in every dtype, every case passed, none skipped, at least 20 cases each.
fn ok_rows(stdout: &str) {
    for op in ["sample_top_p", "mla_cache_write_fused"] {
        for dtype in ["f32", "f16", "bf16"] {
            let row = stdout
                .lines()
                .find(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some(op) && w.next() == Some(dtype)
                })
                .unwrap_or_else(|| panic!("no {op} {dtype} row in {stdout}"));
            assert!(row.ends_with("  ok"), "{row}");
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols[2], cols[3], "{row}");
            assert_eq!(cols[4], "0", "{row}");
            assert!(cols[2].parse::<u32>().unwrap() >= 20, "{row}");
        }
    }
    assert!(
        stdout.contains("6 suites: 6 passed, 0 failed, 0 skipped entirely"),
        "{stdout}"
    );
}
