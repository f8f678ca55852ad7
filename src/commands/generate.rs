//! `dsnpu generate --model DIR --prompt-ids 1,2,3 --max-new-tokens N [--temperature T --top-p P --seed S]
//! [--backend cpu|npu]`: prints the generated token ids, comma-separated, one line of stdout per prompt.
//! Several prompts (`--prompt-ids "1,2,3;4,5"`) run as one batch; prompt `i` samples with seed `S + i`,
//! so each line is what that prompt prints alone with that seed. A sequence stops early at the config's
//! `eos_token_id` (which is printed). Timing, the loading progress bar and which operators ran on which
//! backend go to stderr.
//!
//! Also the backend choice both model commands share: `cpu` runs the model on the CPU references; `npu`
//! runs the device-resident engine on device 0 (the simulator when no CANN is installed; see
//! [`device_run`]), every operator of a step on the device.

use super::device_run::{self, DtypeChoice};
use crate::error::CliError;
use dsnpu_model::{DeepseekV3, GenerateOptions, Generator, ModelBackend};
use dsnpu_ops::backend::{Cpu, Fallback, Npu};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Checkpoint directory: config.json and model.safetensors (or shards with their index).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt token ids, comma-separated (e.g. 1,2,3); several prompts separated by `;` run as one batch.
    #[arg(long, value_name = "IDS")]
    pub prompt_ids: String,
    /// Most tokens to generate.
    #[arg(long, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Where the operators run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// Compute dtype of the activations.
    #[arg(long, value_enum, default_value_t = DtypeChoice::F32)]
    pub dtype: DtypeChoice,
    /// Prefill the prompt in passes of at most N tokens (--backend npu or --ep; 0: one pass).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_prefill_tokens: usize,
    /// Write load/prefill/decode transfer and timing statistics as JSON to FILE (with `--ep`, rank k
    /// writes `FILE.rank<k>`).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Run on N devices, one worker process each: attention data-parallel, MoE expert-parallel over
    /// HCCL (always the device engine).
    #[arg(long, value_name = "N")]
    pub ep: Option<usize>,
}

/// Where a model command runs its operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// The CPU reference operators.
    #[default]
    Cpu,
    /// The device-resident engine on device 0 (the simulator without CANN): every operator on the device.
    Npu,
}

/// The CPU model's operators on the kernels of device 0, the CPU references for what they do not
/// cover (`--backend npu` runs the device engine instead, [`device_run`]).
pub type DeviceBackend = Fallback<Npu, Cpu>;

/// Opens device 0 and loads its kernels.
pub fn device_backend() -> Result<DeviceBackend, CliError> {
    Ok(Fallback::new(Npu::new(0)?, Cpu))
}

/// Prints on stderr which operators each backend served (`ops on sim:0: linear 24, ...` and
/// `ops on cpu: embedding 1, ...`) and, when anything crossed, each operator's host↔device copies
/// (`transfers: linear h2d 40 (81920 B) d2h 20 (2560 B), ...`).
pub fn report_backend(backend: &DeviceBackend) {
    for line in backend.report().to_string().lines() {
        if line.starts_with("transfers: ") {
            eprintln!("{line}");
        } else {
            eprintln!("ops on {line}");
        }
    }
}

pub fn run(args: &GenerateArgs) -> Result<(), CliError> {
    if let Some(n) = args.ep {
        return super::ep::generate(args, n);
    }
    let ids = generate_ids(args)?;
    print_lines(&ids)
}

/// One line of comma-separated ids per prompt on stdout.
pub fn print_lines(ids: &[Vec<i32>]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for row in ids {
        writeln!(out, "{}", format_ids(row)).map_err(|source| CliError::Io {
            path: "<stdout>".into(),
            source,
        })?;
    }
    Ok(())
}

/// The tokens `run` prints: each prompt's.
pub fn generate_ids(args: &GenerateArgs) -> Result<Vec<Vec<i32>>, CliError> {
    let prompts = parse_prompts(&args.prompt_ids)?;
    if let Some(path) = &args.stats_json {
        super::check_output("--stats-json", path)?;
    }
    device_run::check_dtype(args.dtype, args.backend)?;
    device_run::check_max_prefill_tokens(args.max_prefill_tokens, args.backend)?;
    match args.backend {
        BackendChoice::Cpu => {
            let start = Instant::now();
            let model = load_model(&args.model)?;
            let load_seconds = start.elapsed().as_secs_f64();
            let (ids, prefill_s, decode_s) = generate_with(&model, &prompts, args)?;
            eprintln!("ops on cpu: all");
            if let Some(path) = &args.stats_json {
                let weight_bytes = 4 * model_elements(&model);
                let tokens: usize = prompts.iter().map(Vec::len).sum();
                let steps = ids
                    .iter()
                    .map(Vec::len)
                    .max()
                    .unwrap_or(0)
                    .saturating_sub(1);
                let v = device_run::cpu_stats_json(
                    load_seconds,
                    weight_bytes,
                    (tokens as u64, prefill_s),
                    (steps as u64, decode_s),
                );
                device_run::write_stats(path, &v)?;
            }
            Ok(ids)
        }
        BackendChoice::Npu => device_run::generate(
            &args.model,
            &prompts,
            args.max_new_tokens,
            (args.temperature, args.top_p, args.seed),
            (args.dtype, args.max_prefill_tokens),
            args.stats_json.as_deref(),
        ),
    }
}

/// f32 elements the CPU model holds (its weight bytes / 4).
pub(crate) fn model_elements<B>(model: &DeepseekV3<B>) -> u64 {
    let w = model.weights();
    let mut n = w.embed.len() + w.norm.len() + w.lm_head.len();
    for l in &w.layers {
        n += l.input_norm.len() + l.post_attention_norm.len();
        let a = &l.attention;
        n += a.kv_a.len()
            + a.kv_a_norm.len()
            + a.kv_b.len()
            + a.w_uk.len()
            + a.w_uv_t.len()
            + a.o.len();
        n += match &a.q {
            dsnpu_model::weights::QueryProj::LowRank { a, a_norm, b } => {
                a.len() + a_norm.len() + b.len()
            }
            dsnpu_model::weights::QueryProj::Full(m) => m.len(),
        };
        n += match &l.ffn {
            dsnpu_model::weights::FfnWeights::Dense(m) => m.gate_up.len() + m.down.len(),
            dsnpu_model::weights::FfnWeights::Moe(m) => {
                m.router.len()
                    + m.bias.as_ref().map_or(0, |b| b.len())
                    + m.gate.len()
                    + m.up.len()
                    + m.down.len()
                    + m.shared.gate_up.len()
                    + m.shared.down.len()
            }
        };
    }
    n as u64
}

/// Each prompt's ids, then the seconds to the first token (prefill) and after it (decode).
fn generate_with<B: ModelBackend>(
    model: &DeepseekV3<B>,
    prompts: &[Vec<i32>],
    args: &GenerateArgs,
) -> Result<(Vec<Vec<i32>>, f64, f64), CliError> {
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_ids: model.config().eos_token_ids.clone(),
        ..GenerateOptions::greedy(args.max_new_tokens)
    };
    let generator = Generator::new(model, opts)?;
    let start = Instant::now();
    let mut first = None;
    let refs: Vec<&[i32]> = prompts.iter().map(Vec::as_slice).collect();
    let ids = generator.generate_batch_with(&refs, &mut |n| {
        if n == 1 {
            first = Some(start.elapsed().as_secs_f64());
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    device_run::report_generated(&ids, prompts, secs);
    let prefill = first.unwrap_or(secs);
    Ok((ids, prefill, secs - prefill))
}

/// `1,2;3,4` → two prompts (each as [`parse_ids`]).
pub fn parse_prompts(text: &str) -> Result<Vec<Vec<i32>>, CliError> {
    text.split(';').map(parse_ids).collect()
}

/// `1,2,3` → `[1, 2, 3]`; spaces around ids are allowed, empty or non-numeric entries are a usage error.
pub fn parse_ids(text: &str) -> Result<Vec<i32>, CliError> {
    let ids = text
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<i32>().ok().filter(|id| *id >= 0).ok_or_else(|| {
                CliError::Usage(format!(
                    "--prompt-ids: `{s}` is not a token id (expected e.g. 1,2,3)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

pub fn format_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Load a checkpoint for the CPU references, with a progress bar on stderr.
pub fn load_model(dir: &Path) -> Result<DeepseekV3, CliError> {
    load_model_on(dir, Cpu)
}

/// Load a checkpoint to run on `backend`, with a progress bar on stderr (hidden when stderr is not a
/// terminal).
pub fn load_model_on<B: ModelBackend>(dir: &Path, backend: B) -> Result<DeepseekV3<B>, CliError> {
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {msg} [{bar:40}] {pos}/{len} layers")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(dir.display().to_string());
    let model = DeepseekV3::load_with_backend_progress(dir, backend, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let model = model?;
    eprintln!(
        "loaded {} in {:.3} s (backend {})",
        dir.display(),
        start.elapsed().as_secs_f64(),
        model.backend().name()
    );
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed tiny checkpoint and transformers' ids for it: (dir, prompt, greedy continuation).
    fn v3_base() -> (PathBuf, Vec<i32>, Vec<i32>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/data/v3_base");
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ints = |name: &str| -> Vec<i32> {
            let t = st.tensor(name).unwrap();
            t.data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        (dir, ints("prompt_ids"), ints("generated_ids"))
    }

    #[test]
    fn both_backends_generate_transformers_greedy_ids() {
        let (dir, prompt, generated) = v3_base();
        // The npu backend also prefilling in passes of 2 tokens.
        for (backend, chunk) in [
            (BackendChoice::Cpu, 0),
            (BackendChoice::Npu, 0),
            (BackendChoice::Npu, 2),
        ] {
            let args = GenerateArgs {
                model: dir.clone(),
                prompt_ids: format_ids(&prompt),
                max_new_tokens: generated.len(),
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                backend,
                dtype: DtypeChoice::F32,
                max_prefill_tokens: chunk,
                stats_json: None,
                ep: None,
            };
            assert_eq!(
                generate_ids(&args).unwrap(),
                vec![generated.clone()],
                "{backend:?} {chunk}"
            );
        }
    }

    #[test]
    fn a_batch_prints_what_each_prompt_prints_alone_with_its_seed() {
        let (dir, _, _) = v3_base();
        let prompts = ["5,9,14,2,7", "3,1,4", "77", "8,8,8,8,1,2,3,4,5"];
        let args = |prompt_ids: &str, seed: u64, temperature: f32, backend| GenerateArgs {
            model: dir.clone(),
            prompt_ids: prompt_ids.into(),
            max_new_tokens: 6,
            temperature,
            top_p: 0.9,
            seed,
            backend,
            dtype: DtypeChoice::F32,
            max_prefill_tokens: 0,
            stats_json: None,
            ep: None,
        };
        for temperature in [0.0, 0.8] {
            let mut lines = Vec::new();
            for backend in [BackendChoice::Cpu, BackendChoice::Npu] {
                let batch =
                    generate_ids(&args(&prompts.join(";"), 3, temperature, backend)).unwrap();
                assert_eq!(batch.len(), prompts.len());
                for (i, p) in prompts.iter().enumerate() {
                    let alone = generate_ids(&args(p, 3 + i as u64, temperature, backend)).unwrap();
                    assert_eq!(
                        alone,
                        vec![batch[i].clone()],
                        "{backend:?} T={temperature} prompt {i}"
                    );
                }
                lines.push(batch);
            }
            assert_eq!(lines[0], lines[1], "cpu and npu, T={temperature}");
        }
        // An empty prompt in the list is a usage error.
        let empty = generate_ids(&args("1,2;;3", 0, 0.0, BackendChoice::Npu));
        assert!(matches!(empty, Err(CliError::Usage(_))));
    }

    #[test]
    fn the_device_backend_runs_the_dense_operators_on_the_device() {
        let (dir, prompt, _) = v3_base();
        let model = load_model_on(&dir, device_backend().unwrap()).unwrap();
        model.forward(&prompt).unwrap();
        let report = model.backend().report();
        let linear = report
            .counts
            .iter()
            .find(|c| c.op == dsnpu_ops::backend::Op::Linear)
            .unwrap();
        assert!(linear.primary > 0 && linear.secondary == 0, "{report}");
        assert!(report.primary.ends_with(":0") && report.secondary == "cpu");
    }

    #[test]
    fn prompt_ids_parse_and_print_back() {
        assert_eq!(parse_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert_eq!(format_ids(&[7, 0, 12]), "7,0,12");
        assert_eq!(parse_prompts("1,2; 3").unwrap(), vec![vec![1, 2], vec![3]]);
        for bad in ["", "1,,2", "a", "-1", "1,2,"] {
            assert!(matches!(parse_ids(bad), Err(CliError::Usage(_))), "{bad:?}");
        }
    }
}
