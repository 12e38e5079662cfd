//! `zephyra convert`: SAEs between the SAELens layout every command reads and other formats.
//!
//! - `--from gemma-scope PATH/params.safetensors [--config PATH/config.json] [--hook HOOK] [--model-name NAME]
//!   --out DIR`: a Gemma Scope / Gemma Scope 2 JumpReLU SAE into a SAELens folder.
//! - `--to gemma-scope DIR --out DIR`: a SAELens folder into `params.safetensors` + `config.json`.
//!
//! Output (stdout, one JSON object): `{"out": DIR, "architecture": "jumprelu", "d_in": N, "d_sae": N,
//! "hook": "blocks.6.hook_resid_post" | null}`. The format code is in `zephyra_sae::gemma_scope`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use zephyra_lm::HookPoint;
use zephyra_sae::{gemma_scope, saelens, Sae};

use super::Global;

/// A foreign SAE format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Google's Gemma Scope / Gemma Scope 2: `params.safetensors` (`w_enc`, `w_dec`, `b_enc`, `b_dec`,
    /// `threshold`) and `config.json`.
    GemmaScope,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read this format (INPUT: its weights file, e.g. layer_6_width_16k_l0_medium/params.safetensors).
    #[arg(
        long,
        value_enum,
        required_unless_present = "to",
        conflicts_with = "to"
    )]
    from: Option<Format>,
    /// Write this format (INPUT: a SAELens SAE folder, e.g. runs/g6).
    #[arg(long, value_enum)]
    to: Option<Format>,
    /// The SAE to convert.
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Gemma Scope 2 `config.json` [default: the one beside INPUT, if any].
    #[arg(long, value_name = "PATH", requires = "from")]
    config: Option<PathBuf>,
    /// Hook the SAE reads [default: from config.json's `hf_hook_point_in`].
    #[arg(long, value_name = "HOOK", requires = "from")]
    hook: Option<HookPoint>,
    /// Model name recorded in the SAE, e.g. gemma3-270m [default: config.json's `model_name`].
    #[arg(long, value_name = "NAME", requires = "from")]
    model_name: Option<String>,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    out: &'a std::path::Path,
    architecture: &'static str,
    d_in: usize,
    d_sae: usize,
    hook: Option<&'a str>,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let sae: Sae = match (args.from, args.to) {
        (Some(Format::GemmaScope), _) => {
            let opts = gemma_scope::ReadOptions {
                config: args.config.clone(),
                hook_name: args.hook.map(|h| h.to_string()),
                model_name: args.model_name.clone(),
            };
            let sae = gemma_scope::read(&args.input, &opts)
                .with_context(|| format!("reading the Gemma Scope SAE {}", args.input.display()))?;
            if let Some(hook) = sae.cfg.metadata.hook_name.as_deref() {
                hook.parse::<HookPoint>()
                    .with_context(|| format!("the SAE's hook `{hook}`; pass --hook"))?;
            }
            saelens::save(&sae, &args.out)
                .with_context(|| format!("writing the SAE to {}", args.out.display()))?;
            sae
        }
        (None, Some(Format::GemmaScope)) => {
            let sae = saelens::load(&args.input)
                .with_context(|| format!("loading the SAE from {}", args.input.display()))?;
            gemma_scope::write(&sae, &args.out)
                .with_context(|| format!("writing {} as Gemma Scope", args.input.display()))?;
            sae
        }
        (None, None) => anyhow::bail!("pass --from FORMAT or --to FORMAT"),
    };
    let summary = Summary {
        out: &args.out,
        architecture: sae.cfg.architecture.name(),
        d_in: sae.cfg.d_in,
        d_sae: sae.cfg.d_sae,
        hook: sae.cfg.metadata.hook_name.as_deref(),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}
