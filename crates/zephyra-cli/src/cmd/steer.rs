//! `zephyra steer`: generate with a feature's decoder direction added (or the feature clamped) at the SAE's
//! hook, next to the unsteered continuation. Both are generated at once; the steered text is printed token by
//! token as it is generated, the unsteered one when it is complete (`--json`: one object at the end).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::ValueEnum;
use zephyra_analysis::steer::{Engine, Side, SteerMode, SteerRequest};
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

/// `--sae`, `--model`, `--hook`: the SAE and the model it runs on (shared by `steer`, `explain`, `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// SAE directory, e.g. runs/l15-topk32 (`serve` also shows its eval.json, metrics.jsonl and plots/ on /run).
    #[arg(long, value_name = "DIR")]
    pub sae: PathBuf,
    /// Model: `smollm2` or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Hook point [default: the SAE's metadata.hook_name].
    #[arg(long)]
    pub hook: Option<HookPoint>,
}

impl StackArgs {
    /// Loads the model, tokenizer and SAE into a steering / explain engine.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        engine(&self.sae, &self.model, self.hook)
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub stack: StackArgs,
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
    /// Print one JSON object `{"request", "steered", "unsteered"}` instead of text (nothing is streamed).
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
    let engine = args.stack.engine()?;
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
    if args.json {
        let out = engine.steer(&req).context("steering")?;
        println!(
            "{}",
            serde_json::json!({"request": req, "steered": out.steered, "unsteered": out.unsteered})
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Both sides are generated at once; the steered one is printed as it grows, the unsteered one after.
    engine.check(&req).context("steering")?;
    let stdout = Mutex::new(std::io::stdout());
    let failed = AtomicBool::new(false);
    {
        let mut out = lock(&stdout);
        write!(
            out,
            "steered   ({:?} feature {} × {}): {}",
            req.mode, req.feature, req.strength, args.prompt
        )?;
        out.flush()?;
    }
    let result = engine.steer_streaming(&req, &failed, |side, piece| {
        if side == Side::Steered {
            let mut out = lock(&stdout);
            // A closed stdout (`| head`) stops generation; the error is reported below.
            if write!(out, "{piece}").and_then(|()| out.flush()).is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        }
    });
    let mut stdout = lock(&stdout);
    let out = match result {
        Ok(Some(out)) => out,
        Ok(None) => return Ok(ExitCode::SUCCESS), // stdout was closed: nothing more to print
        Err(e) => {
            let _ = writeln!(stdout);
            return Err(anyhow::Error::new(e).context("steering"));
        }
    };
    writeln!(stdout)?;
    writeln!(stdout, "unsteered: {}{}", args.prompt, out.unsteered)?;
    Ok(ExitCode::SUCCESS)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
