//! `dsnpu verify` end to end on the simulator: a clean run of a few suites exits 0 and writes the
//! JSON report; a deliberately corrupted operator (`DSNPU_VERIFY_BREAK`) makes it exit non-zero and
//! name that operator, while the others still pass.

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
        if r["op"] == "softmax" {
            // No kernel: the value cases are skipped, only the malformed inputs are checked.
            assert_eq!(r["status"], "no kernel", "{r}");
            assert!(r["skipped"].as_u64().unwrap() > 0);
        } else {
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["skipped"], 0, "{r}");
            assert!(cases >= 10, "{r}");
            let (err, tol) = (
                r["worst_error"].as_f64().unwrap(),
                r["tolerance"].as_f64().unwrap(),
            );
            assert!(err <= tol && tol > 0.0, "{r}");
        }
    }
    assert!(
        stdout.contains("9 suites: 6 passed, 0 failed, 3 skipped entirely"),
        "{stdout}"
    );
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
