//! `zephyra steer`: generate with a feature's decoder direction added (or the feature clamped) at the SAE's
//! hook, next to the unsteered continuation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;
use zephyra_analysis::steer::{Engine, SteerMode, SteerRequest};
use zephyra_lm::HookPoint;

use super::Global;

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Add strength × the decoder direction at every position.
    Add,
    /// Set the feature's activation to strength.
    Clamp,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// SAE directory.
    #[arg(long, value_name = "DIR")]
    pub sae: PathBuf,
    /// Model: `smollm2` or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Hook point [default: the SAE's metadata.hook_name].
    #[arg(long)]
    pub hook: Option<HookPoint>,
    /// The feature (latent index).
    #[arg(long)]
    pub feature: u32,
    /// Multiple of the decoder direction added (add) or target activation (clamp).
    #[arg(long, allow_negative_numbers = true)]
    pub strength: f32,
    /// Prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Add or clamp.
    #[arg(long, value_enum, default_value = "add")]
    pub mode: Mode,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Print one JSON object `{"request", "steered", "unsteered"}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The engine of `--sae`/`--model`/`--hook`.
pub fn engine(
    sae: &std::path::Path,
    model: &str,
    hook: Option<HookPoint>,
) -> anyhow::Result<Engine> {
    let s = super::features::load_stack(sae, model, hook)?;
    Engine::new(Arc::new(s.llama), s.tokenizer, Arc::new(s.sae), s.hook)
        .context("preparing the model and SAE")
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let engine = engine(&args.sae, &args.model, args.hook)?;
    let req = SteerRequest {
        prompt: args.prompt.clone(),
        feature: args.feature,
        strength: args.strength,
        mode: match args.mode {
            Mode::Add => SteerMode::Add,
            Mode::Clamp => SteerMode::Clamp,
        },
        max_tokens: args.max_tokens,
        seed: args.seed,
        temperature: args.temperature,
    };
    let out = engine.steer(&req).context("steering")?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"request": req, "steered": out.steered, "unsteered": out.unsteered})
        );
    } else {
        println!(
            "steered   ({:?} feature {} × {}): {}{}",
            req.mode, req.feature, req.strength, args.prompt, out.steered
        );
        println!("unsteered: {}{}", args.prompt, out.unsteered);
    }
    Ok(ExitCode::SUCCESS)
}
