//! `zephyra generate`: continue a prompt, streaming the new text to stdout as it is produced.
//!
//! Temperature 0 (the default) is greedy decoding; a positive temperature samples from the top-p
//! nucleus with a seeded generator, so the same seed gives the same text. Generation stops at the
//! model's end-of-sequence token or after `--max-tokens`. Only the continuation is printed (the
//! prompt is not echoed), followed by a newline.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use zephyra_lm::{GenerateConfig, Hooks, Sampling, StopReason};

use super::Global;
use crate::args::{values, ModelArgs, TextInput};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("prompt_input").required(true).multiple(false)))]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt to continue.
    #[arg(long, group = "prompt_input")]
    prompt: Option<String>,
    /// A UTF-8 file holding the prompt.
    #[arg(long, value_name = "PATH", group = "prompt_input")]
    file: Option<PathBuf>,
    /// Most tokens to generate (generation also stops when the model's context is full).
    #[arg(long, default_value_t = 64, value_parser = values::max_tokens())]
    max_tokens: usize,
    /// Softmax temperature, ≥ 0; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = values::non_negative::<f32>)]
    temperature: f32,
    /// Nucleus (top-p) mass kept when sampling, in (0, 1].
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true, value_parser = values::unit_open_closed::<f32>)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let input = TextInput {
        text: args.prompt.clone(),
        file: args.file.clone(),
    };
    let prompt = input
        .read()
        .context("reading the prompt (--prompt or --file)")?;

    let model = args.model.load(global)?;
    let tokenizer = &model.tokenizer;
    let ids = tokenizer.encode(&prompt).context("tokenizing the prompt")?;
    let cfg = GenerateConfig {
        max_new_tokens: args.max_tokens,
        sampling: Sampling::from_temperature(args.temperature, args.top_p),
        seed: args.seed,
        stop_tokens: tokenizer.stop_tokens(),
    };

    let mut stdout = std::io::stdout().lock();
    let mut stream = tokenizer.decode_stream();
    // The callback cannot return an error: keep the first one and report it afterwards.
    let mut write_error: Option<anyhow::Error> = None;
    let output = model.llama.generate(&ids, &cfg, &mut Hooks::new(), |id| {
        if write_error.is_some() {
            return;
        }
        let result = stream
            .step(id)
            .map_err(anyhow::Error::from)
            .and_then(|piece| match piece {
                Some(piece) => {
                    stdout.write_all(piece.as_bytes())?;
                    stdout.flush()?;
                    Ok(())
                }
                None => Ok(()),
            });
        if let Err(err) = result {
            write_error = Some(err);
        }
    });
    if let Some(err) = write_error {
        return Err(err.context("writing the generated text"));
    }
    let output = output.context("generating")?;
    writeln!(stdout)?;
    let reason = match output.stop {
        StopReason::Stop(id) => format!("stop token {}", tokenizer.token_str(id).unwrap_or("?")),
        StopReason::MaxTokens => "--max-tokens reached".to_string(),
        StopReason::ContextFull => "context length reached".to_string(),
    };
    tracing::info!(n_tokens = output.tokens.len(), %reason, "generation finished");
    Ok(ExitCode::SUCCESS)
}
