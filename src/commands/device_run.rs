//! `generate` and `forward` on `--backend npu`: thin layers over the device-resident
//! [`Engine`] (weights uploaded once, the cache in device memory, every
//! operator of a step on the device, one host wait per step), plus the `--stats-json` report both
//! backends write and the `--dtype` choice.

use super::generate::BackendChoice;
use crate::error::CliError;
use dsnpu_model::device::{DType, Engine, EngineOptions, EngineStats, PhaseStats};
use dsnpu_model::ModelConfig;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// The compute dtype of `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DtypeChoice {
    /// f32 activations (the transformers-pinned numerics).
    #[default]
    F32,
    /// bf16 activations with f32 accumulation, f32 norm/softmax statistics and f32 gating (--backend
    /// npu only; not with --ep).
    Bf16,
}

impl DtypeChoice {
    /// The engine's compute dtype.
    pub fn engine_dtype(self) -> DType {
        match self {
            DtypeChoice::F32 => DType::F32,
            DtypeChoice::Bf16 => DType::BF16,
        }
    }
}

/// Refuses what is not built: bf16 compute on the CPU backend (the CPU references compute in f32).
pub fn check_dtype(d: DtypeChoice, backend: BackendChoice) -> Result<(), CliError> {
    match (d, backend) {
        (DtypeChoice::Bf16, BackendChoice::Cpu) => Err(CliError::Usage(
            "--dtype bf16: the CPU backend computes in f32 only (the references); bf16 compute runs on --backend npu"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Refuses what is not built: chunked prefill on the CPU backend (its prefill is one pass).
pub fn check_max_prefill_tokens(n: usize, backend: BackendChoice) -> Result<(), CliError> {
    match (n, backend) {
        (1.., BackendChoice::Cpu) => Err(CliError::Usage(
            "--max-prefill-tokens: the CPU backend prefills a prompt in one pass; chunked prefill runs on --backend npu"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Tokens per cache block the commands use.
const BLOCK_SIZE: usize = 16;

fn load(
    dir: &Path,
    tokens: usize,
    (temperature, top_p, seed): (f32, f32, u64),
    dtype: DtypeChoice,
    max_prefill_tokens: usize,
) -> Result<Engine, CliError> {
    let start = Instant::now();
    let opts = EngineOptions {
        num_blocks: tokens.div_ceil(BLOCK_SIZE).max(1),
        block_size: BLOCK_SIZE,
        temperature,
        top_p,
        seed,
        dtype: dtype.engine_dtype(),
        max_prefill_tokens,
        ..EngineOptions::default()
    };
    let bar = indicatif::ProgressBar::new(0);
    let engine = Engine::load(dir, opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let engine = engine?;
    eprintln!(
        "loaded {} onto the device in {:.3} s ({} bytes of weights)",
        dir.display(),
        start.elapsed().as_secs_f64(),
        engine.stats().weight_bytes
    );
    Ok(engine)
}

/// Greedy or sampled generation of a batch of prompts on the engine ([`Engine::generate`]: prompt `i`
/// samples with seed `seed + i`; prefilled in passes of at most `max_prefill_tokens`, 0: one); a
/// sequence stops after a stop id (included).
pub fn generate(
    dir: &Path,
    prompts: &[Vec<i32>],
    max_new_tokens: usize,
    sampling: (f32, f32, u64),
    (dtype, max_prefill_tokens): (DtypeChoice, usize),
    stats_json: Option<&Path>,
) -> Result<Vec<Vec<i32>>, CliError> {
    // No shortcut for `--max-new-tokens 0`: the checkpoint, the sampling options and the prompts are
    // checked as for any other count (the engine answers it with no ids once it has loaded).
    // The length checks come before the load: the cache is sized from them, and a length past usize
    // (`--max-new-tokens 18446744073709551615`) must be refused, not overflow.
    let max = ModelConfig::from_file(dir.join("config.json"))?.max_position_embeddings;
    let mut blocks = 0usize;
    for (i, p) in prompts.iter().enumerate() {
        let positions = dsnpu_model::positions_needed(i, p.len(), max_new_tokens, max)?;
        blocks += (positions + 1).div_ceil(BLOCK_SIZE);
    }
    let mut engine = load(
        dir,
        blocks * BLOCK_SIZE,
        sampling,
        dtype,
        max_prefill_tokens,
    )?;
    let stop = engine.config().eos_token_ids.clone();
    let start = Instant::now();
    let ids = engine.generate(prompts, max_new_tokens, &stop)?;
    report_generated(&ids, prompts, start.elapsed().as_secs_f64());
    report(&engine);
    if let Some(path) = stats_json {
        write_stats(path, &engine_stats_json(&engine))?;
    }
    Ok(ids)
}

/// `generated N tokens from a P-token prompt in S s (R tokens/s)` on stderr (`from K prompts of P
/// tokens` for a batch).
pub fn report_generated(ids: &[Vec<i32>], prompts: &[Vec<i32>], secs: f64) {
    let n: usize = ids.iter().map(Vec::len).sum();
    let p: usize = prompts.iter().map(Vec::len).sum();
    let from = match prompts.len() {
        1 => format!("a {p}-token prompt"),
        k => format!("{k} prompts of {p} tokens"),
    };
    eprintln!(
        "generated {n} tokens from {from} in {secs:.3} s ({:.1} tokens/s)",
        n as f64 / secs.max(1e-9)
    );
}

/// Logits `[len, V]` of every prompt position on the engine (in passes of at most
/// `max_prefill_tokens`, 0: one).
pub fn forward(
    dir: &Path,
    ids: &[i32],
    (dtype, max_prefill_tokens): (DtypeChoice, usize),
    stats_json: Option<&Path>,
) -> Result<ndarray::Array2<f32>, CliError> {
    let mut engine = load(dir, ids.len(), (0.0, 1.0, 0), dtype, max_prefill_tokens)?;
    let start = Instant::now();
    let logits = engine.prompt_logits(ids)?;
    eprintln!(
        "forward over {} tokens in {:.3} s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    report(&engine);
    if let Some(path) = stats_json {
        write_stats(path, &engine_stats_json(&engine))?;
    }
    let v = engine.config().vocab_size;
    Ok(ndarray::Array2::from_shape_vec((ids.len(), v), logits)
        .expect("the engine returns len x V logits"))
}

fn device_name() -> String {
    let sim = dsnpu_runtime::sim_counters::is_simulator().unwrap_or(false);
    format!("{}:0", if sim { "sim" } else { "npu" })
}

/// `ops on sim:0: linear 24, ...` on stderr: every operator ran on the device.
fn report(engine: &Engine) {
    let ops = engine.stats().ops;
    let list: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
    eprintln!("ops on {}: {}", device_name(), list.join(", "));
}

fn phase(p: &PhaseStats, count_name: &str) -> Value {
    json!({
        count_name: p.count,
        "h2d_bytes": p.transfers.h2d_bytes,
        "d2h_bytes": p.transfers.d2h_bytes,
        "syncs": p.transfers.syncs,
        "seconds": p.seconds,
        "tiling_h2d_bytes": p.transfers.tiling_bytes,
        "staging_waits": p.transfers.staging_waits,
    })
}

pub(crate) fn engine_stats_json(engine: &Engine) -> Value {
    let s: EngineStats = engine.stats();
    let ops: serde_json::Map<String, Value> = s
        .ops
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "backend": device_name(),
        "load": {
            "h2d_bytes": s.load.h2d_bytes,
            "weight_bytes": s.weight_bytes,
            "seconds": s.load_seconds,
            "host_peak_rss_bytes": host_peak_rss(),
        },
        "device": {"peak_bytes": engine.device_peak_bytes(), "cache_bytes": s.cache_bytes},
        "prefill": phase(&s.prefill, "tokens"),
        "decode": phase(&s.decode, "steps"),
        "ops": {device_name(): ops},
    })
}

/// The CPU backend's report: nothing crosses to a device; op counts are not recorded on the CPU path.
pub fn cpu_stats_json(
    load_seconds: f64,
    weight_bytes: u64,
    prefill: (u64, f64),
    decode: (u64, f64),
) -> Value {
    json!({
        "backend": "cpu",
        "load": {"h2d_bytes": 0, "weight_bytes": weight_bytes, "seconds": load_seconds, "host_peak_rss_bytes": host_peak_rss()},
        "device": {"peak_bytes": 0},
        "prefill": {"tokens": prefill.0, "h2d_bytes": 0, "d2h_bytes": 0, "syncs": 0, "seconds": prefill.1},
        "decode": {"steps": decode.0, "h2d_bytes": 0, "d2h_bytes": 0, "syncs": 0, "seconds": decode.1},
        "ops": {},
    })
}

/// The process's peak resident set (`VmHWM`), bytes; 0 where /proc is not available.
pub fn host_peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn write_stats(path: &Path, v: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).expect("a JSON value serializes");
    std::fs::write(path, text + "\n").map_err(|source| CliError::Io {
        path: path.display().to_string(),
        source,
    })
}
