//! `zephyra fetch-model`: download a known model (SmolLM2-135M-Instruct by default, or Gemma 3 270M)
//! into the cache and print its path.

use std::process::ExitCode;

use super::Global;
use crate::args::ModelSpec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to fetch: `smollm2` or `gemma3-270m` (a path is only checked).
    #[arg(long, default_value = "smollm2", value_name = "MODEL")]
    model: ModelSpec,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let path = args.model.resolve(global)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
