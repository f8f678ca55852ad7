//! `dsnpu verify [--backend npu|cpu] [--op NAME]... [--dtype f32|f16|bf16]... [--quick] [--json FILE]`:
//! runs the conformance suites (`dsnpu_ops::conformance`) against a backend on device 0 of whatever
//! AscendCL loaded (a CANN install or the simulator) and prints one row per operator × dtype: cases
//! run, passed, skipped (the backend answered `Unsupported`: no kernel), the worst error against what
//! its tolerance allowed there, and the time. Status `ok`: every case ran and passed; `partial`: the
//! cases that ran passed and some were skipped; `no kernel`: only the malformed-input cases ran
//! (they need no kernel); `FAIL`: a case failed. Exits non-zero, naming the failing operators, unless
//! every case run passed.
//!
//! `--json FILE` writes `{"library", "device", "backend", "results": [{"op", "dtype", "cases",
//! "passed", "skipped", "worst_error", "tolerance", "worst_ratio", "seconds", "status", "failures"}]}`.
//! `worst_error` is `|actual - expected|` at the element closest to (or furthest past) its bound and
//! `tolerance` the bound there (`atol + rtol·|expected|`), so a row passes when `worst_ratio` =
//! `worst_error / tolerance` is at most 1 (`null` when infinite: a NaN or an integer mismatch).
//!
//! `--quick` leaves out the whole MoE layer (`moe_layer`, which chains the other MoE operators
//! already verified one by one), the slowest suite.
//!
//! Self-test: with `DSNPU_VERIFY_BREAK=<op>` in the environment the backend is wrapped in
//! [`Mutant`], which corrupts that operator's results, and a banner on stderr says so. It proves that
//! `verify` fails when a kernel is wrong (the CLI tests use it); it never makes a failing run pass.

use std::io::Write as _;
use std::path::PathBuf;

use dsnpu_ops::backend::{Backend, Cpu, DenseOps, MlaOps, MoeOps, Npu, Op};
use dsnpu_ops::conformance::runner::{self, Mutant, SuiteReport, DTYPES};
use dsnpu_ops::DType;
use serde_json::json;

use crate::error::CliError;

/// The environment variable naming an operator to corrupt (see the module docs).
pub const BREAK_ENV: &str = "DSNPU_VERIFY_BREAK";

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// What to verify: dsnpu's kernels on device 0, or the CPU references (checks the harness).
    #[arg(long, value_enum, default_value_t = VerifyBackend::Npu)]
    pub backend: VerifyBackend,
    /// Only this operator (repeatable), e.g. rms_norm, moe_gating_topk, mla_decode.
    #[arg(long = "op", value_name = "NAME")]
    pub ops: Vec<String>,
    /// Only this element type (repeatable).
    #[arg(long = "dtype", value_enum)]
    pub dtypes: Vec<VerifyDtype>,
    /// Leave out the whole MoE layer suite (moe_layer), the slowest.
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyBackend {
    Npu,
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyDtype {
    F32,
    F16,
    Bf16,
}

impl VerifyDtype {
    fn dtype(self) -> DType {
        match self {
            VerifyDtype::F32 => DType::F32,
            VerifyDtype::F16 => DType::F16,
            VerifyDtype::Bf16 => DType::BF16,
        }
    }
}

/// The suites `args` selects, in order: operators as `Op::ALL` lists them, each in f32, f16, bf16.
pub fn selection(args: &VerifyArgs) -> Result<Vec<(Op, DType)>, CliError> {
    let mut ops = Vec::new();
    for name in &args.ops {
        let op = runner::op_named(name).ok_or_else(|| {
            let known: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
            CliError::Usage(format!(
                "unknown operator {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        ops.push(op);
    }
    let ops: Vec<Op> = if ops.is_empty() {
        Op::ALL
            .into_iter()
            .filter(|&op| !(args.quick && op == Op::MoeLayer))
            .collect()
    } else {
        Op::ALL.into_iter().filter(|op| ops.contains(op)).collect()
    };
    let dtypes: Vec<DType> = if args.dtypes.is_empty() {
        DTYPES.to_vec()
    } else {
        DTYPES
            .into_iter()
            .filter(|d| args.dtypes.iter().any(|v| v.dtype() == *d))
            .collect()
    };
    Ok(ops
        .iter()
        .flat_map(|&op| dtypes.iter().map(move |&d| (op, d)))
        .collect())
}

pub fn run(args: &VerifyArgs) -> Result<(), CliError> {
    let plan = selection(args)?;
    if let Some(path) = &args.json {
        super::check_output("--json", path)?;
    }
    let broken =
        match std::env::var(BREAK_ENV) {
            Ok(name) if !name.is_empty() => Some(runner::op_named(&name).ok_or_else(|| {
                CliError::Usage(format!("{BREAK_ENV}={name:?} names no operator"))
            })?),
            _ => None,
        };
    if let Some(op) = broken {
        eprintln!(
            "*** {BREAK_ENV}={op}: {op}'s results are deliberately corrupted (self-test) ***"
        );
    }
    let (backend_name, reports) = match args.backend {
        VerifyBackend::Cpu => ("cpu".to_string(), run_on(Cpu, broken, &plan)),
        VerifyBackend::Npu => {
            let npu = Npu::new(0)?;
            (Backend::name(&npu), run_on(npu, broken, &plan))
        }
    };
    print!("{}", table(&reports));
    if let Some(path) = &args.json {
        let doc = json_report(&backend_name, &reports)?;
        let text = serde_json::to_string_pretty(&doc).expect("a JSON value always serializes");
        std::fs::write(path, text + "\n").map_err(|source| CliError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} {}", r.op, r.dtype))
        .collect();
    let _ = std::io::stdout().flush();
    if failed.is_empty() {
        Ok(())
    } else {
        for r in reports.iter().filter(|r| !r.passed()) {
            for f in r.seen.failures.iter().take(3) {
                eprintln!("FAIL {} {}: {f}", r.op, r.dtype);
            }
        }
        Err(CliError::Failed(format!(
            "verify: {} of {} suites failed: {}",
            failed.len(),
            reports.len(),
            failed.join(", ")
        )))
    }
}

fn run_on<B: DenseOps + MoeOps + MlaOps>(
    backend: B,
    broken: Option<Op>,
    plan: &[(Op, DType)],
) -> Vec<SuiteReport> {
    match broken {
        Some(op) => run_plan(&Mutant::new(backend, op), plan),
        None => run_plan(&backend, plan),
    }
}

fn run_plan<B: DenseOps + MoeOps + MlaOps>(backend: &B, plan: &[(Op, DType)]) -> Vec<SuiteReport> {
    let bar = indicatif::ProgressBar::new(plan.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verify {msg:28} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // A suite that panics is recorded by the runner; the default hook would print a backtrace note
    // over the progress bar for each.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut reports = Vec::with_capacity(plan.len());
    for &(op, dtype) in plan {
        bar.set_message(format!("{op} {dtype}"));
        reports.push(runner::run_suite(backend, op, dtype));
        bar.inc(1);
    }
    std::panic::set_hook(hook);
    bar.finish_and_clear();
    reports
}

fn status(r: &SuiteReport) -> &'static str {
    if !r.passed() {
        "FAIL"
    } else if r.ran_nothing() {
        "no kernel"
    } else if r.seen.skipped > 0 {
        "partial"
    } else {
        "ok"
    }
}

/// The table `run` prints.
pub fn table(reports: &[SuiteReport]) -> String {
    let mut out = format!(
        "{:<24} {:<5} {:>6} {:>6} {:>7} {:>11} {:>11} {:>8} {:>8}  {}\n",
        "op",
        "dtype",
        "cases",
        "passed",
        "skipped",
        "worst err",
        "allowed",
        "ratio",
        "seconds",
        "status"
    );
    for r in reports {
        let (err, allowed, ratio) = match &r.seen.worst {
            Some(w) => (
                format!("{:.3e}", w.abs_error),
                format!("{:.3e}", w.allowed),
                format!("{:.3}", w.ratio),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        out += &format!(
            "{:<24} {:<5} {:>6} {:>6} {:>7} {:>11} {:>11} {:>8} {:>8.3}  {}\n",
            r.op.name(),
            r.dtype.to_string(),
            r.seen.cases,
            r.seen.passed,
            r.seen.skipped,
            err,
            allowed,
            ratio,
            r.seconds,
            status(r)
        );
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let skipped = reports.iter().filter(|r| r.ran_nothing()).count();
    out += &format!(
        "{} suites: {} passed, {} failed, {} skipped entirely (no kernel for the operator)\n",
        reports.len(),
        reports.len() - failed - skipped,
        failed,
        skipped
    );
    out
}

fn finite(x: f32) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else {
        serde_json::Value::Null
    }
}

/// The `--json` document.
pub fn json_report(backend: &str, reports: &[SuiteReport]) -> Result<serde_json::Value, CliError> {
    let lib = dsnpu_runtime::library()?;
    let device = match backend {
        "cpu" => "cpu".to_string(),
        _ => dsnpu_runtime::soc_name()?.unwrap_or_else(|| "(unknown SoC)".into()),
    };
    let results: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let w = r.seen.worst.as_ref();
            json!({
                "op": r.op.name(),
                "dtype": r.dtype.to_string(),
                "cases": r.seen.cases,
                "passed": r.seen.passed,
                "skipped": r.seen.skipped,
                "worst_error": w.map_or(serde_json::Value::Null, |w| finite(w.abs_error)),
                "tolerance": w.map_or(serde_json::Value::Null, |w| finite(w.allowed)),
                "worst_ratio": w.map_or(serde_json::Value::Null, |w| finite(w.ratio)),
                "seconds": r.seconds,
                "status": status(r),
                "failures": r.seen.failures.iter().take(5).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "library": format!("{} ({})", lib.path.display(), match lib.kind {
            dsnpu_runtime::LibraryKind::Real => "CANN",
            dsnpu_runtime::LibraryKind::Simulator => "simulator",
        }),
        "device": device,
        "backend": backend,
        "results": results,
    }))
}
