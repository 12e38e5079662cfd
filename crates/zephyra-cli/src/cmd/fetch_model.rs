//! `zephyra fetch-model`: download SmolLM2-135M-Instruct into the cache and print its path.

use std::process::ExitCode;

use super::Global;
use crate::args::ModelSpec;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let path = ModelSpec::Smollm2.resolve(global)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
