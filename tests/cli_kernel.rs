//! `dsnpu kernel build` / `dsnpu kernel run` end to end: the example kernels in `examples/kernels`
//! (written as for CANN) are built with the system C++ compiler and launched on the simulator. The clean
//! copy reports no finding and the traffic it must have made (every byte of x read once, every byte of y
//! written once); the copy without flags reports a race naming both pipes; an input left unwritten is an
//! init finding; a mix kernel's vector cores drive its cube core's Matmul.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dsnpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        .env_remove("DSNPU_ACL_LIB")
        .env_remove("ASCEND_HOME_PATH")
        .env_remove("ASCEND_TOOLKIT_HOME")
        .output()
        .expect("run dsnpu")
}

fn build(dir: &Path, example: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/kernels")
        .join(example);
    let out = dir.join(example.replace(".cpp", ".so"));
    let o = dsnpu(&[
        "kernel",
        "build",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn a_mix_kernel_drives_the_cube_from_its_vector_cores() {
    let dir = tempfile::tempdir().unwrap();
    let so = build(dir.path(), "gram_mix.cpp");
    let (ok, v) = run_json(&so, "gram_plus_one_f32", "rand");
    assert!(ok, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");
    // 2 blocks, each two requests of 8 x 16 x 16 on its cube core, and 128 Adds per vector core.
    assert_eq!(v["counters"]["cube_macs"], 2 * 2 * 8 * 16 * 16, "{v}");
    assert_eq!(v["counters"]["vector_elem_ops"], 2 * 2 * 128, "{v}");
}

fn run_json(binary: &Path, kernel: &str, x_fill: &str) -> (bool, serde_json::Value) {
    let x = format!("2048:fill={x_fill}");
    let o = dsnpu(&[
        "kernel",
        "run",
        binary.to_str().unwrap(),
        "--kernel",
        kernel,
        "--blocks",
        "2",
        "--arg",
        &x,
        "--arg",
        "2048",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} / {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.success(), v)
}

#[test]
fn a_clean_copy_runs_without_findings_and_counts_its_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let so = build(dir.path(), "copy.cpp");
    let (ok, v) = run_json(&so, "copy_f32", "rand");
    assert!(ok, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");
    // 2 blocks x 256 f32 in and out.
    assert_eq!(v["counters"]["gm_to_ub_bytes"], 2048, "{v}");
    assert_eq!(v["counters"]["ub_to_gm_bytes"], 2048, "{v}");
    let (model, roof) = (
        v["model_us"].as_f64().unwrap(),
        v["roof_us"].as_f64().unwrap(),
    );
    // The roofline of 4096 bytes at 1.6 TB/s; the model adds latency on top.
    assert!((roof - 4096.0 / 1.6e12 * 1e6).abs() < 1e-9, "{v}");
    assert!(model > roof, "{v}");
}

#[test]
fn a_copy_without_flags_is_a_race() {
    let dir = tempfile::tempdir().unwrap();
    let so = build(dir.path(), "racy_copy.cpp");
    let (ok, v) = run_json(&so, "racy_copy_f32", "rand");
    assert!(!ok, "{v}");
    assert_eq!(v["status"], "failed");
    let f = &v["findings"][0];
    assert_eq!(f["kind"], "race", "{v}");
    assert_eq!(f["kernel"], "racy_copy_f32", "{v}");
    let detail = f["detail"].as_str().unwrap();
    assert!(
        detail.contains("DataCopy on MTE3 reads") && detail.contains("DataCopy on MTE2 wrote"),
        "{detail}"
    );
}

#[test]
fn an_input_nothing_wrote_is_an_init_finding() {
    let dir = tempfile::tempdir().unwrap();
    let so = build(dir.path(), "copy.cpp");
    let (ok, v) = run_json(&so, "copy_f32", "poison");
    assert!(!ok, "{v}");
    let f = &v["findings"][0];
    assert_eq!(f["kind"], "init", "{v}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("DataCopy reads GM bytes"),
        "{v}"
    );
}

#[test]
fn a_zero_filled_input_counts_as_written() {
    // `fill=zero` is a device memset (no host copy of the argument): the init check sees it as written.
    let dir = tempfile::tempdir().unwrap();
    let so = build(dir.path(), "copy.cpp");
    let (ok, v) = run_json(&so, "copy_f32", "zero");
    assert!(ok, "{v}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["counters"]["gm_to_ub_bytes"], 2048, "{v}");
}

#[test]
fn a_source_without_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("empty.cpp");
    std::fs::write(
        &src,
        "#include \"kernel_operator.h\"\nint helper() { return 1; }\n",
    )
    .unwrap();
    let out = dir.path().join("empty.so");
    let o = dsnpu(&[
        "kernel",
        "build",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no kernel entry found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn block_counts_outside_a_launch_s_range_are_usage_errors() {
    // 4294967295 blocks used to be launched, refused by AscendCL and reported as the kernel's own `mem`
    // finding.
    let dir = tempfile::tempdir().unwrap();
    let so = build(dir.path(), "copy.cpp");
    for blocks in ["0", "65536", "4294967295"] {
        let o = dsnpu(&[
            "kernel",
            "run",
            so.to_str().unwrap(),
            "--kernel",
            "copy_f32",
            "--blocks",
            blocks,
            "--arg",
            "2048",
            "--arg",
            "2048",
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim_end(),
            format!("error: --blocks {blocks}: a launch has 1 to 65535 blocks")
        );
        assert!(o.stdout.is_empty(), "nothing was launched");
    }
}

/// `dsnpu args`, killed after 20 s (a read blocked on a FIFO, or one of /dev/zero that never ends,
/// fails the test instead of hanging it or filling memory): (exit code, stderr).
fn dsnpu_within_20s(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        .env_remove("DSNPU_ACL_LIB")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dsnpu");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dsnpu {args:?} did not end within 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sources_and_tiling_files_that_are_not_regular_files_are_refused_before_reading() {
    // A FIFO used to block `kernel build` and `kernel run --tiling` for ever, and /dev/zero to be read
    // into memory until the process died.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("kernel.cpp");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo = fifo.to_str().unwrap();
    let out = dir.path().join("k.so");
    let out = out.to_str().unwrap();
    for (src, found) in [(fifo, "a FIFO (named pipe)"), ("/dev/zero", "a device")] {
        let (code, err) = dsnpu_within_20s(&["kernel", "build", src, "-o", out]);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(
            err.trim(),
            format!("error: source {src}: is {found}, not a regular file")
        );
        let tiling = format!("@{src}");
        let (code, err) = dsnpu_within_20s(&[
            "kernel",
            "run",
            "/nonexistent.so",
            "--kernel",
            "k",
            "--tiling",
            &tiling,
        ]);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(
            err.trim(),
            format!("error: --tiling {src}: is {found}, not a regular file")
        );
    }
}

#[test]
fn an_output_that_cannot_be_created_is_refused_before_compiling() {
    // It used to compile the source and fail in the linker (`cannot open output file`).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kernels/copy.cpp");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/k.so");
    for (out, reason) in [
        (
            dir.path().to_path_buf(),
            "is a directory, not a file".to_string(),
        ),
        (
            missing.clone(),
            format!(
                "the folder {} does not exist",
                missing.parent().unwrap().display()
            ),
        ),
    ] {
        let (code, err) = dsnpu_within_20s(&[
            "kernel",
            "build",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.trim(), format!("error: -o {}: {reason}", out.display()));
    }
}
