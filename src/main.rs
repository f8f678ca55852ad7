//! The `dsnpu` command-line tool.

use clap::{Parser, Subcommand};
use dsnpu::commands;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dsnpu",
    version,
    about = "DeepSeek-V3/R1 inference on Ascend NPUs (or the dsnpu simulator)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the AscendCL library in use (real or simulator), its version, SoC and devices.
    Info(commands::info::InfoArgs),
    /// Generate tokens from a DeepSeek checkpoint; prints the new ids comma-separated, a line per prompt.
    Generate(commands::generate::GenerateArgs),
    /// Run a forward pass and write the logits of every prompt position to a safetensors file.
    Forward(commands::forward::ForwardArgs),
    /// Run the operator conformance suites on device 0 (or the CPU) and report per operator and dtype.
    Verify(commands::verify::VerifyArgs),
    /// Build and run your own Ascend C kernels on the simulator (sanitizer, counters, cycle model).
    Kernel(commands::kernel::KernelArgs),
    /// Run the kernels at DeepSeek-V3 shapes: measured on a device, modelled on the simulator.
    Bench(commands::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info(args) => commands::info::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Forward(args) => commands::forward::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Kernel(args) => commands::kernel::run(args),
        Command::Bench(args) => commands::bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            for (i, line) in error_lines(&err).iter().enumerate() {
                if i == 0 {
                    eprintln!("error: {line}");
                } else {
                    eprintln!("  caused by: {line}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// One line per cause: the error, then each cause in its `source()` chain whose text the lines before do
/// not already hold (most errors here print their cause inline, e.g. `config.json: No such file or
/// directory`, and also expose it as their source).
fn error_lines(err: &dyn std::error::Error) -> Vec<String> {
    let mut lines = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !lines.iter().any(|l| l.contains(&text)) {
            lines.push(text);
        }
        source = cause.source();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::error_lines;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Inline {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("loading failed")]
    struct Wrapping {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Inline {
            path: "config.json".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            error_lines(&e),
            vec!["config.json: No such file or directory (os error 2)"]
        );
    }

    #[test]
    fn a_cause_the_message_lacks_gets_its_own_line() {
        let e = Wrapping {
            source: std::io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            error_lines(&e),
            vec!["loading failed", "No such file or directory (os error 2)"]
        );
    }
}
