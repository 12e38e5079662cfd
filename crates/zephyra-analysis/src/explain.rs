//! Explain a text: which latents fire on each of its tokens.
//!
//! The model runs to the SAE's hook (and stops there), the activations are encoded, and each token gets its
//! strongest latents. Rows the data crate's [`ExclusionRule`] drops (position 0, special tokens, attention
//! sinks) are marked `excluded` and get no latents, exactly as in training and in the feature statistics.

use serde::{Deserialize, Serialize};
use zephyra_data::harvest::HookBatch;
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
        let tok = self.tokenizer.clone();
        let batch = HookBatch::run(
            self.llama.as_ref(),
            std::slice::from_ref(&ids),
            self.hook,
            rule,
            &move |id| tok.is_special(id),
        )
        .map_err(AnalysisError::model)?;
        let d_sae = self.sae.cfg.d_sae;
        let codes = self
            .sae
            .encode(&batch.acts, ids.len())
            .map_err(AnalysisError::Sae)?;
        let mut result = Vec::with_capacity(ids.len());
        for (p, &id) in ids.iter().enumerate() {
            let token = self
                .tokenizer
                .decode(&[id])
                .unwrap_or_else(|_| format!("<{id}>"));
            let excluded = !batch.keep()[p];
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
