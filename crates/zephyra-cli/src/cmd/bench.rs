//! `zephyra bench forward|train|stream`: throughput figures for the README.

use std::process::ExitCode;

use clap::Subcommand;

use super::Global;

mod forward;
mod stream;
mod train;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Tokens/s of the language model's forward pass.
    Forward(forward::Args),
    /// Tokens/s of SAE training steps.
    Train(train::Args),
    /// Training straight from the model: harvest alone, SAE steps alone, and both overlapped.
    Stream(stream::Args),
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Forward(args) => forward::run(args, global),
        What::Train(args) => train::run(args, global),
        What::Stream(args) => stream::run(args, global),
    }
}

/// Prints one measurement on stdout: `line` as one JSON object with `--json`, else `text()` for people.
fn print_result(
    json: bool,
    line: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(line)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}
