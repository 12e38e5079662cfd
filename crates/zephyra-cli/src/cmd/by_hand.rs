//! `zephyra by-hand`: the seed article's worksheet (an autoencoder, then a sparse autoencoder) with real
//! numbers, step by step. `--json` prints one object (schema in `zephyra_sae::by_hand::Worksheet::to_json`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of the text walkthrough.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let sheet = zephyra_sae::by_hand::worksheet().context("computing the worksheet")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string(&sheet.to_json())?;
        writeln!(out, "{text}")?;
    } else {
        out.write_all(sheet.render_text().as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
