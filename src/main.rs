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
    /// Generate tokens from a DeepSeek checkpoint; prints the new ids comma-separated.
    Generate(commands::generate::GenerateArgs),
    /// Run a forward pass and write the logits of every prompt position to a safetensors file.
    Forward(commands::forward::ForwardArgs),
    /// Run the operator conformance suites on device 0 (or the CPU) and report per operator and dtype.
    Verify(commands::verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info(args) => commands::info::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Forward(args) => commands::forward::run(args),
        Command::Verify(args) => commands::verify::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
