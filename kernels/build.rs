//! Builds the host kernel binary: the host Ascend C layer (include/dsnpu_ascendc) and every kernel in
//! src/ascendc, compiled with the `cc` crate's C++ compiler into one shared object in OUT_DIR that exports
//! the simulator ABI (sim/include/dsnpu_sim_kernel.h). The sources and each kernel's entry points come
//! from the kernel registry (src/registry.rs): the entries are generated into
//! `<OUT_DIR>/dsnpu_entries/<source>.inc`, which each source includes. Also compiles and runs a probe that prints the C
//! layout of the tiling structs (include/dsnpu_kernels/tiling.h) for the layout test.
//!
//! With feature `ascend` it also compiles the same sources for the AI Core (dav-c220) with CANN's compiler
//! from ASCEND_HOME_PATH into one fat binary in OUT_DIR (build/ascend_plan.rs; never run against CANN).

#[path = "src/registry.rs"]
#[allow(dead_code)]
mod registry;

#[path = "build/ascend_plan.rs"]
mod ascend_plan;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File name of the host kernel binary in OUT_DIR.
const BINARY: &str = "libdsnpu_kernels_host.so";

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sim_include = manifest.join("../sim/include");
    for p in ["include", "src/ascendc", "build", "src/registry.rs"] {
        println!("cargo:rerun-if-changed={}", manifest.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        sim_include.join("dsnpu_sim_kernel.h").display()
    );
    println!("cargo:rerun-if-env-changed=ASCEND_HOME_PATH");

    if env::var_os("CARGO_FEATURE_ASCEND").is_some() {
        build_aicore_binary(&manifest, &out);
    }

    let binary = out.join(BINARY);
    let entries = out.join("entries");
    write_host_entries(&entries);
    build_host_binary_cached(&manifest, &sim_include, &entries, &out, &binary);
    println!(
        "cargo:rustc-env=DSNPU_HOST_KERNELS_PATH={}",
        binary.display()
    );
    probe_layout(&manifest, &out);
}

/// Writes `<dir>/dsnpu_entries/<source stem>.inc` for every kernel source: its host entry points
/// (registry::host_entries). Rewritten only when the text changes.
fn write_host_entries(dir: &Path) {
    let inc = dir.join("dsnpu_entries");
    std::fs::create_dir_all(&inc).expect("create the entries directory");
    for src in registry::KERNEL_SOURCES {
        let stem = Path::new(src.path)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a source file name");
        let path = inc.join(format!("{stem}.inc"));
        let text = registry::host_entries(src.path);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).expect("write a host entries file");
        }
    }
}

/// The host kernel binary depends only on the C++ sources, headers and flags, not on the cargo profile or
/// features of the crate being built; yet cargo runs this script once per profile and feature set (tests,
/// the dev build the Python package uses, clippy, the mutation tests), and the compile is most of a
/// minute of CPU. So the binary is cached beside the profile's build directory under a hash of everything
/// it is made from, and a later run with the same inputs copies it instead of compiling.
fn build_host_binary_cached(
    manifest: &Path,
    sim_include: &Path,
    entries: &Path,
    out: &Path,
    binary: &Path,
) {
    let compiler = host_compiler();
    let key = host_binary_key(manifest, sim_include, &compiler);
    // OUT_DIR is <profile dir>/build/dsnpu-kernels-<hash>/out; anything else gets no cache.
    let cache_dir = out
        .ancestors()
        .nth(3)
        .filter(|_| out.ancestors().nth(2).and_then(Path::file_name) == Some("build".as_ref()))
        .map(|profile_dir| profile_dir.join("dsnpu-kernels-host-cache"));
    let Some(cache_dir) = cache_dir else {
        return build_host_binary(manifest, sim_include, entries, &compiler, binary);
    };
    let cached = cache_dir.join(format!("{key:016x}.so"));
    if std::fs::copy(&cached, binary).is_ok() {
        return;
    }
    build_host_binary(manifest, sim_include, entries, &compiler, binary);
    // Published by rename, so a concurrent run sees a whole binary or none; a failure only costs the cache.
    let staging = cache_dir.join(format!("{key:016x}.{}.tmp", std::process::id()));
    let _ = std::fs::create_dir_all(&cache_dir)
        .and_then(|()| std::fs::copy(binary, &staging))
        .and_then(|_| std::fs::rename(&staging, &cached));
}

/// The C++ compiler the `cc` crate picks (CXX, the target's default), with the flags the cargo profile
/// adds (debug info) left out so that every profile compiles the same binary.
fn host_compiler() -> cc::Tool {
    cc::Build::new()
        .cpp(true)
        .opt_level(2)
        .debug(false)
        .pic(true)
        .cargo_metadata(false)
        .get_compiler()
}

/// A hash of the compiler, its flags and the contents of every source and header the binary is built from.
fn host_binary_key(manifest: &Path, sim_include: &Path, compiler: &cc::Tool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut probe = compiler.to_command();
    // The generated entries' directory is under OUT_DIR, which differs per profile: it is hashed as a
    // placeholder, and what it holds through the registry it is generated from (src/, below).
    host_flags(&mut probe, manifest, sim_include, Path::new("<entries>"));
    // The program and its arguments; not the environment, which carries the profile and features.
    probe.get_program().hash(&mut hasher);
    probe.get_args().for_each(|arg| arg.hash(&mut hasher));
    let mut files = Vec::new();
    for dir in ["include", "src/ascendc"] {
        collect_files(&manifest.join(dir), &mut files);
    }
    files.push(manifest.join("src/registry.rs"));
    files.push(sim_include.join("dsnpu_sim_kernel.h"));
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn host_flags(cmd: &mut Command, manifest: &Path, sim_include: &Path, entries: &Path) {
    cmd.args(["-std=c++17", "-fPIC", "-O2", "-pthread"])
        // Only the ABI symbols are exported (DSNPU_HOST_EXPORT).
        .args(["-fvisibility=hidden", "-fvisibility-inlines-hidden"])
        // No fused multiply-adds: the host's arithmetic is the documented, reproducible one.
        .arg("-ffp-contract=off")
        .args(["-Wall", "-Wextra"])
        .arg("-DDSNPU_ASCENDC_HOST=1")
        .arg("-I")
        .arg(manifest.join("include/dsnpu_ascendc"))
        .arg("-I")
        .arg(manifest.join("include"))
        .arg("-I")
        .arg(sim_include)
        .arg("-I")
        .arg(entries);
}

fn build_host_binary(
    manifest: &Path,
    sim_include: &Path,
    entries: &Path,
    compiler: &cc::Tool,
    binary: &Path,
) {
    let flags = |cmd: &mut Command| host_flags(cmd, manifest, sim_include, entries);
    let sources: Vec<&str> = registry::KERNEL_SOURCES.iter().map(|s| s.path).collect();
    // One compiler per translation unit, as many at once as cargo gives this build script jobs: the
    // kernel binary is on the critical path of every crate above `kernels`.
    let objects: Vec<PathBuf> = sources
        .iter()
        .map(|s| binary.with_file_name(format!("{}.o", s.replace(['/', '.'], "_"))))
        .collect();
    let jobs = env::var("NUM_JOBS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(sources.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(source) = sources.get(i) else { break };
                let mut cmd = compiler.to_command();
                flags(&mut cmd);
                cmd.arg("-c")
                    .arg(manifest.join(source))
                    .arg("-o")
                    .arg(&objects[i]);
                run(&mut cmd, &format!("compiling {source}"));
            });
        }
    });
    let mut link = compiler.to_command();
    // A link fails on anything left undefined.
    link.args(["-shared", "-pthread", "-Wl,-z,defs"])
        .args(&objects)
        .arg("-o")
        .arg(binary);
    run(&mut link, "linking the host kernel binary");
}

fn probe_layout(manifest: &Path, out: &Path) {
    let target_rs = out.join("tiling_layout.rs");
    if env::var("TARGET").ok() != env::var("HOST").ok() {
        // A cross build cannot run the probe; the layout test then has nothing to compare against.
        std::fs::write(
            &target_rs,
            "pub const C_LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[];\npub const C_ROPE_LAYOUTS: (u32, u32) = (0, 1);\n\
             #[allow(dead_code)]\npub const C_MOE_LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[];\n\
             #[allow(dead_code)]\npub const C_MOE_CONSTANTS: &[(&str, u32)] = &[];\n\
             #[allow(dead_code)]\npub const C_MLA_LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[];\n",
        )
        .expect("write tiling_layout.rs");
        return;
    }
    let compiler = cc::Build::new()
        .cpp(false)
        .opt_level(0)
        .cargo_metadata(false)
        .get_compiler();
    let exe = out.join("layout_probe");
    let mut cmd = compiler.to_command();
    cmd.arg("-std=c99")
        .arg("-I")
        .arg(manifest.join("include"))
        .arg(manifest.join("build/layout_probe.c"))
        .arg("-o")
        .arg(&exe);
    run(&mut cmd, "compiling the tiling layout probe");
    let output = Command::new(&exe)
        .output()
        .expect("run the tiling layout probe");
    assert!(
        output.status.success(),
        "the tiling layout probe failed: {output:?}"
    );
    std::fs::write(&target_rs, output.stdout).expect("write tiling_layout.rs");
}

fn run(cmd: &mut Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        if line.contains("warning:") {
            println!("cargo:warning={what}: {line}");
        }
    }
}

/// Feature `ascend`: plans the AI Core build from ASCEND_HOME_PATH, runs it and exposes the fat binary as
/// `DSNPU_AICORE_KERNELS_PATH`. Any failure stops the build with the plan's error (the paths it tried, or
/// the failing command's stderr) rather than leaving a crate without the binary the feature promised.
fn build_aicore_binary(manifest: &Path, out: &Path) {
    let home = env::var_os("ASCEND_HOME_PATH")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let host = env::var("HOST").expect("cargo sets HOST");
    let inputs = ascend_plan::Inputs {
        ascend_home: home.as_deref(),
        host_arch: host.split('-').next().unwrap_or(&host),
        manifest_dir: manifest,
        out_dir: out,
        sources: registry::KERNEL_SOURCES,
    };
    let fail = |e: ascend_plan::PlanError| -> ! {
        panic!("feature `ascend` of dsnpu-kernels (AI Core build, never tested against CANN): {e}")
    };
    let plan = ascend_plan::plan(&inputs, &|p: &Path| p.exists()).unwrap_or_else(|e| fail(e));
    ascend_plan::execute(&plan).unwrap_or_else(|e| fail(e));
    println!(
        "cargo:warning=feature `ascend`: built the AI Core kernels with {} and {} into {}; this path has \
         never been tested against CANN",
        plan.compiler.display(),
        plan.linker.display(),
        plan.binary.display()
    );
    println!(
        "cargo:rustc-env=DSNPU_AICORE_KERNELS_PATH={}",
        plan.binary.display()
    );
}
