//! Explain a text: which latents fire on each of its tokens.
//!
//! The text is one context through the data crate's pipeline iterator ([`Activations`]: the model runs to
//! the SAE's hook and stops there), the activations are encoded, and each token gets its strongest latents. Rows the data crate's [`ExclusionRule`] drops (position 0, special tokens, attention
//! sinks) are marked `excluded` and get no latents, exactly as in training and in the feature statistics.

use std::iter::once;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zephyra_data::harvest::{Activations, RowPlan};
use zephyra_data::pack::TextEncoder;
use zephyra_data::ExclusionRule;

use crate::error::{AnalysisError, Result};
use crate::steer::Engine;

/// One latent firing on one token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureAct {
    /// Latent index.
    pub id: u32,
    /// Its activation.
    pub act: f32,
}

/// One token of the explained text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFeatures {
    /// Token id.
    pub id: u32,
    /// The token as text.
    pub token: String,
    /// Dropped by the exclusion rule (no latents reported).
    pub excluded: bool,
    /// The strongest latents, largest first.
    pub features: Vec<FeatureAct>,
}

/// Largest text accepted by [`Engine::explain`], in bytes.
pub const MAX_EXPLAIN_BYTES: usize = 64 * 1024;

impl Engine {
    /// The `top_k` strongest latents of each token of `text`.
    pub fn explain(
        &self,
        text: &str,
        top_k: usize,
        rule: &ExclusionRule,
    ) -> Result<Vec<TokenFeatures>> {
        if text.len() > MAX_EXPLAIN_BYTES {
            return Err(AnalysisError::InvalidArgument(format!(
                "the text has {} bytes; at most {MAX_EXPLAIN_BYTES} are explained at once",
                text.len()
            )));
        }
        let ids = self.encode_checked(text, 0)?;
        let encoder: Arc<dyn TextEncoder> = self.tokenizer.clone();
        let plan = RowPlan::per_batch(vec![self.hook], 1, *rule);
        let mut pass = Activations::over(self.llama.clone(), encoder, once(Ok(ids.clone())), plan);
        let shard = pass
            .next_shard(&mut |_| {})?
            .ok_or(AnalysisError::NoTokens { seen: 0 })?;
        let d_sae = self.sae.cfg.d_sae;
        let codes = self.sae.encode(&shard.acts[0], ids.len())?;
        let mut result = Vec::with_capacity(ids.len());
        for (p, &id) in ids.iter().enumerate() {
            let token = self
                .tokenizer
                .decode(&[id])
                .unwrap_or_else(|_| format!("<{id}>"));
            let excluded = !shard.keep()[p];
            let mut features: Vec<FeatureAct> = Vec::new();
            if !excluded {
                features = codes[p * d_sae..(p + 1) * d_sae]
                    .iter()
                    .enumerate()
                    .filter(|(_, &a)| a > 0.0)
                    .map(|(j, &a)| FeatureAct {
                        id: j as u32,
                        act: a,
                    })
                    .collect();
                features.sort_by(|a, b| b.act.total_cmp(&a.act).then(a.id.cmp(&b.id)));
                features.truncate(top_k);
            }
            result.push(TokenFeatures {
                id,
                token,
                excluded,
                features,
            });
        }
        Ok(result)
    }
}
