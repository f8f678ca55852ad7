//! `dsnpu bench [--op NAME]... [--preset deepseek-v3|quick] [--json FILE] [--plot FILE.png]`: runs the
//! kernels at DeepSeek-V3 shapes (`crate::bench::cases`) on device 0 of whatever AscendCL loaded.
//!
//! - On the simulator every figure is **modelled**: one launch per case, its counters (GM bytes read
//!   and written, cube multiply-adds, vector element operations), the pipe model's time (`model_us`)
//!   and the operator's roofline (`roof_us`) on one 910B2 die. The kernels are tiled for a 910B2
//!   whatever the simulator's configuration (a simulated device with fewer than its 24 cube and 48
//!   vector cores is refused), so the counters are those of a 910B2 launch.
//! - On a real device they are **measured**: `--warmup` launches, then `--repeats` launches each timed
//!   by timeline events; the median, and the GB/s and TFLOPS the operator's minimal bytes and
//!   necessary FLOPs reach in it.
//!
//! `--json FILE` writes `{"bench", "preset", "device", "timing": "modelled"|"measured", "cases": [...]}`
//! where a case has the bench reports' fields (`dsnpu_kernels::bench_report`: "kernel", "shape",
//! "dtype", "gm_read_bytes", "gm_write_bytes", "minimal_bytes", "ratio", "cube_macs", "vector_ops",
//! "model_us", "roof_us", "bound"; `null` where a device has no counters) plus "op", "wall_us" (null
//! when modelled), "gb_per_s" and "tflops" (of the minimal bytes and FLOPs, in the modelled or the
//! measured time). `--plot FILE.png` draws the roofline chart (`crate::bench::plot`).

use std::path::PathBuf;

use dsnpu_kernels::bench_report::BenchCase;
use dsnpu_kernels::launch::{Hardware, KernelLibrary};
use dsnpu_runtime::{sim_counters, Device};
use serde_json::{json, Value};

use crate::bench::cases::{self, Shapes};
use crate::bench::measure::{self, Figures, Timed};
use crate::bench::plot;
use crate::error::CliError;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Only this operator (repeatable), e.g. mla_decode, expert_ffn, rms_norm.
    #[arg(long = "op", value_name = "NAME")]
    pub ops: Vec<String>,
    /// The shapes: DeepSeek-V3's, or a scaled-down set that runs in seconds on the simulator.
    #[arg(long, value_enum, default_value_t = Preset::DeepseekV3)]
    pub preset: Preset,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw the roofline chart as a PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// On a device: untimed launches of each case first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// On a device: timed launches of each case (the median is reported).
    #[arg(long, default_value_t = 21)]
    pub repeats: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    DeepseekV3,
    Quick,
}

impl Preset {
    pub fn shapes(self) -> &'static Shapes {
        match self {
            Preset::DeepseekV3 => &cases::DEEPSEEK_V3,
            Preset::Quick => &cases::QUICK,
        }
    }
}

/// Most warm-up or timed launches of a case: the timings are held in memory, and more than this is a
/// typo, not a measurement.
const MAX_REPEATS: usize = 1_000_000;

pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    let unknown = cases::unknown_ops(&args.ops);
    if !unknown.is_empty() {
        return Err(CliError::Usage(format!(
            "unknown operator(s) {}; the bench has {}",
            unknown.join(", "),
            cases::OPS.join(", ")
        )));
    }
    if let Some(path) = &args.json {
        super::check_output("--json", path)?;
    }
    if let Some(path) = &args.plot {
        super::check_output("--plot", path)?;
        // plotters picks the encoder by the extension and fails on any other with a debug dump.
        let png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !png {
            return Err(CliError::OutputPath {
                flag: "--plot",
                path: path.clone(),
                reason: "the chart is a PNG: the file name must end in .png".into(),
            });
        }
    }
    if args.repeats > MAX_REPEATS || args.warmup > MAX_REPEATS {
        return Err(CliError::Usage(format!(
            "--warmup {} --repeats {}: at most {MAX_REPEATS} launches each",
            args.warmup, args.repeats
        )));
    }
    let shapes = args.preset.shapes();
    let simulator = sim_counters::is_simulator()?;
    let device = Device::new(0)?;
    let lib = if simulator {
        let (want, has) = (Hardware::ASCEND_910B2, device.core_counts()?);
        if has.cube < want.cube.cores || has.vector < want.vector.cores {
            return Err(CliError::Usage(format!(
                "on the simulator, bench models one 910B2 die and needs its {} cube and {} vector \
                 cores; the simulated device has {} and {} (DSNPU_SIM_AICORE_NUM)",
                want.cube.cores, want.vector.cores, has.cube, has.vector
            )));
        }
        KernelLibrary::load_with(&device, want)?
    } else {
        KernelLibrary::get(&device)?
    };
    let stream = device.new_stream()?;
    eprintln!("setting up the {} cases...", shapes.name);
    let mut cases = cases::build(&lib, &stream, shapes, &args.ops)?;
    stream.synchronize()?;

    let mut figures = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter_mut().enumerate() {
        eprintln!(
            "[{}/{}] {} {}",
            i + 1,
            figures.capacity(),
            case.op,
            case.shape
        );
        figures.push(if simulator {
            Figures::Modelled(measure::modelled(case, &stream)?)
        } else {
            Figures::Measured(measure::measured(
                case,
                &device,
                &stream,
                args.warmup,
                args.repeats,
            )?)
        });
    }
    let ops: Vec<&str> = cases.iter().map(|c| c.op).collect();
    let device_name = if simulator {
        "910B2 model".to_string()
    } else {
        dsnpu_runtime::soc_name()?.unwrap_or_else(|| "(unknown SoC)".into())
    };
    print!("{}", table(&figures, shapes.name, &device_name));

    if let Some(path) = &args.json {
        let doc = json!({
            "bench": "dsnpu bench",
            "preset": shapes.name,
            "device": device_name,
            "timing": if simulator { "modelled" } else { "measured" },
            "cases": figures.iter().zip(&ops).map(|(f, op)| case_json(op, f)).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).expect("a JSON value always serializes");
        write(path, (text + "\n").as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let mut points = Vec::new();
        for p in plot::points(&figures) {
            match p {
                Ok(p) => points.push(p),
                Err(kernel) => eprintln!("plot: {kernel} has no FLOPs on record; not plotted"),
            }
        }
        plot::draw(path, &points, simulator)?;
        eprintln!("roofline chart: {}", path.display());
    }
    Ok(())
}

fn write(path: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// JSON has no NaN or infinity: those become `null`.
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn case_json(op: &str, f: &Figures) -> Value {
    match f {
        Figures::Modelled(c) => json!({
            "op": op,
            "kernel": c.kernel,
            "shape": c.shape,
            "dtype": c.dtype,
            "gm_read_bytes": c.gm_read_bytes,
            "gm_write_bytes": c.gm_write_bytes,
            "minimal_bytes": c.minimal_bytes,
            "ratio": num(c.ratio()),
            "cube_macs": c.cube_macs,
            "vector_ops": c.vector_ops,
            "model_us": num(c.model_us),
            "roof_us": num(c.roof_us),
            "bound": c.bound,
            "wall_us": Value::Null,
            "gb_per_s": num(c.minimal_bytes as f64 / c.model_us * 1e-3),
            "tflops": num(modelled_macs(c) * 2.0 / c.model_us * 1e-6),
        }),
        Figures::Measured(t) => json!({
            "op": op,
            "kernel": t.kernel,
            "shape": t.shape,
            "dtype": t.dtype,
            "gm_read_bytes": Value::Null,
            "gm_write_bytes": Value::Null,
            "minimal_bytes": t.minimal_bytes,
            "ratio": Value::Null,
            "cube_macs": Value::Null,
            "vector_ops": Value::Null,
            "model_us": Value::Null,
            "roof_us": num(t.roof_us),
            "bound": Value::Null,
            "wall_us": num(t.wall_us),
            "gb_per_s": num(t.gb_per_s()),
            "tflops": num(t.tflops()),
        }),
    }
}

/// The multiply-adds a modelled case's throughput counts: the cube's (the counters have no notion of
/// the operator's necessary ones).
fn modelled_macs(c: &BenchCase) -> f64 {
    c.cube_macs as f64
}

/// The printed table: modelled columns on the simulator, measured ones on a device.
pub fn table(figures: &[Figures], preset: &str, device: &str) -> String {
    let mut out = String::new();
    let modelled = matches!(figures.first(), Some(Figures::Modelled(_)));
    if modelled {
        out += &format!(
            "dsnpu bench, preset {preset}: MODELLED on the {device} (simulator counters and the pipe \
             cost model; no time here was measured)\n\n"
        );
        out += "| kernel                         | shape                                   |   GM read B |  GM write B |   minimal B |  ratio |     cube MACs |    vec ops | model µs |  roof µs | x roof | bound   |\n";
        out += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    } else {
        out += &format!(
            "dsnpu bench, preset {preset}: MEASURED on {device} (median of event-timed launches)\n\n"
        );
        out += "| kernel                         | shape                                   |  median µs |     GB/s |   TFLOPS |  roof µs | x roof |\n";
        out += "|---|---|---|---|---|---|---|\n";
    }
    for f in figures {
        out += &match f {
            Figures::Modelled(c) => format!(
                "| {:<30} | {:<39} | {:>11} | {:>11} | {:>11} | {:>6.2} | {:>13} | {:>10} | {:>8.2} | {:>8.2} | {:>6.2} | {:<7} |\n",
                c.kernel,
                c.shape,
                c.gm_read_bytes,
                c.gm_write_bytes,
                c.minimal_bytes,
                c.ratio(),
                c.cube_macs,
                c.vector_ops,
                c.model_us,
                c.roof_us,
                c.model_us / c.roof_us,
                c.bound
            ),
            Figures::Measured(t @ Timed { .. }) => format!(
                "| {:<30} | {:<39} | {:>10.2} | {:>8.1} | {:>8.2} | {:>8.2} | {:>6.2} |\n",
                t.kernel,
                t.shape,
                t.wall_us,
                t.gb_per_s(),
                t.tflops(),
                t.roof_us,
                t.wall_us / t.roof_us
            ),
        };
    }
    out
}
