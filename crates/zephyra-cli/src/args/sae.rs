//! `--sae`, `--model`, `--hook`: a trained SAE and the model it reads, loaded and checked together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use zephyra_analysis::steer::Engine;
use zephyra_lm::{HookPoint, Llama, Tokenizer};
use zephyra_sae::Sae;

use super::model::{load_tokenizer, ModelSpec};
use super::Global;

/// The SAE and the model it runs on (eval, features, steer, explain, serve).
#[derive(Debug, Clone, clap::Args)]
pub struct SaeArgs {
    /// SAE directory (SAELens layout: cfg.json + sae_weights.safetensors), e.g. runs/l15-topk32.
    #[arg(long, value_name = "DIR")]
    pub sae: PathBuf,
    /// `smollm2` or `gemma3-270m` (downloaded into the cache on first use) or the path of a llama.cpp
    /// .gguf file [default: the model the SAE records (`metadata.model_name`) when it is one of these,
    /// else smollm2].
    #[arg(long, value_name = "MODEL")]
    pub model: Option<ModelSpec>,
    /// Hook point [default: the SAE's `metadata.hook_name`].
    #[arg(long, value_name = "HOOK")]
    pub hook: Option<HookPoint>,
}

/// The model, tokenizer, SAE and hook a command runs on.
pub struct Stack {
    /// The model.
    pub llama: Llama,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The SAE.
    pub sae: Sae,
    /// `--hook`, else the SAE's `metadata.hook_name`, checked against the model.
    pub hook: HookPoint,
    /// The GGUF file.
    pub model_path: PathBuf,
}

impl SaeArgs {
    /// Loads the SAE alone.
    pub fn load_sae(&self) -> anyhow::Result<Sae> {
        zephyra_sae::saelens::load(&self.sae)
            .with_context(|| format!("loading the SAE from {}", self.sae.display()))
    }

    /// `--model`, else the known model `sae` records, else SmolLM2: an SAE trained on Gemma needs no
    /// `--model`.
    pub fn model_for(&self, sae: &Sae) -> ModelSpec {
        self.model.clone().unwrap_or_else(|| {
            sae.cfg
                .metadata
                .model_name
                .as_deref()
                .and_then(zephyra_lm::fetch::known_model_recorded)
                .map_or_else(ModelSpec::smollm2, ModelSpec::Known)
        })
    }

    /// `--hook`, else the hook `sae` records.
    pub fn hook_of(&self, sae: &Sae) -> anyhow::Result<HookPoint> {
        hook_of(&self.sae, sae, self.hook)
    }

    /// Loads the model and the SAE, works out the hook and checks that they fit together.
    pub fn load(&self, global: &Global) -> anyhow::Result<Stack> {
        let sae = self.load_sae()?;
        let hook = self.hook_of(&sae)?;
        let model_path = self.model_for(&sae).resolve(global)?;
        let llama = Llama::load_gguf(&model_path)
            .with_context(|| format!("loading {}", model_path.display()))?;
        let tokenizer = load_tokenizer(&model_path)?;
        let hook = hook
            .validate(llama.config().n_layers)
            .context("checking the hook against the model")?;
        if sae.cfg.d_in != llama.config().d_model {
            bail!(
                "the SAE reads vectors of width {} but the model's residual stream has width {}: use the model the SAE was trained on",
                sae.cfg.d_in,
                llama.config().d_model
            );
        }
        Ok(Stack {
            llama,
            tokenizer: Arc::new(tokenizer),
            sae,
            hook,
            model_path,
        })
    }

    /// Loads the model, tokenizer and SAE into a steering / explain engine.
    pub fn engine(&self, global: &Global) -> anyhow::Result<Engine> {
        let s = self.load(global)?;
        Engine::new(Arc::new(s.llama), s.tokenizer, Arc::new(s.sae), s.hook)
            .context("preparing the model and SAE")
    }
}

/// `hook`, else the SAE's `metadata.hook_name`.
fn hook_of(dir: &Path, sae: &Sae, hook: Option<HookPoint>) -> anyhow::Result<HookPoint> {
    if let Some(h) = hook {
        return Ok(h);
    }
    let cfg = dir.join("cfg.json");
    match &sae.cfg.metadata.hook_name {
        Some(name) => name
            .parse::<HookPoint>()
            .with_context(|| format!("{}: metadata.hook_name `{name}`; pass --hook", cfg.display())),
        None => bail!(
            "{} names no hook (metadata.hook_name): pass --hook, e.g. --hook blocks.15.hook_resid_pre",
            cfg.display()
        ),
    }
}
