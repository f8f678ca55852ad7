//! The AI Core build of feature `ascend` (build/ascend_plan.rs) against fake CANN toolkits: the planned
//! commands for a known layout, spelled out by hand; the errors that name every path tried; the source
//! table against src/ascendc; and the executor driving fake `bisheng`/`ld.lld` scripts that record their
//! argv. No real CANN compiler is involved anywhere.

#[path = "../src/registry.rs"]
#[allow(dead_code)]
mod registry;

#[path = "../build/ascend_plan.rs"]
mod plan;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use plan::{Arch, CoreKind, Inputs, KernelSource, PlanError};
use registry::KERNEL_SOURCES;

const HOME: &str = "/opt/cann";
const MANIFEST: &str = "/src/kernels";
const OUT: &str = "/build/out";

/// The flags every device compile carries after `--cce-aicore-arch`, written out independently of the
/// planner (asc-devkit bisheng_intf.cmake `c220_*_intf_pub` + pyasc's compiler).
const DEVICE_FLAGS: &[&str] = &[
    "--cce-aicore-only",
    "--cce-auto-sync",
    "--cce-disable-kernel-global-attr-check",
    "-mllvm",
    "-cce-aicore-stack-size=0x8000",
    "-mllvm",
    "-cce-aicore-function-stack-size=0x8000",
    "-mllvm",
    "-cce-aicore-record-overflow=true",
    "-mllvm",
    "-cce-aicore-addr-transform",
    "-mllvm",
    "-cce-aicore-dcci-insert-for-scalar=false",
    "-DTILING_KEY_VAR=0",
    "-DASCENDC_DUMP=0",
];

fn inputs<'a>(home: Option<&'a Path>, sources: &'a [KernelSource]) -> Inputs<'a> {
    Inputs {
        ascend_home: home,
        host_arch: "aarch64",
        manifest_dir: Path::new(MANIFEST),
        out_dir: Path::new(OUT),
        sources,
    }
}

/// A file system holding exactly `files` (and every directory above them).
fn fake_fs(files: &[&str]) -> impl Fn(&Path) -> bool {
    let mut present = BTreeSet::new();
    for f in files {
        let mut p = Some(Path::new(f));
        while let Some(q) = p {
            present.insert(q.to_path_buf());
            p = q.parent();
        }
    }
    move |p: &Path| present.contains(p)
}

/// A CANN 8.x layout: compiler and headers under `compiler/`.
const CANN8: &[&str] = &[
    "/opt/cann/compiler/ccec_compiler/bin/bisheng",
    "/opt/cann/compiler/ccec_compiler/bin/ld.lld",
    "/opt/cann/compiler/tikcpp/tikcfw/kernel_operator.h",
];

fn strs(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn compile_args(arch: &str, mix: bool, src: &str, obj: &str) -> Vec<String> {
    let mut v: Vec<String> = ["-c", "-x", "cce", "-O3", "-std=c++17"]
        .map(String::from)
        .to_vec();
    v.push(format!("--cce-aicore-arch={arch}"));
    v.extend(DEVICE_FLAGS.iter().map(|s| s.to_string()));
    if mix {
        v.extend(["-cce-enable-mix", "-D__MIX_CORE_MACRO__=1"].map(String::from));
    }
    for dir in [
        "/opt/cann/compiler/tikcpp/tikcfw",
        "/opt/cann/compiler/tikcpp/tikcfw/interface",
        "/opt/cann/compiler/tikcpp/tikcfw/impl",
        "/src/kernels/include",
    ] {
        v.push("-I".into());
        v.push(dir.into());
    }
    v.push(format!("/src/kernels/{src}"));
    v.push("-o".into());
    v.push(obj.into());
    v
}

#[test]
fn vector_and_mix_sources_get_their_archs_and_one_link() {
    let sources = [
        KernelSource {
            path: "src/ascendc/host_abi.cpp",
            kind: CoreKind::HostOnly,
        },
        KernelSource {
            path: "src/ascendc/rms_norm.cpp",
            kind: CoreKind::Vector,
        },
        KernelSource {
            path: "src/ascendc/linear.cpp",
            kind: CoreKind::Mix,
        },
    ];
    let p = plan::plan(&inputs(Some(Path::new(HOME)), &sources), &fake_fs(CANN8)).unwrap();
    let bisheng = PathBuf::from("/opt/cann/compiler/ccec_compiler/bin/bisheng");
    let lld = PathBuf::from("/opt/cann/compiler/ccec_compiler/bin/ld.lld");
    assert_eq!(p.compiler, bisheng);
    assert_eq!(p.linker, lld);
    assert_eq!(
        p.binary,
        PathBuf::from("/build/out/aicore/dsnpu_kernels_aicore.o")
    );

    let expected: Vec<(PathBuf, Vec<String>, &str)> = vec![
        (
            bisheng.clone(),
            compile_args(
                "dav-c220-vec",
                false,
                "src/ascendc/rms_norm.cpp",
                "/build/out/aicore/rms_norm.vec.o",
            ),
            "/build/out/aicore/rms_norm.vec.o",
        ),
        (
            bisheng.clone(),
            compile_args(
                "dav-c220-cube",
                true,
                "src/ascendc/linear.cpp",
                "/build/out/aicore/linear.cube.o",
            ),
            "/build/out/aicore/linear.cube.o",
        ),
        (
            bisheng.clone(),
            compile_args(
                "dav-c220-vec",
                true,
                "src/ascendc/linear.cpp",
                "/build/out/aicore/linear.vec.o",
            ),
            "/build/out/aicore/linear.vec.o",
        ),
        (
            lld.clone(),
            [
                "-m",
                "aicorelinux",
                "-Ttext=0",
                "/build/out/aicore/rms_norm.vec.o",
                "/build/out/aicore/linear.cube.o",
                "/build/out/aicore/linear.vec.o",
                "-static",
                "-o",
                "/build/out/aicore/dsnpu_kernels_aicore.o",
            ]
            .map(String::from)
            .to_vec(),
            "/build/out/aicore/dsnpu_kernels_aicore.o",
        ),
    ];
    assert_eq!(p.commands.len(), expected.len());
    for (cmd, (program, args, output)) in p.commands.iter().zip(&expected) {
        assert_eq!(&cmd.program, program, "{}", cmd.what);
        assert_eq!(&strs(&cmd.args), args, "{}", cmd.what);
        assert_eq!(cmd.output, PathBuf::from(output), "{}", cmd.what);
    }
    assert_eq!(p.commands[0].what, "compile rms_norm.cpp for dav-c220-vec");
    assert_eq!(p.commands[1].what, "compile linear.cpp for dav-c220-cube");
    assert_eq!(p.commands[3].what, "link dsnpu_kernels_aicore.o");
}

#[test]
fn the_full_table_compiles_each_device_source_once_per_arch_and_links_last() {
    let p = plan::plan(
        &inputs(Some(Path::new(HOME)), KERNEL_SOURCES),
        &fake_fs(CANN8),
    )
    .unwrap();
    // 11 vector sources once, 4 mix sources twice, 2 host-only sources never, then the link.
    assert_eq!(p.commands.len(), 11 + 4 * 2 + 1);
    let (link, compiles) = p.commands.split_last().unwrap();
    assert_eq!(link.program, p.linker);
    assert_eq!(link.output, p.binary);

    let mut seen = BTreeSet::new();
    for c in compiles {
        assert_eq!(c.program, p.compiler);
        assert!(
            c.output.starts_with("/build/out/aicore"),
            "{}",
            c.output.display()
        );
        let args = strs(&c.args);
        // No host define: entry.h must emit the real kernel entries.
        assert!(
            !args.iter().any(|a| a.contains("DSNPU_ASCENDC_HOST")),
            "{}",
            c.what
        );
        // dsnpu's host Ascend C headers must not shadow CANN's.
        assert!(
            !args.iter().any(|a| a.contains("dsnpu_ascendc")),
            "{}",
            c.what
        );
        let src = args[args.len() - 3].clone();
        let arch = args
            .iter()
            .find_map(|a| a.strip_prefix("--cce-aicore-arch="))
            .unwrap()
            .to_string();
        assert!(seen.insert((src, arch)), "{} planned twice", c.what);
        // The link takes every object, in compile order.
        let position = link.args.iter().position(|a| *a == c.output.as_os_str());
        assert!(position.is_some(), "{} not linked", c.output.display());
    }
    let compiled: BTreeSet<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    let expected: BTreeSet<String> = [
        "rms_norm",
        "rope",
        "silu_mul",
        "linear",
        "moe_gating_topk",
        "moe_init_routing",
        "moe_grouped_matmul",
        "moe_finalize_routing",
        "mla_decode",
        "mla_prefill",
        "mla_cache_write",
        "gather_rows",
        "argmax",
        "sample_top_p",
        "softmax",
    ]
    .iter()
    .map(|s| format!("/src/kernels/src/ascendc/{s}.cpp"))
    .collect();
    assert_eq!(compiled, expected.iter().map(String::as_str).collect());
    let cube: BTreeSet<&str> = seen
        .iter()
        .filter(|(_, a)| a == "dav-c220-cube")
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(
        cube,
        BTreeSet::from([
            "/src/kernels/src/ascendc/linear.cpp",
            "/src/kernels/src/ascendc/moe_grouped_matmul.cpp",
            "/src/kernels/src/ascendc/mla_decode.cpp",
            "/src/kernels/src/ascendc/mla_prefill.cpp"
        ])
    );
    assert_eq!(seen.iter().filter(|(_, a)| a == "dav-c220-vec").count(), 15);
}

#[test]
fn unset_home_is_an_error() {
    assert_eq!(
        plan::plan(&inputs(None, KERNEL_SOURCES), &fake_fs(CANN8)),
        Err(PlanError::AscendHomeUnset)
    );
}

#[test]
fn missing_compiler_lists_every_path_tried() {
    let only_headers = ["/opt/cann/compiler/tikcpp/tikcfw/kernel_operator.h"];
    let err = plan::plan(
        &inputs(Some(Path::new(HOME)), KERNEL_SOURCES),
        &fake_fs(&only_headers),
    )
    .unwrap_err();
    let tried: Vec<PathBuf> = [
        "aarch64-linux/ccec_compiler/bin/bisheng",
        "aarch64-linux/ccec_compiler/bin/ccec",
        "tools/ccec_compiler/bin/bisheng",
        "tools/ccec_compiler/bin/ccec",
        "compiler/ccec_compiler/bin/bisheng",
        "compiler/ccec_compiler/bin/ccec",
        "ascendc_devkit/ccec_compiler/bin/bisheng",
        "ascendc_devkit/ccec_compiler/bin/ccec",
        "bin/bisheng",
        "bin/ccec",
    ]
    .iter()
    .map(|p| Path::new(HOME).join(p))
    .collect();
    assert_eq!(
        err,
        PlanError::CompilerNotFound {
            tried: tried.clone()
        }
    );
    let msg = err.to_string();
    for t in &tried {
        assert!(msg.contains(&t.display().to_string()), "{msg}");
    }
}

#[test]
fn missing_linker_and_headers_are_errors() {
    let no_lld = [
        "/opt/cann/bin/ccec",
        "/opt/cann/compiler/tikcpp/tikcfw/kernel_operator.h",
    ];
    assert_eq!(
        plan::plan(
            &inputs(Some(Path::new(HOME)), KERNEL_SOURCES),
            &fake_fs(&no_lld)
        ),
        Err(PlanError::LinkerNotFound {
            tried: vec![PathBuf::from("/opt/cann/bin/ld.lld")]
        })
    );
    let no_headers = [
        "/opt/cann/tools/ccec_compiler/bin/bisheng",
        "/opt/cann/tools/ccec_compiler/bin/ld.lld",
    ];
    assert_eq!(
        plan::plan(
            &inputs(Some(Path::new(HOME)), KERNEL_SOURCES),
            &fake_fs(&no_headers)
        ),
        Err(PlanError::HeadersNotFound {
            tried: ["aarch64-linux", "tools", "compiler", "ascendc_devkit"]
                .iter()
                .map(|r| Path::new(HOME).join(r))
                .collect()
        })
    );
}

#[test]
fn a_host_only_table_is_an_error() {
    let sources = [KernelSource {
        path: "src/ascendc/host_abi.cpp",
        kind: CoreKind::HostOnly,
    }];
    assert_eq!(
        plan::plan(&inputs(Some(Path::new(HOME)), &sources), &fake_fs(CANN8)),
        Err(PlanError::NoDeviceSources)
    );
}

#[test]
fn newer_layout_uses_the_arch_dir_asc_headers_and_version_header() {
    let files = [
        // A stale 8.x compiler must lose to the host-arch one, which bisheng_config.cmake checks first.
        "/opt/cann/compiler/ccec_compiler/bin/bisheng",
        "/opt/cann/aarch64-linux/ccec_compiler/bin/bisheng",
        "/opt/cann/aarch64-linux/ccec_compiler/bin/ld.lld",
        "/opt/cann/aarch64-linux/asc/include/kernel_operator.h",
        "/opt/cann/include/version/cann_version.h",
    ];
    let sources = [KernelSource {
        path: "src/ascendc/rope.cpp",
        kind: CoreKind::Vector,
    }];
    let p = plan::plan(&inputs(Some(Path::new(HOME)), &sources), &fake_fs(&files)).unwrap();
    assert_eq!(
        p.compiler,
        PathBuf::from("/opt/cann/aarch64-linux/ccec_compiler/bin/bisheng")
    );
    let args = strs(&p.commands[0].args);
    let at = args.iter().position(|a| a == "-include").unwrap();
    assert_eq!(args[at + 1], "/opt/cann/include/version/cann_version.h");
    let includes: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "-I")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(includes.len(), 15 + 3 + 1);
    assert_eq!(includes[0], "/opt/cann/aarch64-linux/asc/impl/adv_api");
    assert_eq!(includes[7], "/opt/cann/aarch64-linux/asc/include");
    assert_eq!(includes[15], "/opt/cann/aarch64-linux/tikcpp/tikcfw");
    assert_eq!(includes[18], "/src/kernels/include");
}

#[test]
fn arch_names_are_the_c220_targets() {
    assert_eq!(Arch::Vec.name(), "dav-c220-vec");
    assert_eq!(Arch::Cube.name(), "dav-c220-cube");
}

/// The table covers src/ascendc exactly, and a device source is `Mix` exactly when it includes the
/// Matmul API header; the host-only ones are the simulator ABI marker and the self-tests.
#[test]
fn source_table_matches_the_source_directory() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let on_disk: BTreeSet<String> = std::fs::read_dir(manifest.join("src/ascendc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cpp"))
        .map(|n| format!("src/ascendc/{n}"))
        .collect();
    let in_table: BTreeSet<String> = KERNEL_SOURCES.iter().map(|s| s.path.to_string()).collect();
    assert_eq!(
        in_table.len(),
        KERNEL_SOURCES.len(),
        "duplicate table entries"
    );
    assert_eq!(in_table, on_disk);

    for s in KERNEL_SOURCES {
        let text = std::fs::read_to_string(manifest.join(s.path)).unwrap();
        let uses_matmul = text.contains("#include \"lib/matmul_intf.h\"");
        match s.kind {
            CoreKind::Mix => assert!(uses_matmul, "{} is Mix without the Matmul API", s.path),
            CoreKind::Vector => assert!(!uses_matmul, "{} uses Matmul but is Vector", s.path),
            CoreKind::HostOnly => {}
        }
    }
    let host_only: BTreeSet<&str> = KERNEL_SOURCES
        .iter()
        .filter(|s| s.kind == CoreKind::HostOnly)
        .map(|s| s.path)
        .collect();
    assert_eq!(
        host_only,
        BTreeSet::from([
            "src/ascendc/host_abi.cpp",
            "src/ascendc/selftest.cpp",
            "src/ascendc/selftest_cube.cpp"
        ])
    );
}

#[cfg(unix)]
mod execute {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Records `<program name> <args...>` to calls.log next to itself and writes the file after `-o`.
    const FAKE_TOOL: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$(basename "$0") $*" >> "$dir/calls.log"
out=
while [ $# -gt 0 ]; do
  if [ "$1" = "-o" ]; then out=$2; fi
  shift
done
if [ -n "$FAKE_FAIL" ]; then echo "fake error: $FAKE_FAIL" >&2; exit 3; fi
if [ -z "$FAKE_NO_OUTPUT" ] && [ -n "$out" ]; then echo fake > "$out"; fi
"#;

    /// A fake CANN toolkit in a fresh directory under cargo's test temp dir.
    fn fake_toolkit(name: &str, env: &str) -> PathBuf {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ascend_plan_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let bin = root.join("cann/compiler/ccec_compiler/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let headers = root.join("cann/compiler/tikcpp/tikcfw");
        std::fs::create_dir_all(&headers).unwrap();
        std::fs::write(headers.join("kernel_operator.h"), "").unwrap();
        for tool in ["bisheng", "ld.lld"] {
            let p = bin.join(tool);
            std::fs::write(
                &p,
                FAKE_TOOL.replace("#!/bin/sh\n", &format!("#!/bin/sh\n{env}\n")),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        root
    }

    fn plan_for(root: &Path) -> plan::Plan {
        let home = root.join("cann");
        let out = root.join("out");
        let inputs = Inputs {
            ascend_home: Some(&home),
            host_arch: "x86_64",
            manifest_dir: Path::new(env!("CARGO_MANIFEST_DIR")),
            out_dir: &out,
            sources: KERNEL_SOURCES,
        };
        plan::plan(&inputs, &|p: &Path| p.exists()).unwrap()
    }

    fn calls(root: &Path) -> Vec<String> {
        std::fs::read_to_string(root.join("cann/compiler/ccec_compiler/bin/calls.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn runs_every_command_in_order_with_its_exact_argv() {
        let root = fake_toolkit("ok", "");
        let p = plan_for(&root);
        plan::execute(&p).unwrap();
        let log = calls(&root);
        assert_eq!(log.len(), p.commands.len());
        for (line, cmd) in log.iter().zip(&p.commands) {
            let name = cmd.program.file_name().unwrap().to_string_lossy();
            assert_eq!(*line, format!("{name} {}", strs(&cmd.args).join(" ")));
            assert!(cmd.output.is_file(), "{} missing", cmd.output.display());
        }
        assert!(log.last().unwrap().starts_with("ld.lld -m aicorelinux"));
        assert_eq!(std::fs::read_to_string(&p.binary).unwrap(), "fake\n");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failing_compile_stops_the_build_with_its_stderr() {
        let root = fake_toolkit("fail", "FAKE_FAIL=boom");
        let p = plan_for(&root);
        match plan::execute(&p) {
            Err(PlanError::CommandFailed { what, stderr, .. }) => {
                assert_eq!(what, p.commands[0].what);
                assert_eq!(stderr, "fake error: boom");
            }
            other => panic!("expected CommandFailed, got {other:?}"),
        }
        assert_eq!(calls(&root).len(), 1, "the build went on after a failure");
        assert!(!p.binary.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_command_that_writes_nothing_is_caught_even_over_a_stale_output() {
        let root = fake_toolkit("nooutput", "FAKE_NO_OUTPUT=1");
        let p = plan_for(&root);
        // A stale object from an earlier build must not pass for this build's output.
        std::fs::create_dir_all(p.commands[0].output.parent().unwrap()).unwrap();
        std::fs::write(&p.commands[0].output, "stale").unwrap();
        assert_eq!(
            plan::execute(&p),
            Err(PlanError::OutputMissing {
                what: p.commands[0].what.clone(),
                output: p.commands[0].output.clone()
            })
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let root = fake_toolkit("spawn", "");
        let mut p = plan_for(&root);
        std::fs::remove_file(&p.compiler).unwrap();
        p.commands.truncate(1);
        match plan::execute(&p) {
            Err(PlanError::Spawn { program, .. }) => assert_eq!(program, p.compiler),
            other => panic!("expected Spawn, got {other:?}"),
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
