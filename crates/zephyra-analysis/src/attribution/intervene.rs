//! Interventions on the real model: transcoder features' contributions removed (ablation) or rescaled
//! (steering) at their positions, the model otherwise run as it is — attention patterns, norms and the
//! downstream MLPs recomputed ("attention free"), unlike the frozen local replacement model whose
//! predictions the graph's edges are.
//!
//! A feature `f` of layer `l` at position `p` with activation `a`, scaled by `s`, changes
//! `blocks.{l}.hook_mlp_out` at `p` by `(s − 1) · a · w_dec[f]` (what the transcoder would have written
//! with the feature at `s · a`); the change is added through the forward pass's hooks.

use candle_core::{Device, Tensor};
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Hooks, Llama};

use crate::error::{AnalysisError, Result};

/// One feature set to `scale ×` its activation (0: ablated).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureEdit {
    /// Layer of its transcoder.
    pub layer: usize,
    /// Position in the prompt.
    pub pos: usize,
    /// Feature index.
    pub feature: usize,
    /// Its activation on the prompt.
    pub activation: f32,
    /// Factor applied to it (0: ablate; 2: double).
    pub scale: f32,
}

/// The model's next-token logits without and with the edits.
#[derive(Debug, Clone, PartialEq)]
pub struct Intervened {
    /// Logits at the last position, unedited.
    pub before: Vec<f32>,
    /// Logits at the last position, edited.
    pub after: Vec<f32>,
}

/// A token's place in a next-token distribution.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenScore {
    /// Token id.
    pub id: u32,
    /// Probability.
    pub prob: f32,
    /// Logit.
    pub logit: f32,
}

/// The `k` most probable tokens of `logits`, most probable first.
pub fn top_tokens(logits: &[f32], k: usize) -> Vec<TokenScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order
        .into_iter()
        .take(k)
        .map(|id| {
            let logit = logits[id as usize];
            TokenScore {
                id,
                prob: (f64::from(logit - max).exp() / z) as f32,
                logit,
            }
        })
        .collect()
}

/// `logit_v − mean logit`.
pub fn demeaned(logits: &[f32], v: u32) -> f64 {
    let mean = logits.iter().map(|&x| f64::from(x)).sum::<f64>() / logits.len().max(1) as f64;
    logits.get(v as usize).map_or(0.0, |&x| f64::from(x) - mean)
}

/// The additions to each layer's `hook_mlp_out` (`[seq, d_model]`, `None` where nothing changes).
fn deltas(
    decoders: &[&[f32]],
    d: usize,
    seq: usize,
    edits: &[FeatureEdit],
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut out: Vec<Option<Vec<f32>>> = vec![None; decoders.len()];
    for e in edits {
        let bad = |what: String| Err(AnalysisError::InvalidArgument(what));
        if e.layer >= decoders.len() {
            return bad(format!(
                "layer {} does not exist: the model has {} layers (0..{})",
                e.layer,
                decoders.len(),
                decoders.len()
            ));
        }
        if e.pos >= seq {
            return bad(format!(
                "position {} is outside the prompt's {seq} tokens",
                e.pos
            ));
        }
        let n_features = decoders[e.layer].len() / d;
        if e.feature >= n_features {
            return bad(format!(
                "feature {} does not exist: layer {}'s transcoder has {n_features} (0..{n_features})",
                e.feature, e.layer
            ));
        }
        if !(e.scale.is_finite() && e.activation.is_finite()) {
            return bad(format!(
                "the scale ({}) and activation ({}) must be finite numbers",
                e.scale, e.activation
            ));
        }
        let row = &decoders[e.layer][e.feature * d..(e.feature + 1) * d];
        let delta = out[e.layer].get_or_insert_with(|| vec![0.0; seq * d]);
        let c = (e.scale - 1.0) * e.activation;
        delta[e.pos * d..(e.pos + 1) * d]
            .iter_mut()
            .zip(row)
            .for_each(|(o, &w)| *o += c * w);
    }
    Ok(out)
}

fn last_logits(model: &Llama, tokens: &[u32], hooks: &mut Hooks<'_>) -> Result<Vec<f32>> {
    let out = model
        .forward(&[tokens], hooks, Logits::Last)
        .map_err(AnalysisError::model)?;
    out.logits
        .ok_or_else(|| AnalysisError::Model("the forward pass returned no logits".into()))?
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(AnalysisError::model)
}

/// Runs `tokens` through `model` without and with `edits`; `decoders[l]` is layer `l`'s transcoder
/// decoder, `[d_sae, d_model]` row-major.
pub fn intervene(
    model: &Llama,
    decoders: &[&[f32]],
    tokens: &[u32],
    edits: &[FeatureEdit],
) -> Result<Intervened> {
    let d = model.config().d_model;
    if tokens.is_empty() {
        return Err(AnalysisError::InvalidArgument(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let seq = tokens.len();
    let deltas = deltas(decoders, d, seq, edits)?;
    let before = last_logits(model, tokens, &mut Hooks::new())?;
    let mut hooks = Hooks::new();
    for (l, delta) in deltas.into_iter().enumerate() {
        if let Some(delta) = delta {
            let t =
                Tensor::from_vec(delta, (1, seq, d), &Device::Cpu).map_err(AnalysisError::model)?;
            hooks.add(HookPoint::MlpOut(l), t);
        }
    }
    let after = last_logits(model, tokens, &mut hooks)?;
    Ok(Intervened { before, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_scale_minus_one_times_activation_times_the_decoder_row() {
        // Two features of width 2; feature 1 = [1, -2]; activation 3 scaled to 0 → −3·[1, −2] at pos 1.
        let w = [0.5f32, 0.5, 1.0, -2.0];
        let edit = FeatureEdit {
            layer: 0,
            pos: 1,
            feature: 1,
            activation: 3.0,
            scale: 0.0,
        };
        let out = deltas(&[&w], 2, 2, &[edit]).unwrap();
        assert_eq!(out[0].as_deref(), Some(&[0.0, 0.0, -3.0, 6.0][..]));
        let doubled = FeatureEdit { scale: 2.0, ..edit };
        let out = deltas(&[&w], 2, 2, &[doubled, doubled]).unwrap();
        assert_eq!(out[0].as_deref(), Some(&[0.0, 0.0, 6.0, -12.0][..]));
        for bad in [
            FeatureEdit { layer: 1, ..edit },
            FeatureEdit { pos: 2, ..edit },
            FeatureEdit { feature: 2, ..edit },
            FeatureEdit {
                scale: f32::NAN,
                ..edit
            },
        ] {
            assert!(deltas(&[&w], 2, 2, &[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn top_tokens_are_sorted_with_softmax_probabilities() {
        let t = top_tokens(&[0.0, 2.0f32.ln(), 0.0], 2);
        assert_eq!(t[0].id, 1);
        assert!((t[0].prob - 0.5).abs() < 1e-6 && (t[1].prob - 0.25).abs() < 1e-6);
        assert!((demeaned(&[1.0, 2.0, 3.0], 2) - 1.0).abs() < 1e-12);
    }
}
