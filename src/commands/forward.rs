//! `dsnpu forward --model DIR --prompt-ids 1,2,3 --out FILE [--backend cpu|npu]`: writes a safetensors
//! file holding `logits`, f32 `[seq_len, vocab]`, the model's logits at every prompt position. Timing and
//! which operators ran on which backend go to stderr.

use super::device_run::{self, DtypeChoice};
use super::generate::{load_model, parse_ids, BackendChoice};
use crate::error::CliError;
use dsnpu_model::{DeepseekV3, ModelBackend};
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct ForwardArgs {
    /// Checkpoint directory: config.json and model.safetensors (or shards with their index).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Token ids, comma-separated (e.g. 1,2,3).
    #[arg(long, value_name = "IDS")]
    pub prompt_ids: String,
    /// Output safetensors file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Where the operators run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// Compute dtype of the activations.
    #[arg(long, value_enum, default_value_t = DtypeChoice::F32)]
    pub dtype: DtypeChoice,
    /// Run the prompt in passes of at most N tokens (--backend npu or --ep; 0: one pass).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_prefill_tokens: usize,
    /// Write load/prefill transfer and timing statistics as JSON to FILE (with `--ep`, rank k writes
    /// `FILE.rank<k>`).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Run on N devices, one worker process each (MoE expert-parallel over HCCL; rank 0 computes the
    /// prompt and writes `--out`). Always the device engine.
    #[arg(long, value_name = "N")]
    pub ep: Option<usize>,
}

pub fn run(args: &ForwardArgs) -> Result<(), CliError> {
    super::check_output("--out", &args.out)?;
    if let Some(path) = &args.stats_json {
        super::check_output("--stats-json", path)?;
    }
    if let Some(n) = args.ep {
        return super::ep::forward(args, n);
    }
    let ids = parse_ids(&args.prompt_ids)?;
    device_run::check_dtype(args.dtype, args.backend)?;
    device_run::check_max_prefill_tokens(args.max_prefill_tokens, args.backend)?;
    let logits = match args.backend {
        BackendChoice::Cpu => {
            let start = Instant::now();
            let model = load_model(&args.model)?;
            let load_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let logits = forward_with(&model, &ids)?;
            eprintln!("ops on cpu: all");
            if let Some(path) = &args.stats_json {
                let v = device_run::cpu_stats_json(
                    load_seconds,
                    4 * super::generate::model_elements(&model),
                    (ids.len() as u64, start.elapsed().as_secs_f64()),
                    (0, 0.0),
                );
                device_run::write_stats(path, &v)?;
            }
            logits
        }
        BackendChoice::Npu => device_run::forward(
            &args.model,
            &ids,
            (args.dtype, args.max_prefill_tokens),
            args.stats_json.as_deref(),
        )?,
    };
    write_logits(&args.out, &logits)
}

fn forward_with<B: ModelBackend>(
    model: &DeepseekV3<B>,
    ids: &[i32],
) -> Result<ndarray::Array2<f32>, CliError> {
    let start = Instant::now();
    let logits = model.forward(ids)?;
    eprintln!(
        "forward over {} tokens in {:.3} s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(logits)
}

/// Write `logits` `[T, V]` as the f32 safetensors tensor `logits`.
pub fn write_logits(path: &Path, logits: &ndarray::Array2<f32>) -> Result<(), CliError> {
    let io_err = |e: safetensors::SafeTensorError| CliError::Io {
        path: path.display().to_string(),
        source: match e {
            safetensors::SafeTensorError::IoError(io) => io,
            // Only an I/O failure is possible for a tensor built here; say so rather than print a Debug form.
            _ => std::io::Error::other("the logits could not be serialized as safetensors"),
        },
    };
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, logits.shape().to_vec(), &bytes).map_err(io_err)?;
    safetensors::serialize_to_file([("logits", view)], &None, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_logits(path: &Path) -> Vec<f32> {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("logits").unwrap();
        assert_eq!(t.dtype(), Dtype::F32);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn the_npu_backend_writes_the_cpu_backends_logits_within_device_rounding() {
        let dir =
            std::env::temp_dir().join(format!("dsnpu-forward-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/data/v3_base");
        let mut logits = Vec::new();
        // The npu backend also in passes of 3 tokens (3 + 3 + 2).
        for (name, backend, chunk) in [
            ("cpu", BackendChoice::Cpu, 0),
            ("npu", BackendChoice::Npu, 0),
            ("npu-chunked", BackendChoice::Npu, 3),
        ] {
            let out = dir.join(format!("{name}.safetensors"));
            let args = ForwardArgs {
                model: model.clone(),
                prompt_ids: "3,1,4,1,5,9,2,6".into(),
                out: out.clone(),
                backend,
                dtype: DtypeChoice::F32,
                max_prefill_tokens: chunk,
                stats_json: None,
                ep: None,
            };
            run(&args).unwrap();
            logits.push(read_logits(&out));
        }
        let _ = std::fs::remove_dir_all(&dir);
        let cpu = &logits[0];
        assert_eq!(
            cpu.len(),
            8 * 128,
            "8 positions of the 128-token vocabulary"
        );
        // Device kernels round differently from the references (see model/tests/npu_backend.rs):
        // 1e-5 of the logits' scale.
        let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for npu in &logits[1..] {
            let worst = cpu
                .iter()
                .zip(npu)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "max |npu - cpu| {worst}, scale {scale}"
            );
        }
        assert!(scale > 1.0);
        // Chunked prefill on the CPU backend is refused.
        let args = ForwardArgs {
            model,
            prompt_ids: "1,2".into(),
            // In a folder that exists (`dir` is gone): an output that cannot be created is refused first.
            out: std::env::temp_dir().join("dsnpu-never-written.safetensors"),
            backend: BackendChoice::Cpu,
            dtype: DtypeChoice::F32,
            max_prefill_tokens: 1,
            stats_json: None,
            ep: None,
        };
        assert!(
            matches!(run(&args), Err(CliError::Usage(m)) if m.contains("--max-prefill-tokens"))
        );
    }
}
