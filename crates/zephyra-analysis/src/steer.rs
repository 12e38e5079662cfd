//! Steering: generate with a latent's decoder direction pushed into the residual stream at the SAE's hook.
//!
//! - [`SteerMode::Add`] adds `strength × d_i` (the decoder row of latent `i`) at every position, prompt
//!   included (Templeton et al. 2024, "Scaling Monosemanticity", feature steering);
//! - [`SteerMode::Clamp`] encodes each position, and adds `(strength − f_i(x)) × d_i`, which sets the
//!   latent's contribution to the reconstruction to `strength` while leaving the SAE's error term untouched.
//!
//! Both run through the model runtime's hooks, so they apply at every generation step. The unsteered
//! continuation is generated with the same prompt, sampling settings and seed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zephyra_lm::{GenerateConfig, HookPoint, Hooks, Llama, Sampling, Tensor, Tokenizer};
use zephyra_sae::Sae;

use crate::error::{AnalysisError, Result};

/// How the latent is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SteerMode {
    /// Add `strength × decoder direction`.
    #[default]
    Add,
    /// Set the latent's activation to `strength`.
    Clamp,
}

/// One steering request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteerRequest {
    /// The prompt text.
    pub prompt: String,
    /// The latent.
    pub feature: u32,
    /// Added multiple (add) or target activation (clamp).
    pub strength: f32,
    /// Add or clamp.
    pub mode: SteerMode,
    /// Tokens to generate.
    pub max_tokens: usize,
    /// Sampling seed.
    pub seed: u64,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
}

/// Largest `max_tokens` accepted.
pub const MAX_STEER_TOKENS: usize = 256;

/// Steered and unsteered continuations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteerOutput {
    /// The continuation with the latent applied.
    pub steered: String,
    /// The continuation without it.
    pub unsteered: String,
    /// Token ids of `steered`.
    pub steered_ids: Vec<u32>,
    /// Token ids of `unsteered`.
    pub unsteered_ids: Vec<u32>,
}

/// The model, tokenizer and SAE a steering or explain request runs on.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The model.
    pub llama: Arc<Llama>,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The SAE.
    pub sae: Arc<Sae>,
    /// The hook the SAE reads and writes.
    pub hook: HookPoint,
}

fn model_err(e: impl std::fmt::Display) -> AnalysisError {
    AnalysisError::Model(e.to_string())
}

impl Engine {
    /// Checks that the SAE fits the hook and returns the engine.
    pub fn new(
        llama: Arc<Llama>,
        tokenizer: Arc<Tokenizer>,
        sae: Arc<Sae>,
        hook: HookPoint,
    ) -> Result<Self> {
        let cfg = llama.config();
        hook.validate(cfg.n_layers).map_err(model_err)?;
        if sae.cfg.d_in != cfg.d_model {
            return Err(AnalysisError::WidthMismatch {
                hook: hook.to_string(),
                hook_width: cfg.d_model,
                sae_d_in: sae.cfg.d_in,
            });
        }
        Ok(Self {
            llama,
            tokenizer,
            sae,
            hook,
        })
    }

    /// Token ids of `text`, checked to be non-empty and to fit the context with `extra` more tokens.
    pub fn encode_checked(&self, text: &str, extra: usize) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(text).map_err(model_err)?;
        let n_ctx = self.llama.config().context_length;
        if ids.is_empty() {
            return Err(AnalysisError::InvalidArgument(
                "the text is empty: give at least one token".into(),
            ));
        }
        if ids.len() + extra > n_ctx {
            return Err(AnalysisError::InvalidArgument(format!(
                "the text has {} tokens; with {extra} more it exceeds the model's context length of {n_ctx}: shorten it",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// The decoder row of `feature`, or an error naming the valid range.
    pub fn direction(&self, feature: u32) -> Result<&[f32]> {
        let (d_in, d_sae) = (self.sae.cfg.d_in, self.sae.cfg.d_sae);
        let i = feature as usize;
        if i >= d_sae {
            return Err(AnalysisError::InvalidArgument(format!(
                "feature {feature} does not exist: the SAE has {d_sae} latents (0..={})",
                d_sae - 1
            )));
        }
        Ok(&self.sae.w_dec[i * d_in..(i + 1) * d_in])
    }

    /// Generates the steered and the unsteered continuation of `req.prompt`.
    pub fn steer(&self, req: &SteerRequest) -> Result<SteerOutput> {
        if req.max_tokens == 0 || req.max_tokens > MAX_STEER_TOKENS {
            return Err(AnalysisError::InvalidArgument(format!(
                "max_tokens {} must be in 1..={MAX_STEER_TOKENS}",
                req.max_tokens
            )));
        }
        if !req.strength.is_finite() || !req.temperature.is_finite() || req.temperature < 0.0 {
            return Err(AnalysisError::InvalidArgument(format!(
                "strength ({}) must be finite and temperature ({}) finite and >= 0",
                req.strength, req.temperature
            )));
        }
        let direction = self.direction(req.feature)?.to_vec();
        let prompt = self.encode_checked(&req.prompt, 1)?;
        let cfg = GenerateConfig {
            max_new_tokens: req.max_tokens,
            sampling: Sampling::from_temperature(req.temperature, 0.9),
            seed: req.seed,
            stop_tokens: self.tokenizer.eos_token_id().into_iter().collect(),
        };
        let unsteered = self
            .llama
            .generate(&prompt, &cfg, &mut Hooks::new(), |_| {})
            .map_err(model_err)?;
        let mut hooks = Hooks::new();
        match req.mode {
            SteerMode::Add => {
                hooks.add_vector(
                    self.hook,
                    direction.iter().map(|v| v * req.strength).collect(),
                );
            }
            SteerMode::Clamp => {
                let sae = self.sae.clone();
                let (feature, target, d_in) =
                    (req.feature as usize, req.strength, self.sae.cfg.d_in);
                hooks.replace(self.hook, move |_, x: &Tensor| {
                    let dims = x.dims().to_vec();
                    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
                    let rows = data.len() / d_in;
                    let codes = sae
                        .encode(&data, rows)
                        .map_err(|e| zephyra_lm::LmError::InvalidInput(format!("SAE: {e}")))?;
                    let d_sae = sae.cfg.d_sae;
                    for (r, row) in data.chunks_exact_mut(d_in).enumerate() {
                        let delta = target - codes[r * d_sae + feature];
                        row.iter_mut()
                            .zip(&direction)
                            .for_each(|(x, d)| *x += delta * d);
                    }
                    Tensor::from_vec(data, dims, x.device())
                        .map_err(|e| zephyra_lm::LmError::InvalidInput(format!("clamp hook: {e}")))
                });
            }
        }
        let steered = self
            .llama
            .generate(&prompt, &cfg, &mut hooks, |_| {})
            .map_err(model_err)?;
        let text = |ids: &[u32]| self.tokenizer.decode(ids).map_err(model_err);
        Ok(SteerOutput {
            steered: text(&steered.tokens)?,
            unsteered: text(&unsteered.tokens)?,
            steered_ids: steered.tokens,
            unsteered_ids: unsteered.tokens,
        })
    }
}
