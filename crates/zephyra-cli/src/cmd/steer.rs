//! `zephyra steer`: generate with a feature's decoder direction added (or the feature clamped) at the SAE's
//! hook, next to the unsteered continuation. Both are generated at once; the steered text is printed token by
//! token as it is generated, the unsteered one when it is complete (`--json`: one object at the end).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use clap::ValueEnum;
use zephyra_analysis::steer::{Side, SteerMode, SteerRequest};

use super::Global;
use crate::args::{values, SaeArgs};

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
    #[command(flatten)]
    pub stack: SaeArgs,
    /// The feature (latent index).
    #[arg(long)]
    pub feature: u32,
    /// Multiple of the decoder direction added (add) or target activation (clamp); any finite number.
    #[arg(long, allow_negative_numbers = true, value_parser = values::finite::<f32>)]
    pub strength: f32,
    /// Prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Add or clamp.
    #[arg(long, value_enum, default_value = "add")]
    pub mode: Mode,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32, value_parser = values::max_tokens())]
    pub max_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature, ≥ 0 (0 = greedy).
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true, value_parser = values::non_negative::<f32>)]
    pub temperature: f32,
    /// Print one JSON object `{"request", "steered", "unsteered"}` instead of text (nothing is streamed).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let engine = args.stack.engine(global)?;
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
