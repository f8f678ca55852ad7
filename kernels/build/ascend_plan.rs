//! The AI Core build of feature `ascend`: which commands compile dsnpu's Ascend C sources for the 910B/910C
//! AI Core (dav-c220) with CANN's compiler and link them into one fat binary that
//! `aclrtBinaryLoadFromFile` can load.
//!
//! **Never run against CANN.** No machine where dsnpu is developed has CANN, so this module is tested
//! only against a fake toolchain (kernels/tests/ascend_plan.rs): the commands follow CANN's public build
//! scripts, cited at each flag, but no real `bisheng` has ever compiled these sources.
//!
//! Contract:
//! - [`plan`] is pure: it sees the file system only through the `exists` closure, validates that
//!   `ASCEND_HOME_PATH` is set and holds a compiler, a linker and the Ascend C headers, and returns the
//!   commands, or a [`PlanError`] naming every path it tried. It trusts the source table (checked against
//!   the source directory by the tests) and does not read the sources.
//! - [`execute`] runs a plan's commands in order, stops at the first failure, and checks each command
//!   wrote its output. It trusts the commands (they come from [`plan`]).
//!
//! Included by build.rs (`#[path]`) and by the tests; build scripts cannot use the crate's own error enum,
//! so [`PlanError`] implements `Error` by hand (the crate's only build-dependency is `cc`).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

// The source table and its types live in the kernel registry (src/registry.rs), which whoever includes
// this file declares as `registry` next to it.
pub use super::registry::{CoreKind, KernelSource};

/// Directory of OUT_DIR that holds the objects and the fat binary.
pub const AICORE_DIR: &str = "aicore";

/// File name of the fat binary in `OUT_DIR/aicore`.
pub const BINARY_NAME: &str = "dsnpu_kernels_aicore.o";

/// An AI Core target of the 910B/910C (Ascend C's "v220" generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Vec,
    Cube,
}

impl Arch {
    /// The `--cce-aicore-arch` value (asc-devkit cmake/asc/legacy_modules/bisheng_intf.cmake:
    /// `c220_aiv_intf_pub` / `c220_aic_intf_pub`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vec => "dav-c220-vec",
            Arch::Cube => "dav-c220-cube",
        }
    }

    fn object_suffix(self) -> &'static str {
        match self {
            Arch::Vec => "vec",
            Arch::Cube => "cube",
        }
    }
}

/// What [`plan`] needs to know about the build.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// `ASCEND_HOME_PATH`, `None` when unset or empty.
    pub ascend_home: Option<&'a Path>,
    /// The build host's CPU (`x86_64`, `aarch64`): CANN installs its compiler under `<arch>-linux`.
    pub host_arch: &'a str,
    /// The crate's manifest directory (sources and `include/` are relative to it).
    pub manifest_dir: &'a Path,
    /// Cargo's OUT_DIR; every output goes under `OUT_DIR/aicore`.
    pub out_dir: &'a Path,
    pub sources: &'a [KernelSource],
}

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// For messages: `compile rms_norm.cpp for dav-c220-vec`, `link ...`.
    pub what: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The file the command must create.
    pub output: PathBuf,
}

/// The commands of the AI Core build: every compile, then one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub compiler: PathBuf,
    pub linker: PathBuf,
    pub commands: Vec<CommandSpec>,
    /// The fat binary (the last command's output).
    pub binary: PathBuf,
}

/// Why the AI Core build cannot be planned or did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// `ASCEND_HOME_PATH` is unset or empty.
    AscendHomeUnset,
    /// No `bisheng`/`ccec` at any of the paths tried.
    CompilerNotFound { tried: Vec<PathBuf> },
    /// No `ld.lld` next to the compiler.
    LinkerNotFound { tried: Vec<PathBuf> },
    /// No Ascend C headers (`tikcpp/tikcfw/kernel_operator.h` or `asc/include`) under any root tried.
    HeadersNotFound { tried: Vec<PathBuf> },
    /// The source table names no AI Core source.
    NoDeviceSources,
    /// A command could not be started.
    Spawn {
        what: String,
        program: PathBuf,
        error: String,
    },
    /// A command exited unsuccessfully.
    CommandFailed {
        what: String,
        status: String,
        stderr: String,
    },
    /// A command succeeded but did not create its output.
    OutputMissing { what: String, output: PathBuf },
    /// Preparing an output directory or file failed.
    Io { path: PathBuf, error: String },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("\n  {}", p.display()))
        .collect()
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::AscendHomeUnset => write!(
                f,
                "ASCEND_HOME_PATH is not set: point it at a CANN toolkit (e.g. \
                 /usr/local/Ascend/ascend-toolkit/latest, or source its set_env.sh)"
            ),
            PlanError::CompilerNotFound { tried } => {
                write!(f, "no Ascend C compiler (bisheng or ccec) in ASCEND_HOME_PATH; tried:{}", list(tried))
            }
            PlanError::LinkerNotFound { tried } => {
                write!(f, "no ld.lld next to CANN's compiler; tried:{}", list(tried))
            }
            PlanError::HeadersNotFound { tried } => write!(
                f,
                "no Ascend C headers (tikcpp/tikcfw/kernel_operator.h or asc/include) in ASCEND_HOME_PATH; \
                 tried:{}",
                list(tried)
            ),
            PlanError::NoDeviceSources => write!(f, "no kernel source is compiled for the AI Core"),
            PlanError::Spawn { what, program, error } => {
                write!(f, "{what}: cannot start {}: {error}", program.display())
            }
            PlanError::CommandFailed { what, status, stderr } => write!(f, "{what} failed ({status}):\n{stderr}"),
            PlanError::OutputMissing { what, output } => {
                write!(f, "{what} succeeded but did not create {}", output.display())
            }
            PlanError::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for PlanError {}

/// The roots a CANN toolkit keeps its compiler and headers under, in the order asc-devkit's
/// cmake/asc/legacy_modules/bisheng_config.cmake picks `ASCENDC_DEVKIT_PATH` (newer toolkits use
/// `<arch>-linux`, 8.x `tools` or `compiler`).
fn devkit_roots(home: &Path, host_arch: &str) -> Vec<PathBuf> {
    vec![
        home.join(format!("{host_arch}-linux")),
        home.join("tools"),
        home.join("compiler"),
        home.join("ascendc_devkit"),
    ]
}

/// Compiler candidates: `<root>/ccec_compiler/bin/{bisheng,ccec}` (bisheng_config.cmake sets
/// CMAKE_CXX_COMPILER to `${CCEC_PATH}/bisheng`; older toolkits name it `ccec`), then `$ASCEND_HOME_PATH/bin`.
fn compiler_candidates(home: &Path, host_arch: &str) -> Vec<PathBuf> {
    let mut bins: Vec<PathBuf> = devkit_roots(home, host_arch)
        .into_iter()
        .map(|r| r.join("ccec_compiler").join("bin"))
        .collect();
    bins.push(home.join("bin"));
    bins.iter()
        .flat_map(|b| [b.join("bisheng"), b.join("ccec")])
        .collect()
}

/// The include directories of CANN's Ascend C headers.
///
/// Newer toolkits (`<root>/asc/include` exists) take asc-devkit's list from
/// cmake/asc/legacy_modules/bisheng_intf.cmake (`device_intf_pub`), which ends with the `tikcfw` three;
/// 8.x toolkits take just those three (the same file at CANN 8.1, and hicann/pyasc
/// python/asc/runtime/compiler.py `_gen_dst_kernel`).
fn header_dirs(root: &Path, newer: bool) -> Vec<PathBuf> {
    const ASC: &[&str] = &[
        "asc/impl/adv_api",
        "asc/impl/basic_api",
        "asc/impl/c_api",
        "asc/impl/basic_api/reg_compute",
        "asc/impl/simt_api",
        "asc/impl/utils",
        "asc",
        "asc/include",
        "asc/include/adv_api",
        "asc/include/basic_api",
        "asc/include/aicpu_api",
        "asc/include/c_api",
        "asc/include/basic_api/reg_compute",
        "asc/include/simt_api",
        "asc/include/utils",
    ];
    const TIKCFW: &[&str] = &[
        "tikcpp/tikcfw",
        "tikcpp/tikcfw/interface",
        "tikcpp/tikcfw/impl",
    ];
    let dirs: Vec<&str> = if newer {
        ASC.iter().chain(TIKCFW).copied().collect()
    } else {
        TIKCFW.to_vec()
    };
    dirs.into_iter().map(|d| root.join(d)).collect()
}

/// Flags of every device compile for `arch`, before the mix flags, includes, source and output.
///
/// - `-c -x cce -O3`: hicann/pyasc python/asc/runtime/compiler.py `_get_compiler_cmd` (the `.cpp` sources
///   are compiled as CCE, Ascend C's device language); `-O3 -std=c++17` and `-DTILING_KEY_VAR=0` also in
///   bisheng_intf.cmake `device_intf_pub`.
/// - `--cce-aicore-only --cce-auto-sync` and the `-mllvm` stack/overflow/address options: bisheng_intf.cmake
///   `c220_aiv_intf_pub` / `c220_aic_intf_pub` (identical for both archs).
/// - `--cce-disable-kernel-global-attr-check`: cmake/asc/legacy_modules/device_project/CMakeLists.txt and
///   pyasc's `CompilationTarget`.
/// - `-DASCENDC_DUMP=0`: pyasc without debug; dsnpu's launchers pass no dump buffer.
fn common_flags(arch: Arch) -> Vec<String> {
    let mut f: Vec<String> = ["-c", "-x", "cce", "-O3", "-std=c++17"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    f.push(format!("--cce-aicore-arch={}", arch.name()));
    f.extend(
        [
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
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    f
}

/// Flags of the two halves of a mix kernel: pyasc `_get_compiler_cmd` for MIX_AIC_1_2 (no
/// `__MIX_CORE_AIC_RATION__`, which is the 1:1 ratio).
const MIX_FLAGS: &[&str] = &["-cce-enable-mix", "-D__MIX_CORE_MACRO__=1"];

fn first_existing(candidates: &[PathBuf], exists: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    candidates.iter().find(|p| exists(p)).cloned()
}

/// Plans the AI Core build. Pure: the file system is seen only through `exists`.
///
/// Each `Vector` source is compiled once for `dav-c220-vec`, each `Mix` source for `dav-c220-cube` and then
/// `dav-c220-vec` (cube ahead of vector, as asc-devkit's util/merge_device_obj.py orders a mix pair);
/// `HostOnly` sources are skipped. `DSNPU_ASCENDC_HOST` is not defined, so the sources' `entry.h` emits the
/// plain `__global__ __aicore__` entries, and dsnpu's host Ascend C headers (include/dsnpu_ascendc) are not
/// on the include path: `kernel_operator.h` and `lib/matmul_intf.h` resolve to CANN's.
///
/// The last command links every object into one binary with
/// `ld.lld -m aicorelinux -Ttext=0 <objects> -static -o <binary>`: asc-devkit's `ascendc_fatbin_library`
/// (cmake/asc/legacy_modules/function.cmake) hands all objects to util/merge_obj.sh in its final-merge mode
/// (no `-r`), the same line pyasc runs for one kernel.
pub fn plan(inputs: &Inputs<'_>, exists: &dyn Fn(&Path) -> bool) -> Result<Plan, PlanError> {
    let home = inputs.ascend_home.ok_or(PlanError::AscendHomeUnset)?;

    let tried = compiler_candidates(home, inputs.host_arch);
    let compiler = first_existing(&tried, exists).ok_or(PlanError::CompilerNotFound { tried })?;

    // bisheng_config.cmake: CMAKE_LINKER is `${CCEC_PATH}/ld.lld`, next to the compiler.
    let tried = vec![compiler.with_file_name("ld.lld")];
    let linker = first_existing(&tried, exists).ok_or(PlanError::LinkerNotFound { tried })?;

    let roots = devkit_roots(home, inputs.host_arch);
    let includes = roots
        .iter()
        .find_map(|r| {
            if exists(&r.join("asc").join("include")) {
                Some(header_dirs(r, true))
            } else if exists(&r.join("tikcpp/tikcfw/kernel_operator.h")) {
                Some(header_dirs(r, false))
            } else {
                None
            }
        })
        .ok_or(PlanError::HeadersNotFound { tried: roots })?;

    // bisheng_intf.cmake and pyasc force-include the toolkit's version header when it exists.
    let version_header = home.join("include/version/cann_version.h");
    let version_header = exists(&version_header).then_some(version_header);

    let own_include = inputs.manifest_dir.join("include");
    let out = inputs.out_dir.join(AICORE_DIR);
    let mut commands = Vec::new();
    let mut objects = Vec::new();
    for src in inputs.sources {
        let archs: &[Arch] = match src.kind {
            CoreKind::Vector => &[Arch::Vec],
            CoreKind::Mix => &[Arch::Cube, Arch::Vec],
            CoreKind::HostOnly => continue,
        };
        let path = Path::new(src.path);
        let stem = path
            .file_stem()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        let file = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        for &arch in archs {
            let object = out.join(format!("{stem}.{}.o", arch.object_suffix()));
            let mut args: Vec<OsString> =
                common_flags(arch).into_iter().map(OsString::from).collect();
            if src.kind == CoreKind::Mix {
                args.extend(MIX_FLAGS.iter().map(OsString::from));
            }
            if let Some(v) = &version_header {
                args.push("-include".into());
                args.push(v.clone().into());
            }
            for dir in includes.iter().chain([&own_include]) {
                args.push("-I".into());
                args.push(dir.clone().into());
            }
            args.push(inputs.manifest_dir.join(path).into());
            args.push("-o".into());
            args.push(object.clone().into());
            commands.push(CommandSpec {
                what: format!("compile {file} for {}", arch.name()),
                program: compiler.clone(),
                args,
                output: object.clone(),
            });
            objects.push(object);
        }
    }
    if objects.is_empty() {
        return Err(PlanError::NoDeviceSources);
    }

    let binary = out.join(BINARY_NAME);
    let mut args: Vec<OsString> = ["-m", "aicorelinux", "-Ttext=0"]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend(objects.into_iter().map(OsString::from));
    args.extend(["-static", "-o"].iter().map(OsString::from));
    args.push(binary.clone().into());
    commands.push(CommandSpec {
        what: format!("link {BINARY_NAME}"),
        program: linker.clone(),
        args,
        output: binary.clone(),
    });

    Ok(Plan {
        compiler,
        linker,
        commands,
        binary,
    })
}

/// Runs `plan`'s commands in order. Each output's directory is created and a stale output removed first,
/// so a command that "succeeds" without writing its output is caught.
pub fn execute(plan: &Plan) -> Result<(), PlanError> {
    let io = |path: &Path, e: std::io::Error| PlanError::Io {
        path: path.to_path_buf(),
        error: e.to_string(),
    };
    for cmd in &plan.commands {
        if let Some(dir) = cmd.output.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        match std::fs::remove_file(&cmd.output) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&cmd.output, e)),
        }
        let result = Command::new(&cmd.program)
            .args(&cmd.args)
            .output()
            .map_err(|e| PlanError::Spawn {
                what: cmd.what.clone(),
                program: cmd.program.clone(),
                error: e.to_string(),
            })?;
        if !result.status.success() {
            return Err(PlanError::CommandFailed {
                what: cmd.what.clone(),
                status: result.status.to_string(),
                stderr: String::from_utf8_lossy(&result.stderr)
                    .trim_end()
                    .to_string(),
            });
        }
        if !cmd.output.is_file() {
            return Err(PlanError::OutputMissing {
                what: cmd.what.clone(),
                output: cmd.output.clone(),
            });
        }
    }
    Ok(())
}
