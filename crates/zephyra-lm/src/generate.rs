//! Text generation with a KV cache: greedy decoding or temperature / top-p (nucleus) sampling
//! (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration", arXiv:1904.09751).
//!
//! The prompt runs once; each later step feeds only the newest token, reusing the cached keys
//! and values (sliding-window blocks keep only their window, so their cache stays bounded).
//! Hooks apply at every step to the new positions, so steering and SAE splicing
//! work during generation exactly as in [`Llama::forward`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{LmError, Result};
use crate::hooks::{Activations, Hooks};
use crate::model::{KvCache, Llama, Logits};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Always the most likely token (the lowest id on ties).
    Greedy,
    /// Sample from `softmax(logits / temperature)`, restricted to the smallest set of most likely
    /// tokens whose probability reaches `top_p`.
    TopP {
        /// Softmax temperature, > 0.
        temperature: f32,
        /// Nucleus mass in (0, 1]; 1 keeps every token.
        top_p: f32,
    },
}

impl Sampling {
    /// `Greedy` for temperature 0, otherwise `TopP`.
    pub fn from_temperature(temperature: f32, top_p: f32) -> Sampling {
        if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::TopP { temperature, top_p }
        }
    }
}

/// Settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Seed of the sampler (ChaCha8): the same seed gives the same tokens.
    pub seed: u64,
    /// Tokens that end generation (typically the tokenizer's EOS); they are not emitted.
    pub stop_tokens: Vec<u32>,
}

impl GenerateConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens, stopping at `stop_tokens`.
    pub fn greedy(max_new_tokens: usize, stop_tokens: Vec<u32>) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens,
            sampling: Sampling::Greedy,
            seed: 0,
            stop_tokens,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this stop token.
    Stop(u32),
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The context length was reached.
    ContextFull,
}

/// The result of [`Llama::generate`].
#[derive(Debug)]
pub struct GenerateOutput {
    /// The generated tokens (the stop token excluded).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub stop: StopReason,
    /// Captures over the prompt and every position fed to the model (`[1, n, …]`, a pattern
    /// `[1, n_heads, n, n]`; the last generated token is never fed, so it has no activations).
    pub activations: Activations,
}

impl Llama {
    /// Generates a continuation of `prompt`, calling `on_token` with each new token as soon as it
    /// is chosen (for streaming).
    ///
    /// Errors: an empty prompt, a prompt at or beyond the context length, bad sampling settings,
    /// a token id outside the vocabulary, or an error from a hook.
    pub fn generate(
        &self,
        prompt: &[u32],
        cfg: &GenerateConfig,
        hooks: &mut Hooks<'_>,
        mut on_token: impl FnMut(u32),
    ) -> Result<GenerateOutput> {
        if prompt.is_empty() {
            return Err(LmError::InvalidInput(
                "the prompt is empty; give at least one token".into(),
            ));
        }
        if let Sampling::TopP { temperature, top_p } = cfg.sampling {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(LmError::InvalidInput(format!(
                    "temperature {temperature} must be > 0 (use 0 for greedy decoding)"
                )));
            }
            if !(top_p > 0.0 && top_p <= 1.0) {
                return Err(LmError::InvalidInput(format!(
                    "top_p {top_p} must be in (0, 1]"
                )));
            }
        }
        let n_ctx = self.config.context_length;
        if prompt.len() >= n_ctx {
            return Err(LmError::InvalidInput(format!(
                "the prompt has {} tokens, the context length is {n_ctx}: nothing can be generated",
                prompt.len()
            )));
        }
        let capacity = n_ctx.min(prompt.len() + cfg.max_new_tokens);
        let mut cache = KvCache::new(&self.config, 1, capacity);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut tokens = Vec::new();
        let mut activations = Activations::default();
        let mut input = prompt.to_vec();
        let stop = loop {
            if tokens.len() >= cfg.max_new_tokens {
                break StopReason::MaxTokens;
            }
            if cache.len() + input.len() > capacity {
                break StopReason::ContextFull;
            }
            let last = [input.len() - 1];
            let (logits, acts) =
                self.run(&input, input.len(), &last, &mut cache, hooks, Logits::Last)?;
            for (p, t) in acts {
                activations.push(p, t)?;
            }
            let logits = logits
                .ok_or_else(|| LmError::InvalidInput("no logits computed".into()))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let next = sample(&logits, cfg.sampling, &mut rng);
            if cfg.stop_tokens.contains(&next) {
                break StopReason::Stop(next);
            }
            tokens.push(next);
            on_token(next);
            input = vec![next];
        };
        tracing::debug!(n_tokens = tokens.len(), ?stop, "generated");
        Ok(GenerateOutput {
            tokens,
            stop,
            activations,
        })
    }
}

/// Picks the next token from `logits` (one row of length `vocab`).
pub fn sample(logits: &[f32], sampling: Sampling, rng: &mut impl Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::TopP { temperature, top_p } => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut probs: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, ((l - max) / temperature).exp()))
                .collect();
            let total: f32 = probs.iter().map(|p| p.1).sum();
            probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut kept = 0;
            let mut mass = 0.0;
            for p in &probs {
                kept += 1;
                mass += p.1 / total;
                if mass >= top_p {
                    break;
                }
            }
            let probs = &probs[..kept];
            let kept_mass: f32 = probs.iter().map(|p| p.1).sum();
            let mut u = rng.random::<f32>() * kept_mass;
            for &(id, p) in probs {
                if u < p {
                    return id;
                }
                u -= p;
            }
            probs[kept - 1].0
        }
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let logits = [0.1, 2.0, 1.9, -3.0];
        for _ in 0..20 {
            let s = Sampling::TopP {
                temperature: 1.0,
                top_p: 1e-6,
            };
            assert_eq!(sample(&logits, s, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = [0.0, 3f32.ln()];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let s = Sampling::TopP {
            temperature: 1.0,
            top_p: 1.0,
        };
        let n = 20_000;
        let ones = (0..n).filter(|_| sample(&logits, s, &mut rng) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
    }
}
