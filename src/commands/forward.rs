//! `dsnpu forward --model DIR --prompt-ids 1,2,3 --out FILE`: writes a safetensors file holding `logits`,
//! f32 `[seq_len, vocab]`, the model's logits at every prompt position. Timing goes to stderr.

use super::generate::{load_model, parse_ids};
use crate::error::CliError;
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
}

pub fn run(args: &ForwardArgs) -> Result<(), CliError> {
    let ids = parse_ids(&args.prompt_ids)?;
    let model = load_model(&args.model)?;
    let start = Instant::now();
    let logits = model.forward(&ids)?;
    eprintln!(
        "forward over {} tokens in {:.3} s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    write_logits(&args.out, &logits)
}

/// Write `logits` `[T, V]` as the f32 safetensors tensor `logits`.
pub fn write_logits(path: &Path, logits: &ndarray::Array2<f32>) -> Result<(), CliError> {
    let io_err = |e: safetensors::SafeTensorError| CliError::Io {
        path: path.display().to_string(),
        source: match e {
            safetensors::SafeTensorError::IoError(io) => io,
            other => std::io::Error::other(format!("{other:?}")),
        },
    };
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, logits.shape().to_vec(), &bytes).map_err(io_err)?;
    safetensors::serialize_to_file([("logits", view)], &None, path).map_err(io_err)
}
