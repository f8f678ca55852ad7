//! The C test program (`tests/c/test_dsnpu.c`) compiled with the system C compiler against
//! `include/dsnpu.h` and `libdsnpu.so`, run on the simulator: it allocates with `aclrtMalloc`, calls
//! every entry point on a stream of its own, checks the results against values it computes itself,
//! and checks that bad arguments return error statuses; then it drives the model engine on the tiny
//! checkpoint against the CPU model's greedy ids (computed here). A second run, on a small simulated
//! device, checks that a kernel's workspace and the engine's weights not fitting are one status. See
//! the program for the cases.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`: this test runs from its `deps/` folder.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The newest of `names` in `dir` and its `deps/`: `cargo test` rebuilds the library in `deps/` and
/// leaves the copy a `cargo build` put in `dir` as it was, so the first found may be stale.
fn find(dir: &Path, names: &[&str]) -> PathBuf {
    names
        .iter()
        .flat_map(|name| [dir.join(name), dir.join("deps").join(name)])
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("none of {names:?} in {} or its deps/", dir.display()))
}

/// The newest modification time of the files under `dir`, recursively.
fn newest_under(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            if p.is_dir() {
                newest_under(&p)
            } else {
                Some((p.metadata().ok()?.modified().ok()?, p))
            }
        })
        .max_by_key(|(modified, _)| *modified)
}

/// Fails when `lib` is older than the sources it is built from: `cargo test -p dsnpu-capi` does not build
/// the cdylib (nothing of this package links it; the root package's dev-dependency on it is what makes
/// `cargo test --workspace` build it), and a C program linked against a stale library tests old code.
fn check_fresh(lib: &Path) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().expect("the workspace holds capi/");
    let built = lib
        .metadata()
        .and_then(|m| m.modified())
        .expect("libdsnpu.so's modification time");
    // This crate and the workspace crates it links (the model pulls in the operators).
    const SOURCES: [&str; 8] = [
        "capi/src",
        "capi/Cargo.toml",
        "ffi/src",
        "runtime/src",
        "kernels/src",
        "kernels/include",
        "ops/src",
        "model/src",
    ];
    let newest = SOURCES
        .iter()
        .map(|p| root.join(p))
        .filter_map(|p| {
            if p.is_dir() {
                newest_under(&p)
            } else {
                Some((p.metadata().ok()?.modified().ok()?, p))
            }
        })
        .max_by_key(|(modified, _)| *modified);
    if let Some((modified, path)) = newest {
        assert!(
            modified <= built,
            "{} is older than {}: build it first (`cargo build -p dsnpu-capi`, or run `cargo test \
             --workspace`, which builds it)",
            lib.display(),
            path.display()
        );
    }
}

/// The C test program compiled into `CARGO_TARGET_TMPDIR/<name>` against the fresh `libdsnpu.so`, and
/// a command running it on the simulator.
fn c_program(name: &str) -> Command {
    let target = target_dir();
    let lib = find(&target, &["libdsnpu.so"]);
    check_fresh(&lib);
    let sim = find(&target, &["libdsnpu_sim.so"]);
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level(0)
        .target(&current_target())
        .host(&current_target())
        .get_compiler();
    let status = compiler
        .to_command()
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-D_GNU_SOURCE")
        .arg("-I")
        .arg(root().join("include"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/test_dsnpu.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.parent().unwrap().display()))
        .arg("-ldsnpu")
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .args(["-ldl", "-lm"])
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling the C test program failed");
    let mut cmd = Command::new(&exe);
    cmd.env("DSNPU_TEST_CHECKPOINT", checkpoint())
        .env("DSNPU_ACL_LIB", &sim)
        // The loader searches LD_LIBRARY_PATH before the rpath, and cargo's holds target/<profile>,
        // where an older uplifted libdsnpu.so can sit: only the library checked above may load.
        .env("LD_LIBRARY_PATH", lib.parent().unwrap())
        .env_remove("ASCEND_HOME_PATH")
        .env_remove("ASCEND_TOOLKIT_HOME");
    cmd
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tiny checkpoint the engine cases load.
fn checkpoint() -> PathBuf {
    root().join("model/tests/data/v3_base")
}

/// Runs `cmd`, failing with its output unless it exits 0 and prints `all N checks passed`.
fn expect_passes(mut cmd: Command, checks: usize) {
    let out = cmd.output().expect("run the C test program");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "C test program failed\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("all {checks} checks passed")),
        "{stdout}"
    );
}

#[test]
fn the_c_program_passes_on_the_simulator() {
    let mut cmd = c_program("test_dsnpu_c");
    // The engine cases: a prompt and the CPU model's greedy ids for it (the oracle).
    let prompt = [5, 9, 14, 2];
    let model = dsnpu_model::DeepseekV3::load(checkpoint()).expect("the tiny checkpoint");
    let want = dsnpu_model::Generator::new(&model, dsnpu_model::GenerateOptions::greedy(6))
        .and_then(|g| g.generate(&prompt))
        .expect("CPU ids");
    let csv = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    cmd.env("DSNPU_TEST_PROMPT", csv(&prompt))
        .env("DSNPU_TEST_GENERATED", csv(&want));
    // 30 result checks over the 17 kernel entry points (prefill: f32 and bf16 without a prefix, f32
    // with one; prefill from the paged cache with a prefix; decode with the length-only plan and with
    // the plan for its query shape), 33 bad-argument cases (2 of them failed creates, which must
    // store NULL), 2 overflowing prefill_cached shapes, a decode plan made for another batch size, a
    // negative batch and a misaligned plan destroyed; then the engine: 2 id checks, 17 error cases
    // (one a paged cache larger than the device) and a checkpoint path that is not UTF-8; then a
    // plan, an engine and the context each used after destroy and destroyed twice.
    expect_passes(cmd, 94);
}

#[test]
fn device_memory_running_out_is_one_status_for_kernels_and_the_engine() {
    let mut cmd = c_program("test_dsnpu_c_out_of_memory");
    // A 256 KiB device: the kernel library loads, the tiny checkpoint's weights (over 512 KiB) do not
    // fit, nor does the 512 KiB workspace of the kernel case. The simulator reads its capacity at
    // aclInit, hence a process of its own.
    cmd.env("DSNPU_TEST_OUT_OF_MEMORY", "1")
        .env("DSNPU_SIM_MEM_BYTES", "256K");
    // The kernel's workspace, the engine's weights, and that both gave the same status.
    expect_passes(cmd, 3);
}

/// The target triple this test was built for (the cc crate wants one outside build scripts).
fn current_target() -> String {
    let arch = std::env::consts::ARCH;
    format!("{arch}-unknown-linux-gnu")
}
