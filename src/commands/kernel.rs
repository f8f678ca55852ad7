//! `dsnpu kernel build|run`: a playground for Ascend C kernels written as for CANN, run on the
//! simulator with its sanitizer and cycle model.
//!
//! `build` compiles one source that includes `kernel_operator.h` and declares plain
//! `extern "C" __global__ __aicore__ void name(GM_ADDR ..., GM_ADDR workspace, GM_ADDR tiling)` entries
//! against the host Ascend C layer (embedded in this binary, written to a temporary directory) into a
//! shared object the simulator loads. It finds the entries in the source text, compiles the source with
//! each entry renamed to an internal symbol, and exports the simulator's kernel ABI
//! (`sim/include/dsnpu_sim_kernel.h`) under each entry's own name, as `DSNPU_HOST_ENTRY` does for the
//! project's kernels. It needs a C++17 compiler: `$CXX`, else `c++`.
//!
//! `run` loads such a binary on device 0 of the simulator, allocates each `--arg` (exact
//! `aclrtMalloc`s, in order, filled as asked), then the workspace and the tiling bytes, launches the
//! kernel once and reports its status, its sanitizer finding, the launch counters (GM traffic, and the
//! part of it the L2 model sends to HBM: `hbm_read_bytes`, `hbm_write_bytes`), the modelled time of the
//! host layer's cycle model and the roofline time of the traffic and work the launch did.
//!
//! Validated here: the argument specs, the check list, that entries exist and that the library is the
//! simulator. Trusted: the kernel code itself (as device code is on the NPU); every GM and UB access it
//! makes through the host layer is checked by the layer and the simulator. The simulator reports the
//! first finding of a launch (the faulting block stops; the others finish), so `findings` holds at most
//! one entry.

use std::path::{Path, PathBuf};
use std::process::Command;

use dsnpu_kernels::cost_model::PipeModel;
use dsnpu_kernels::roofline::ASCEND_910B2;
use dsnpu_runtime::{sim_counters, Device, DeviceBuffer, Module, RuntimeError};

use crate::error::CliError;

#[derive(Debug, Clone, clap::Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    pub command: KernelCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KernelCommand {
    /// Build an Ascend C source (written as for CANN) into a kernel binary for the simulator.
    Build(BuildArgs),
    /// Launch one kernel of a built binary once on the simulator and report what it did.
    Run(RunArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The Ascend C source (includes `kernel_operator.h`).
    pub src: PathBuf,
    /// More include directories.
    #[arg(short = 'I', value_name = "DIR")]
    pub include: Vec<PathBuf>,
    /// The kernel binary to write.
    #[arg(short = 'o', value_name = "OUT.so")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A kernel binary from `dsnpu kernel build`.
    pub binary: PathBuf,
    /// The entry to launch.
    #[arg(long)]
    pub kernel: String,
    /// Blocks of the launch.
    #[arg(long, default_value_t = 1)]
    pub blocks: u32,
    /// One GM argument of BYTES bytes, in parameter order; filled with zeros (default), left
    /// poisoned (never written: reading it is an init finding) or random bytes.
    #[arg(long = "arg", value_name = "BYTES[:fill=zero|poison|rand]")]
    pub args: Vec<String>,
    /// Bytes of the workspace argument (left unwritten); 0 passes NULL.
    #[arg(long, default_value_t = 0)]
    pub workspace: usize,
    /// The tiling argument: the bytes of FILE (`@FILE`); without it NULL.
    #[arg(long, value_name = "@FILE")]
    pub tiling: Option<String>,
    /// Sanitizer checks (DSNPU_SIM_CHECK): comma-separated mem, race, init, sync, or all.
    #[arg(long, default_value = "mem,race,init,sync")]
    pub check: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &KernelArgs) -> Result<(), CliError> {
    match &args.command {
        KernelCommand::Build(b) => build(b),
        KernelCommand::Run(r) => run_kernel(r),
    }
}

// ---------------------------------------------------------------------------------------------------
// build

/// The host layer's headers, as (path under the include directory, text).
const HOST_HEADERS: &[(&str, &str)] = &[
    (
        "ascendc_host_api.h",
        include_str!("../../kernels/include/dsnpu_ascendc/ascendc_host_api.h"),
    ),
    (
        "lib/matmul_intf.h",
        include_str!("../../kernels/include/dsnpu_ascendc/lib/matmul_intf.h"),
    ),
    (
        "dsnpu_host/atomic.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/atomic.h"),
    ),
    (
        "dsnpu_host/block.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/block.h"),
    ),
    (
        "dsnpu_host/coop.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/coop.h"),
    ),
    (
        "dsnpu_host/cost.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/cost.h"),
    ),
    (
        "dsnpu_host/cube.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/cube.h"),
    ),
    (
        "dsnpu_host/data_copy.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/data_copy.h"),
    ),
    (
        "dsnpu_host/dcache.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/dcache.h"),
    ),
    (
        "dsnpu_host/entry.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/entry.h"),
    ),
    (
        "dsnpu_host/gm_race.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/gm_race.h"),
    ),
    (
        "dsnpu_host/l2_die.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/l2_die.h"),
    ),
    (
        "dsnpu_host/macros.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/macros.h"),
    ),
    (
        "dsnpu_host/mix.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/mix.h"),
    ),
    (
        "dsnpu_host/pipe.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/pipe.h"),
    ),
    (
        "dsnpu_host/pipeline.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/pipeline.h"),
    ),
    (
        "dsnpu_host/sync.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/sync.h"),
    ),
    (
        "dsnpu_host/tensor.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/tensor.h"),
    ),
    (
        "dsnpu_host/tiling_data.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/tiling_data.h"),
    ),
    (
        "dsnpu_host/trace.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/trace.h"),
    ),
    (
        "dsnpu_host/types.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/types.h"),
    ),
    (
        "dsnpu_host/vector.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/vector.h"),
    ),
    (
        "dsnpu_host/vector_repeat.h",
        include_str!("../../kernels/include/dsnpu_ascendc/dsnpu_host/vector_repeat.h"),
    ),
    (
        "dsnpu_sim_kernel.h",
        include_str!("../../sim/include/dsnpu_sim_kernel.h"),
    ),
    (
        "kernel_operator.h",
        "// CANN's kernel header, for the host: the dsnpu host Ascend C layer.\n#include \"ascendc_host_api.h\"\n",
    ),
];

/// The names of the `extern "C" __global__ [__aicore__] void name(` entries of `src`, in order.
/// Comments are skipped; the qualifiers may come in any order between `extern "C"` and `void`.
pub fn find_entries(src: &str) -> Vec<String> {
    let code = strip_comments(src);
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("extern \"C\"") {
        rest = &rest[at + "extern \"C\"".len()..];
        let head = rest.split('(').next().unwrap_or("");
        // A declaration's head has no braces, semicolons or strings.
        if head.contains(['{', '}', ';', '"']) {
            continue;
        }
        let words: Vec<&str> = head.split_whitespace().collect();
        if let [quals @ .., "void", name] = words.as_slice() {
            let is_ident = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if quals.contains(&"__global__") && is_ident && !names.iter().any(|n| n == name) {
                names.push((*name).to_string());
            }
        }
    }
    names
}

/// `src` with `//` and `/* */` comments replaced by spaces (string literals left alone).
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
        } else if c == b'"' {
            in_str = true;
            out.push('"');
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// The translation unit compiled for `src`: the host layer, `src` with its entries renamed, and the
/// simulator ABI export of each entry under its own name. With `sync_all` (the source mentions
/// `SyncAll`) every entry is declared to synchronize its blocks, so the simulator runs them all at once;
/// with `mix` (the source declares `KERNEL_TYPE_MIX_AIC_1_2`) every entry is a 1:2 mix kernel, each block
/// one cube core and two vector cores.
fn wrapper_source(src: &Path, entries: &[String], sync_all: bool, mix: bool) -> String {
    let mut w = String::from(
        "// Generated by `dsnpu kernel build`.\n#include \"kernel_operator.h\"\n#include \"lib/matmul_intf.h\"\n",
    );
    for e in entries {
        w.push_str(&format!("#define {e} dsnpu_host_impl_{e}\n"));
    }
    w.push_str(&format!("#include \"{}\"\n", src.display()));
    for e in entries {
        let entry = match (mix, sync_all) {
            (true, true) => "DSNPU_HOST_ENTRY_MIX_SYNC",
            (true, false) => "DSNPU_HOST_ENTRY_MIX",
            (false, true) => "DSNPU_HOST_ENTRY_SYNC",
            (false, false) => "DSNPU_HOST_ENTRY",
        };
        w.push_str(&format!("#undef {e}\n{entry}({e})\n"));
    }
    w.push_str("DSNPU_HOST_ABI_EXPORTS()\n");
    w
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A fresh private directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, CliError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("dsnpu-kernel-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("dsnpu_host")).map_err(io_err(&dir))?;
        std::fs::create_dir_all(dir.join("lib")).map_err(io_err(&dir))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn build(args: &BuildArgs) -> Result<(), CliError> {
    // Before the compiler runs (seconds for the host layer's headers): its linker would only say so
    // at the end.
    super::check_output("-o", &args.out)?;
    let text = String::from_utf8(super::read_input("source", &args.src)?)
        .map_err(|e| io_err(&args.src)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let entries = find_entries(&text);
    if entries.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no kernel entry found (extern \"C\" __global__ __aicore__ void name(GM_ADDR ...))",
            args.src.display()
        )));
    }
    let src = std::path::absolute(&args.src).map_err(io_err(&args.src))?;
    if src.to_string_lossy().contains(['"', '\n']) {
        return Err(CliError::Usage(format!(
            "{}: the source path must not contain quotes or newlines",
            src.display()
        )));
    }
    let tmp = TempDir::new()?;
    for (name, body) in HOST_HEADERS {
        let p = tmp.0.join(name);
        std::fs::write(&p, body).map_err(io_err(&p))?;
    }
    let wrapper = tmp.0.join("dsnpu_kernel_entries.cpp");
    std::fs::write(&wrapper, {
        let code = strip_comments(&text);
        wrapper_source(
            &src,
            &entries,
            code.contains("SyncAll"),
            code.contains("KERNEL_TYPE_MIX_AIC_1_2"),
        )
    })
    .map_err(io_err(&wrapper))?;
    let cxx = std::env::var_os("CXX").unwrap_or_else(|| "c++".into());
    let mut cmd = Command::new(&cxx);
    cmd.args(["-std=c++17", "-shared", "-fPIC", "-O2", "-pthread"])
        .args([
            "-fvisibility=hidden",
            "-fvisibility-inlines-hidden",
            "-Wl,-z,defs",
        ])
        .arg("-ffp-contract=off")
        .arg("-DDSNPU_ASCENDC_HOST=1")
        .arg("-I")
        .arg(&tmp.0);
    for dir in &args.include {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg(&wrapper).arg("-o").arg(&args.out);
    let output = cmd.output().map_err(|e| {
        CliError::Failed(format!(
            "cannot start the C++ compiler {:?} (set CXX to choose another): {e}",
            cxx
        ))
    })?;
    if !output.status.success() {
        return Err(CliError::Failed(format!(
            "compiling {} failed:\n{}",
            args.src.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    println!(
        "built {} with {} kernel{}: {}",
        args.out.display(),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" },
        entries.join(", ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// run

/// How a GM argument starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Zero,
    /// Never written: poisoned by the simulator under the init check (0xFF bytes otherwise).
    Poison,
    /// Pseudo-random bytes (a fixed seed per argument, so runs repeat).
    Rand,
}

/// Parses `BYTES[:fill=zero|poison|rand]`.
pub fn parse_arg(spec: &str) -> Result<(usize, Fill), CliError> {
    let bad = |why: &str| CliError::Usage(format!("--arg {spec:?}: {why}"));
    let (bytes, fill) = match spec.split_once(':') {
        None => (spec, None),
        Some((b, f)) => (b, Some(f)),
    };
    let n: usize = bytes
        .trim()
        .parse()
        .map_err(|_| bad("BYTES is not a number"))?;
    if n == 0 {
        return Err(bad("BYTES must be at least 1"));
    }
    // Named here: past it the allocator's own message does not say which argument asked.
    if n > isize::MAX as usize {
        return Err(bad("BYTES is larger than an allocation can be"));
    }
    let fill = match fill.map(str::trim) {
        None | Some("fill=zero") => Fill::Zero,
        Some("fill=poison") => Fill::Poison,
        Some("fill=rand") => Fill::Rand,
        Some(_) => return Err(bad("the fill is fill=zero, fill=poison or fill=rand")),
    };
    Ok((n, fill))
}

/// Validates a check list.
pub fn parse_checks(s: &str) -> Result<Vec<String>, CliError> {
    let words: Vec<String> = s.split(',').map(|w| w.trim().to_string()).collect();
    if let Some(w) = words
        .iter()
        .find(|w| !["mem", "race", "init", "sync", "all"].contains(&w.as_str()))
    {
        return Err(CliError::Usage(format!(
            "--check: unknown check {w:?} (mem, race, init, sync, all)"
        )));
    }
    Ok(words)
}

/// Host memory a random fill stages at a time: an argument of any size costs at most this much.
const RAND_CHUNK: usize = 64 << 20;

/// xorshift64*: reproducible filler, not cryptographic. One byte per step, so the stream does not
/// depend on how it is cut into pieces.
struct RandBytes(u64);

impl RandBytes {
    fn new(seed: u64) -> Self {
        RandBytes(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next `out.len()` bytes of the stream.
    fn fill(&mut self, out: &mut [u8]) {
        let x = &mut self.0;
        for byte in out {
            *x ^= *x >> 12;
            *x ^= *x << 25;
            *x ^= *x >> 27;
            *byte = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
    }
}

/// Writes the first `b.len()` bytes of `RandBytes::new(seed)` into `b`, staging at most `chunk` bytes
/// on the host at a time (each piece copied to its offset).
fn fill_rand(b: &mut DeviceBuffer<u8>, seed: u64, chunk: usize) -> Result<(), RuntimeError> {
    let mut stream = RandBytes::new(seed);
    let cap = chunk.clamp(1, b.len().max(1));
    let mut staging = vec![0u8; cap];
    let mut at = 0;
    while at < b.len() {
        let piece = &mut staging[..(b.len() - at).min(cap)];
        stream.fill(piece);
        b.copy_from_host_at(at, piece)?;
        at += piece.len();
    }
    Ok(())
}

/// One sanitizer finding or fault of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `race`, `init`, `sync`, or `mem` (bounds, capacity, alignment and other faults).
    pub kind: String,
    pub kernel: String,
    pub block: Option<u32>,
    pub detail: String,
}

/// The finding in a launch error's message (`... kernel K block B: [kind: ]detail`).
pub fn finding_of(kernel: &str, message: &str) -> Finding {
    let marker = format!("kernel {kernel} block ");
    let (block, rest) = match message.find(&marker) {
        Some(at) => {
            let tail = &message[at + marker.len()..];
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            let rest = tail[digits.len()..].trim_start_matches(':').trim_start();
            (digits.parse().ok(), rest)
        }
        None => (None, message),
    };
    let (kind, detail) = match rest.split_once(": ") {
        Some((k, d)) if ["race", "init", "sync"].contains(&k) => (k.to_string(), d.to_string()),
        _ => ("mem".to_string(), rest.to_string()),
    };
    Finding {
        kind,
        kernel: kernel.to_string(),
        block,
        detail,
    }
}

/// Most blocks of one launch (`aclrtLaunchKernel*`'s `numBlocks`).
const MAX_BLOCKS: u32 = 65535;

fn run_kernel(args: &RunArgs) -> Result<(), CliError> {
    let checks = parse_checks(&args.check)?;
    let specs = args
        .args
        .iter()
        .map(|s| parse_arg(s))
        .collect::<Result<Vec<_>, _>>()?;
    let tiling = match &args.tiling {
        None => None,
        Some(t) => {
            let path = Path::new(t.strip_prefix('@').ok_or_else(|| {
                CliError::Usage(format!("--tiling {t:?}: give the file as @FILE"))
            })?);
            Some(super::read_input("--tiling", path)?)
        }
    };
    if args.workspace > isize::MAX as usize {
        return Err(CliError::Usage(format!(
            "--workspace {}: larger than an allocation can be",
            args.workspace
        )));
    }
    // AscendCL's range for a launch's blocks; past it the launch itself is refused, which the report
    // would otherwise present as the kernel's own (mem) finding.
    if !(1..=MAX_BLOCKS).contains(&args.blocks) {
        return Err(CliError::Usage(format!(
            "--blocks {}: a launch has 1 to {MAX_BLOCKS} blocks",
            args.blocks
        )));
    }
    // Before the simulator starts: it reads the checks at aclInit, the host layer at every block.
    std::env::set_var("DSNPU_SIM_CHECK", checks.join(","));
    let init_on = checks.iter().any(|c| c == "init" || c == "all");
    if !sim_counters::is_simulator()? {
        return Err(CliError::Usage(
            "dsnpu kernel run needs the dsnpu simulator (a host kernel binary cannot run on an NPU)".into(),
        ));
    }
    let dev = Device::new(0)?;
    let s = dev.new_stream()?;
    let module = Module::load_file(&dev, &args.binary)?;
    let f = module.function(&args.kernel)?;
    let mut bufs: Vec<DeviceBuffer<u8>> = Vec::new();
    for (i, &(n, fill)) in specs.iter().enumerate() {
        let mut b = s.alloc_uncached::<u8>(n)?;
        // Zero and poison fills are device memsets (no host copy of a large argument); only the
        // random bytes come from the host, through a bounded staging buffer.
        match fill {
            Fill::Zero => s.memset_zeros(&mut b)?,
            Fill::Rand => fill_rand(&mut b, i as u64 + 1, RAND_CHUNK)?,
            // Under the init check fresh memory is already poisoned and unwritten.
            Fill::Poison if !init_on => s.memset_bytes(&mut b, 0xFF)?,
            Fill::Poison => {}
        }
        bufs.push(b);
    }
    let mut workspace = match args.workspace {
        0 => None,
        n => Some(s.alloc_uncached::<u8>(n)?),
    };
    let tiling_buf = match &tiling {
        Some(bytes) if !bytes.is_empty() => {
            let mut t = s.alloc_uncached::<u8>(bytes.len())?;
            t.copy_from_host(bytes)?;
            Some(t)
        }
        _ => None,
    };
    let launched = {
        let mut a = f.builder(&s);
        for b in bufs.iter_mut() {
            a.arg_mut(b);
        }
        match workspace.as_mut() {
            Some(w) => a.arg_mut(w),
            None => a.null(),
        };
        match &tiling_buf {
            Some(t) => a.arg(t),
            None => a.null(),
        };
        // SAFETY: the kernel is the user's device code, trusted as device code is on the NPU; every
        // argument is a live allocation of this device or NULL, and the host Ascend C layer checks each
        // GM access the kernel makes through it against the simulator's allocation table before it
        // happens. The parameter list (one 8-byte GM address each) is checked by the entry shim.
        unsafe { a.launch(args.blocks) }
    };
    let status = launched.and_then(|()| s.synchronize());
    let findings: Vec<Finding> = match &status {
        Ok(()) => Vec::new(),
        Err(e) => vec![finding_of(&args.kernel, &e.to_string())],
    };
    let counters = sim_counters::last_launch_counters(&s)?;
    let model = sim_counters::last_launch_model(&s)?;
    let (model_us, roof_us) = match (&counters, &model) {
        (Some(c), Some(m)) => {
            let pm = PipeModel {
                cycles: m.cycles,
                pipe_busy: m.pipe_busy,
            };
            let t = ASCEND_910B2.times(
                c.totals.gm_bytes(),
                c.totals.cube_macs,
                c.totals.vector_elem_ops,
            );
            (pm.model_us(), t.modelled() * 1e6)
        }
        _ => (0.0, 0.0),
    };
    let code = status
        .as_ref()
        .err()
        .and_then(|e| e.acl_code())
        .unwrap_or(0);
    let report = serde_json::json!({
        "kernel": args.kernel,
        "blocks": args.blocks,
        "status": if status.is_ok() { "ok" } else { "failed" },
        "code": code,
        "checks": checks,
        "findings": findings.iter().map(|f| serde_json::json!({
            "kind": f.kind, "kernel": f.kernel, "block": f.block, "detail": f.detail,
        })).collect::<Vec<_>>(),
        "counters": counters.as_ref().map(|c| serde_json::json!({
            "gm_to_ub_bytes": c.totals.gm_to_ub_bytes,
            "ub_to_gm_bytes": c.totals.ub_to_gm_bytes,
            "vector_elem_ops": c.totals.vector_elem_ops,
            "cube_macs": c.totals.cube_macs,
            "ub_high_water": c.totals.ub_high_water,
            "hbm_read_bytes": c.totals.hbm_read_bytes,
            "hbm_write_bytes": c.totals.hbm_write_bytes,
            "warnings": c.warnings,
            "model_cycles": model.map_or(0, |m| m.cycles),
        })),
        "model_us": model_us,
        "roof_us": roof_us,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} on {} block(s): {}",
            args.kernel,
            args.blocks,
            if status.is_ok() { "ok" } else { "FAILED" }
        );
        for f in &findings {
            let block = f.block.map_or("?".to_string(), |b| b.to_string());
            println!("  {} finding, block {block}: {}", f.kind, f.detail);
        }
        if let Some(c) = &counters {
            println!(
                "  GM read {} B, GM written {} B, vector ops {}, cube MACs {}, UB high water {} B, warnings {}",
                c.totals.gm_to_ub_bytes,
                c.totals.ub_to_gm_bytes,
                c.totals.vector_elem_ops,
                c.totals.cube_macs,
                c.totals.ub_high_water,
                c.warnings
            );
            println!(
                "  of which through the L2 model to HBM: read {} B, written {} B",
                c.totals.hbm_read_bytes, c.totals.hbm_write_bytes
            );
        }
        println!("  modelled {model_us:.2} us (roofline of its traffic and work {roof_us:.3} us)");
    }
    match status {
        Ok(()) => Ok(()),
        Err(e) => Err(CliError::Failed(format!("{} failed: {e}", args.kernel))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_in_cann_style_sources() {
        let src = r#"
#include "kernel_operator.h"
// extern "C" __global__ __aicore__ void commented_out(GM_ADDR x) {}
extern "C" __global__ __aicore__ void copy(GM_ADDR x, GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {}
extern "C" __aicore__ __global__ void
    swapped_order(GM_ADDR x, GM_ADDR tiling) {}
extern "C" void not_a_kernel(int);
/* extern "C" __global__ void also_commented(GM_ADDR t); */
"#;
        assert_eq!(find_entries(src), vec!["copy", "swapped_order"]);
        assert!(find_entries("int main() {}").is_empty());
    }

    #[test]
    fn argument_specs() {
        assert_eq!(parse_arg("256").unwrap(), (256, Fill::Zero));
        assert_eq!(parse_arg("64:fill=poison").unwrap(), (64, Fill::Poison));
        assert_eq!(parse_arg("8:fill=rand").unwrap(), (8, Fill::Rand));
        assert!(parse_arg("0").is_err());
        assert!(parse_arg("x").is_err());
        assert!(matches!(parse_arg("18446744073709551615"),
            Err(CliError::Usage(m)) if m == "--arg \"18446744073709551615\": BYTES is larger than an allocation can be"));
        assert!(parse_arg("8:fill=ones").is_err());
        assert!(parse_checks("mem,race").is_ok());
        assert!(parse_checks("mem,racy").is_err());
    }

    /// The random fill as it was made before it was chunked: the whole argument at once.
    fn rand_bytes_at_once(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn the_chunked_random_fill_writes_the_same_bytes_as_one_piece() {
        let dev = Device::new(0).unwrap();
        let s = dev.new_stream().unwrap();
        let n = 10_007;
        // Several chunks with a short last one, chunks dividing n, one chunk, more than n.
        for (chunk, seed) in [
            (1000, 1),
            (7, 2),
            (1, 3),
            (n, 4),
            (2 * n, 5),
            (RAND_CHUNK, 6),
        ] {
            let mut b = s.alloc_uncached::<u8>(n).unwrap();
            fill_rand(&mut b, seed, chunk).unwrap();
            assert!(
                b.to_vec().unwrap() == rand_bytes_at_once(n, seed),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn findings_are_read_from_launch_errors() {
        let f = finding_of(
            "copy",
            "launch failed: ACL_ERROR_RT_AICORE_EXCEPTION (507015): kernel copy block 3: race: DataCopy on MTE3 reads ...",
        );
        assert_eq!(
            (f.kind.as_str(), f.block, f.detail.as_str()),
            ("race", Some(3), "DataCopy on MTE3 reads ...")
        );
        let f = finding_of(
            "k",
            "kernel k block 0: DataCopy: GM range [..) is not inside one live device allocation",
        );
        assert_eq!((f.kind.as_str(), f.block), ("mem", Some(0)));
    }

    /// The embedded copy of the host layer must hold every header it has: a header added to
    /// kernels/include/dsnpu_ascendc and not listed here breaks every user build.
    #[test]
    fn the_embedded_headers_are_the_host_layer_s_headers() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/include/dsnpu_ascendc");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    on_disk.push(
                        path.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = HOST_HEADERS
            .iter()
            .map(|(name, _)| name.to_string())
            .filter(|name| root.join(name).exists())
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}
