//! `dsnpu generate --model DIR --prompt-ids 1,2,3 --max-new-tokens N [--temperature T --top-p P --seed S]`:
//! prints the generated token ids, comma-separated, on one line of stdout. Generation stops early at the
//! config's `eos_token_id` (which is printed). Timing and the loading progress bar go to stderr.

use crate::error::CliError;
use dsnpu_model::{DeepseekV3, GenerateOptions, Generator};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Checkpoint directory: config.json and model.safetensors (or shards with their index).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt token ids, comma-separated (e.g. 1,2,3).
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
}

pub fn run(args: &GenerateArgs) -> Result<(), CliError> {
    let ids = generate_ids(args)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", format_ids(&ids)).map_err(|source| CliError::Io {
        path: "<stdout>".into(),
        source,
    })
}

/// The tokens `run` prints.
pub fn generate_ids(args: &GenerateArgs) -> Result<Vec<i32>, CliError> {
    let prompt = parse_ids(&args.prompt_ids)?;
    let model = load_model(&args.model)?;
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_ids: model.config().eos_token_ids.clone(),
        ..GenerateOptions::greedy(args.max_new_tokens)
    };
    let generator = Generator::new(&model, opts)?;
    let start = Instant::now();
    let ids = generator.generate(&prompt)?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "generated {} tokens from a {}-token prompt in {secs:.3} s ({:.1} tokens/s)",
        ids.len(),
        prompt.len(),
        ids.len() as f64 / secs.max(1e-9)
    );
    Ok(ids)
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

/// Load a checkpoint with a progress bar on stderr (hidden when stderr is not a terminal).
pub fn load_model(dir: &Path) -> Result<DeepseekV3, CliError> {
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {msg} [{bar:40}] {pos}/{len} layers")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(dir.display().to_string());
    let model = DeepseekV3::load_with_progress(dir, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let model = model?;
    eprintln!(
        "loaded {} in {:.3} s",
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_parse_and_print_back() {
        assert_eq!(parse_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert_eq!(format_ids(&[7, 0, 12]), "7,0,12");
        for bad in ["", "1,,2", "a", "-1", "1,2,"] {
            assert!(matches!(parse_ids(bad), Err(CliError::Usage(_))), "{bad:?}");
        }
    }
}
