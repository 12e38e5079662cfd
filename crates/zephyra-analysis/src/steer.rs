//! Steering: generate with a latent's decoder direction pushed into the residual stream at the SAE's hook.
//!
//! - [`SteerMode::Add`] adds `strength × d_i` (the decoder row of latent `i`) at every position, prompt
//!   included (Templeton et al. 2024, "Scaling Monosemanticity", feature steering);
//! - [`SteerMode::Clamp`] encodes each position, and adds `(strength − f_i(x)) × d_i`, which sets the
//!   latent's contribution to the reconstruction to `strength` while leaving the SAE's error term untouched.
//!
//! Both run through the model runtime's hooks, so they apply at every generation step. The unsteered
//! continuation is generated with the same prompt, sampling settings and seed, at the same time on a second
//! thread. [`Engine::steer_streaming`] hands out each side's text as it is generated and can be cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// Which continuation a streamed piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// With the latent applied.
    Steered,
    /// Without it.
    Unsteered,
}

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

impl Engine {
    /// Checks that the SAE fits the hook and returns the engine.
    pub fn new(
        llama: Arc<Llama>,
        tokenizer: Arc<Tokenizer>,
        sae: Arc<Sae>,
        hook: HookPoint,
    ) -> Result<Self> {
        let cfg = llama.config();
        hook.validate(cfg.n_layers).map_err(AnalysisError::model)?;
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
        let ids = self.tokenizer.encode(text).map_err(AnalysisError::model)?;
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

    /// Checks `req` (sizes, finite values, the feature, the prompt) and returns the prompt's token ids.
    ///
    /// Cheap (no forward pass): a server calls it before it starts answering, so a bad request is a 400.
    pub fn check(&self, req: &SteerRequest) -> Result<Vec<u32>> {
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
        self.direction(req.feature)?;
        self.encode_checked(&req.prompt, 1)
    }

    /// Generates the steered and the unsteered continuation of `req.prompt`.
    pub fn steer(&self, req: &SteerRequest) -> Result<SteerOutput> {
        self.steer_streaming(req, &AtomicBool::new(false), |_, _| {})?
            .ok_or_else(|| AnalysisError::Model("generation was cancelled".into()))
    }

    /// [`Engine::steer`], calling `on_text(side, piece)` as each side's text grows (both sides are
    /// generated at the same time, on two threads). The pieces of a side concatenate to its final text.
    ///
    /// Setting `cancel` (from `on_text` or another thread) stops both generations before their next token;
    /// the result is then `Ok(None)`.
    pub fn steer_streaming(
        &self,
        req: &SteerRequest,
        cancel: &AtomicBool,
        on_text: impl Fn(Side, &str) + Sync,
    ) -> Result<Option<SteerOutput>> {
        let prompt = self.check(req)?;
        let cfg = GenerateConfig {
            max_new_tokens: req.max_tokens,
            sampling: Sampling::from_temperature(req.temperature, 0.9),
            seed: req.seed,
            stop_tokens: self.tokenizer.eos_token_id().into_iter().collect(),
        };
        let job = SideJob {
            req,
            prompt: &prompt,
            cfg: &cfg,
            cancel,
            on_text: &on_text,
        };
        let (steered, unsteered) = std::thread::scope(|s| {
            let other = s.spawn(|| self.generate_side(Side::Unsteered, &job));
            let steered = self.generate_side(Side::Steered, &job);
            if steered.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            let unsteered = other.join().unwrap_or_else(|_| {
                Err(AnalysisError::Model(
                    "the generation thread panicked".into(),
                ))
            });
            (steered, unsteered)
        });
        let (steered, unsteered) = match (steered?, unsteered?) {
            (Some(s), Some(u)) => (s, u),
            _ => return Ok(None),
        };
        Ok(Some(SteerOutput {
            steered: steered.1,
            unsteered: unsteered.1,
            steered_ids: steered.0,
            unsteered_ids: unsteered.0,
        }))
    }

    /// One side's generation: token ids and text, or `None` when cancelled.
    fn generate_side(&self, side: Side, job: &SideJob<'_>) -> Result<Option<(Vec<u32>, String)>> {
        let req = job.req;
        let cancel = job.cancel;
        let mut hooks = Hooks::new();
        // Aborts the forward pass of the next token once cancelled; otherwise the identity.
        hooks.replace(self.hook, move |_, x: &Tensor| {
            if cancel.load(Ordering::Relaxed) {
                Err(zephyra_lm::LmError::InvalidInput(
                    "generation cancelled".into(),
                ))
            } else {
                Ok(x.clone())
            }
        });
        if side == Side::Steered {
            let direction = self.direction(req.feature)?.to_vec();
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
                        Tensor::from_vec(data, dims, x.device()).map_err(|e| {
                            zephyra_lm::LmError::InvalidInput(format!("clamp hook: {e}"))
                        })
                    });
                }
            }
        }
        let mut decoder = self.tokenizer.decode_stream();
        let mut emitted = String::new();
        let result = self.llama.generate(job.prompt, job.cfg, &mut hooks, |id| {
            // A token that does not decode yet (part of a character) shows up with a later one.
            if let Ok(Some(piece)) = decoder.step(id) {
                (job.on_text)(side, &piece);
                emitted.push_str(&piece);
            }
        });
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let tokens = result.map_err(AnalysisError::model)?.tokens;
        let text = self
            .tokenizer
            .decode(&tokens)
            .map_err(AnalysisError::model)?;
        match text.strip_prefix(emitted.as_str()) {
            Some("") => {}
            Some(rest) => (job.on_text)(side, rest),
            None => tracing::warn!(
                ?side,
                "the streamed pieces are not a prefix of the decoded text"
            ),
        }
        Ok(Some((tokens, text)))
    }
}

/// What both sides of one steering request share.
struct SideJob<'a> {
    req: &'a SteerRequest,
    prompt: &'a [u32],
    cfg: &'a GenerateConfig,
    cancel: &'a AtomicBool,
    on_text: &'a (dyn Fn(Side, &str) + Sync),
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::features::planted::planted;

    fn request(strength: f32, max_tokens: usize) -> SteerRequest {
        SteerRequest {
            prompt: "the cat sat".into(),
            feature: 0,
            strength,
            mode: SteerMode::Add,
            max_tokens,
            seed: 4,
            temperature: 0.8,
        }
    }

    #[test]
    fn streamed_pieces_concatenate_to_each_side() {
        let p = planted(3);
        let e = Engine::new(p.llama.clone(), p.tokenizer.clone(), p.sae.clone(), p.hook).unwrap();
        let pieces = Mutex::new(Vec::<(Side, String)>::new());
        let out = e
            .steer_streaming(&request(500.0, 16), &AtomicBool::new(false), |side, t| {
                pieces.lock().unwrap().push((side, t.to_string()));
            })
            .unwrap()
            .expect("not cancelled");
        let pieces = pieces.into_inner().unwrap();
        let joined = |side| {
            pieces
                .iter()
                .filter(|(s, _)| *s == side)
                .map(|(_, t)| t.as_str())
                .collect::<String>()
        };
        assert_eq!(joined(Side::Steered), out.steered);
        assert_eq!(joined(Side::Unsteered), out.unsteered);
        assert!(pieces.len() > 2, "{pieces:?}");
        // The same request without streaming gives the same texts.
        assert_eq!(e.steer(&request(500.0, 16)).unwrap(), out);
    }

    #[test]
    fn cancelling_stops_both_sides_early() {
        let p = planted(3);
        let e = Engine::new(p.llama.clone(), p.tokenizer.clone(), p.sae.clone(), p.hook).unwrap();
        let cancel = AtomicBool::new(false);
        let n_pieces = Mutex::new(0usize);
        let out = e
            .steer_streaming(&request(0.0, MAX_STEER_TOKENS - 200), &cancel, |_, _| {
                *n_pieces.lock().unwrap() += 1;
                cancel.store(true, Ordering::Relaxed);
            })
            .unwrap();
        assert!(out.is_none(), "a cancelled request has no result");
        // Each side stops before its next token: at most one piece each (plus one racing the flag).
        let n = n_pieces.into_inner().unwrap();
        assert!((1..=4).contains(&n), "{n} pieces after cancelling");
    }
}
