//! One real forward pass of a prompt → the local replacement model: captures every norm's scale
//! (`hook_scale`), the attention patterns, the transcoders' inputs and the MLP outputs; encodes with each
//! transcoder; and checks that the frozen model reproduces the model's logits. Llama and Gemma 3 (its
//! post-attention norm is frozen like the others; its post-MLP norm sits inside what the transcoder
//! replaces, `hook_mlp_out` being after it).

use zephyra_data::exclude::{apply_joint, row_norms, ExclusionRule};
use zephyra_lm::config::Family;
use zephyra_lm::model::{BlockWeights, Logits};
use zephyra_lm::{HookPoint, Hooks, Llama};
use zephyra_sae::{Architecture, Sae};

use super::frozen::{FrozenLayer, FrozenPrompt, FrozenWeights};
use super::local::{LocalReplacement, Sources, TranscoderView};
use crate::error::{AnalysisError, Result};

/// The local replacement model of a prompt and how well it reproduces the model.
#[derive(Debug)]
pub struct Built<'a> {
    /// The model.
    pub local: LocalReplacement<'a>,
    /// The model's logits at the last position.
    pub logits: Vec<f32>,
    /// Largest |frozen-model logit − model logit| at the last position (float32 rounding).
    pub max_abs_logit_error: f32,
}

fn take(acts: &mut zephyra_lm::Activations, hook: HookPoint) -> Result<Vec<f32>> {
    let t = acts.take(hook).ok_or_else(|| {
        AnalysisError::Model(format!("the forward pass did not capture `{hook}`").into())
    })?;
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(AnalysisError::model)
}

/// Checks a dictionary can stand in an attribution graph (linear encoder, widths of the residual stream).
fn check_dictionary(hook: HookPoint, sae: &Sae, d: usize) -> Result<()> {
    if sae.cfg.architecture == Architecture::Gated {
        return Err(AnalysisError::InvalidArgument(format!(
            "the transcoder at `{hook}` is gated: attribution needs one encoder per feature; use relu, topk, \
             batchtopk or jumprelu transcoders"
        )));
    }
    // `normalization_factor` is provenance only: `zephyra train` folds the input scale into the saved
    // weights, so the dictionary reads the raw input either way.
    if sae.cfg.d_in != d || sae.cfg.d_out() != d {
        return Err(AnalysisError::WidthMismatch {
            hook: hook.to_string(),
            hook_width: d,
            sae_d_in: sae.cfg.d_in,
        });
    }
    Ok(())
}

/// Which positions of a prompt the graph holds fixed: those `rule` drops (the harvest's rule, with one
/// verdict for every transcoder's input and output hook, as the transcoders' training rows had).
#[derive(Clone, Copy)]
pub struct Holding<'r> {
    /// The exclusion rule (`ExclusionRule::keep_all()`: hold nothing).
    pub rule: ExclusionRule,
    /// Whether a token id is special (the tokenizer's control tokens).
    pub is_special: &'r dyn Fn(u32) -> bool,
}

impl Holding<'_> {
    /// Holds nothing: every position gets its nodes.
    pub fn nothing() -> Holding<'static> {
        Holding {
            rule: ExclusionRule::keep_all(),
            is_special: &|_| false,
        }
    }

    /// `held[p]` for a prompt of `tokens` whose transcoders read `mlp_in[l]` and replace `mlp_out[l]`.
    pub fn positions(
        &self,
        tokens: &[u32],
        mlp_in: &[Vec<f32>],
        mlp_out: &[Vec<f32>],
        d: usize,
    ) -> Vec<bool> {
        let norms: Vec<Vec<f32>> = mlp_in
            .iter()
            .chain(mlp_out)
            .map(|acts| row_norms(acts, d))
            .collect();
        let refs: Vec<&[f32]> = norms.iter().map(Vec::as_slice).collect();
        apply_joint(&self.rule, tokens, tokens.len(), &refs, self.is_special)
            .first()
            .map_or_else(
                || vec![false; tokens.len()],
                |v| v.keep.iter().map(|&k| !k).collect(),
            )
    }
}

/// Runs `tokens` through `model` and builds the local replacement model with one transcoder per layer
/// (`transcoders[l]` = (its input hook, its weights), layer order), holding the positions `holding` drops.
pub fn build<'a>(
    model: &'a Llama,
    transcoders: &[(HookPoint, &'a Sae)],
    tokens: &[u32],
    holding: &Holding<'_>,
) -> Result<Built<'a>> {
    let cfg = model.config();
    let (n_layers, d, seq) = (cfg.n_layers, cfg.d_model, tokens.len());
    if transcoders.len() != n_layers {
        return Err(AnalysisError::ShapeMismatch {
            what: "transcoders (one per layer)",
            expected: n_layers,
            got: transcoders.len(),
        });
    }
    for &(hook, sae) in transcoders {
        check_dictionary(hook, sae, d)?;
    }
    let gemma = cfg.family == Family::Gemma3;
    let mut hooks = Hooks::new();
    for (l, &(input, _)) in transcoders.iter().enumerate() {
        hooks
            .capture(HookPoint::Ln1Scale(l))
            .capture(HookPoint::AttnPattern(l))
            .capture(HookPoint::ResidMid(l))
            .capture(HookPoint::Ln2Scale(l))
            .capture(input)
            .capture(HookPoint::MlpOut(l));
        if gemma {
            hooks.capture(HookPoint::Ln1PostScale(l));
        }
    }
    hooks.capture(HookPoint::LnFinalScale);
    let mut out = model
        .forward(&[tokens], &mut hooks, Logits::Last)
        .map_err(AnalysisError::model)?;
    let logits = out
        .logits
        .as_ref()
        .ok_or_else(|| AnalysisError::Model("the forward pass returned no logits".into()))?
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(AnalysisError::model)?;
    let acts = &mut out.activations;
    let mut inverse = |hook: HookPoint| -> Result<Vec<f32>> {
        Ok(take(acts, hook)?.iter().map(|&s| 1.0 / s).collect())
    };
    let (mut attn_inv, mut post_inv, mut mlp_inv) = (Vec::new(), Vec::new(), Vec::new());
    for l in 0..n_layers {
        attn_inv.push(inverse(HookPoint::Ln1Scale(l))?);
        mlp_inv.push(inverse(HookPoint::Ln2Scale(l))?);
        if gemma {
            post_inv.push(inverse(HookPoint::Ln1PostScale(l))?);
        }
    }
    let final_inv_scale = inverse(HookPoint::LnFinalScale)?;
    let blocks: Vec<BlockWeights<'a>> = (0..n_layers)
        .map(|l| model.block_weights(l))
        .collect::<std::result::Result<_, _>>()
        .map_err(AnalysisError::model)?;
    let (mut patterns, mut mlp_in, mut mlp_out) = (Vec::new(), Vec::new(), Vec::new());
    let mut layers = Vec::with_capacity(n_layers);
    for (l, &(input, _)) in transcoders.iter().enumerate() {
        let mid = take(acts, HookPoint::ResidMid(l))?;
        let x = take(acts, input)?;
        let with_weight = input_gain_is_weight(&mid, &mlp_inv[l], &x, blocks[l].ln2, input)?;
        mlp_in.push(x);
        mlp_out.push(take(acts, HookPoint::MlpOut(l))?);
        let p = take(acts, HookPoint::AttnPattern(l))?;
        if p.len() != cfg.n_heads * seq * seq {
            return Err(AnalysisError::ShapeMismatch {
                what: "attention pattern [heads, seq, seq]",
                expected: cfg.n_heads * seq * seq,
                got: p.len(),
            });
        }
        patterns.push(p);
        layers.push(FrozenLayer {
            attn_gain: blocks[l].ln1,
            w_v: blocks[l].w_v,
            w_o: blocks[l].w_o,
            post_attn_gain: blocks[l].ln1_post,
            mlp_in_gain: with_weight.then_some(blocks[l].ln2),
        });
    }
    let weights = FrozenWeights {
        d_model: d,
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        d_head: cfg.d_head,
        layers,
        final_gain: model.final_norm_weight(),
        unembed: model.unembedding(),
        embed: model.token_embedding(),
        embed_scale: model.embedding_scale(),
    };
    let prompt = FrozenPrompt {
        tokens: tokens.to_vec(),
        patterns,
        attn_inv_scale: attn_inv,
        post_attn_inv_scale: post_inv,
        mlp_inv_scale: mlp_inv,
        final_inv_scale,
    };
    let mut codes = Vec::with_capacity(n_layers);
    for (l, &(_, sae)) in transcoders.iter().enumerate() {
        codes.push(sae.encode(&mlp_in[l], seq)?);
    }
    let views = transcoders
        .iter()
        .map(|&(_, s)| TranscoderView::of_sae(s))
        .collect();
    let held = holding.positions(tokens, &mlp_in, &mlp_out, d);
    let local = LocalReplacement::new(weights, prompt, views, (&mlp_in, &codes, &mlp_out), &held)?;
    let run = local.forward(Sources::ALL, None);
    let frozen = local.logits(&run, seq - 1);
    let max_abs_logit_error = frozen
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    Ok(Built {
        local,
        logits,
        max_abs_logit_error,
    })
}

/// Whether the captured transcoder input is `mid/σ ⊙ w` (true) or `mid/σ` (false); an error if neither.
fn input_gain_is_weight(
    mid: &[f32],
    inv: &[f32],
    x: &[f32],
    w: &[f32],
    hook: HookPoint,
) -> Result<bool> {
    let d = w.len();
    let err = |gain: Option<&[f32]>| -> f64 {
        let mut worst = 0.0f64;
        for (r, (m, x)) in mid.chunks_exact(d).zip(x.chunks_exact(d)).enumerate() {
            for j in 0..d {
                let g = gain.map_or(1.0, |g| g[j]);
                let want = f64::from(m[j] * inv[r] * g);
                worst = worst.max((want - f64::from(x[j])).abs() / (1.0 + want.abs()));
            }
        }
        worst
    };
    let (with, without) = (err(Some(w)), err(None));
    if with < 1e-4 {
        Ok(true)
    } else if without < 1e-4 {
        Ok(false)
    } else {
        Err(AnalysisError::InvalidArgument(format!(
            "the transcoders read `{hook}`, which is not the MLP's normalised input (relative error {:.1e}): \
             attribution needs transcoders trained on `blocks.{{l}}.ln2.hook_normalized`",
            with.min(without)
        )))
    }
}
