//! Builds `invalid_calls.cc` against the vendor AscendCL/HCCL headers and `libdsnpu_sim.so`, runs
//! it, and requires every invalid call to return its documented code: 0 failures, 0 silent
//! successes, 0 crashes, 0 hangs (each group of calls runs in its own forked child, see the C++
//! file).
//!
//! The vendor headers are never committed: when `.cache/ascend-headers` lacks them, the test runs
//! `scripts/fetch-ascend-headers.sh` (python3 + pip, network access to PyPI). If that fails the
//! test fails and says how to fetch them; it never passes without running the suite.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the whole suite may run (each group also has its own alarm).
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sim/ has a parent")
        .to_path_buf()
}

/// The include directory holding `third_party/acl/inc/acl/acl.h`, fetched when missing.
fn vendor_headers() -> PathBuf {
    let script = workspace_root().join("scripts/fetch-ascend-headers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let inc = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && inc.join("third_party/acl/inc/acl/acl.h").is_file(),
        "the AscendCL/HCCL vendor headers are missing and could not be fetched ({}).\n\
         Fetch them with `bash scripts/fetch-ascend-headers.sh` (needs python3 with pip and access \
         to PyPI: it downloads the torch-npu wheel and extracts its headers into \
         .cache/ascend-headers/), then rerun this test.",
        out.status
    );
    inc
}

/// The directory of `libdsnpu_sim.so`: rustc writes the cdylib next to the rlib this test links,
/// in `<target>/<profile>/deps/` (the copy in `<target>/<profile>/` is only refreshed when the
/// simulator is built as a requested package, so it can be stale).
fn simulator_library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let dir = exe
        .parent()
        .expect("tests run from <target>/<profile>/deps");
    let lib = dir.join("libdsnpu_sim.so");
    assert!(
        lib.is_file(),
        "{} is missing: rustc builds the simulator cdylib with the rlib the dsnpu-sim tests link",
        lib.display()
    );
    dir.to_path_buf()
}

#[test]
fn invalid_calls_through_the_vendor_headers_get_their_codes_and_never_crash() {
    let inc = vendor_headers();
    let lib_dir = simulator_library();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_calls.cc");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("invalid_calls");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let status = Command::new(&cxx)
        .args(["-std=c++14", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(&inc)
        .arg("-I")
        .arg(inc.join("third_party/acl/inc"))
        .arg(&source)
        // By path: the cdylib has no SONAME, so the executable records this exact file and the
        // loader cannot pick up a stale copy from LD_LIBRARY_PATH (cargo sets it for tests).
        .arg(lib_dir.join("libdsnpu_sim.so"))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx:?}: {e}"));
    assert!(status.success(), "compiling {} failed", source.display());

    let mut child = Command::new(&exe)
        .arg(dsnpu_sim::TEST_KERNELS_PATH)
        // The suite's own environment: default capacity, one device.
        .env_remove("DSNPU_SIM_MEM_BYTES")
        .env_remove("DSNPU_SIM_HOST_MEM_BYTES")
        .env_remove("DSNPU_SIM_DEVICES")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the suite") {
            break s;
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            panic!("the invalid-call suite ran longer than {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut stdout)
        .expect("read the suite's output");
    println!("{stdout}");
    let total = stdout
        .lines()
        .find(|l| l.starts_with("TOTAL "))
        .unwrap_or_else(|| panic!("the suite printed no TOTAL line ({status})"));
    let field = |name: &str| -> u64 {
        total
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {total:?}"))
    };
    assert_eq!(field("crashes"), 0, "{total}");
    assert_eq!(field("hangs"), 0, "{total}");
    assert_eq!(field("silent"), 0, "{total}");
    assert_eq!(field("failures"), 0, "{total}");
    assert_eq!(field("groups"), 6, "{total}");
    assert!(field("checks") >= 200, "{total}");
    assert!(status.success(), "{status}");
}
