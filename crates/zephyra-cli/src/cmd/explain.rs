//! `zephyra explain`: which features fire on each token of a text.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use zephyra_data::ExclusionRule;

use super::Global;
use crate::args::SaeArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub stack: SaeArgs,
    /// The text (`-` or absent: read standard input).
    #[arg(long)]
    pub text: Option<String>,
    /// Features shown per token.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print JSON Lines, one object per token: `{"id", "token", "excluded", "features": [{"id", "act"}]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let text = match args.text.as_deref() {
        Some(t) if t != "-" => t.to_string(),
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the text from standard input")?;
            s
        }
    };
    let engine = args.stack.engine(global)?;
    let tokens = engine
        .explain(&text, args.top_k, &ExclusionRule::default())
        .context("explaining the text")?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for t in &tokens {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(t)?)?;
        } else {
            let feats: Vec<String> = t
                .features
                .iter()
                .map(|f| format!("{}:{:.2}", f.id, f.act))
                .collect();
            let note = if t.excluded {
                "(excluded)".to_string()
            } else {
                feats.join(" ")
            };
            writeln!(out, "{:>16}  {note}", format!("{:?}", t.token))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
