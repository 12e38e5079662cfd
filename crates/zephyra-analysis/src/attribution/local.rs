//! The local replacement model of one prompt: the frozen linear model with every MLP replaced by its
//! transcoder, the features held at their values on the prompt, and an error node per (layer, position)
//! holding what the transcoder missed — so it reproduces the model's residual stream (and logits) exactly.
//!
//! Positions the exclusion rule drops (position 0, special tokens, attention sinks: `zephyra_data::exclude`)
//! are *held*: the MLP output there is a constant of the prompt, written with the biases, with no feature or
//! error node. The transcoders never saw such rows in training, and position 0's massive activations would
//! otherwise dominate the graph through every later position's attention (circuit-tracer's `zero_bos`).

use std::borrow::Cow;

use zephyra_sae::kernels::MatRef;

use super::frozen::{mm, skip_backward, skip_forward, FrozenPrompt, FrozenWeights};
use crate::error::{AnalysisError, Result};

/// One layer's transcoder as attribution reads it (borrowed from a `zephyra_sae::Sae`).
#[derive(Debug, Clone, Copy)]
pub struct TranscoderView<'a> {
    /// Features.
    pub d_sae: usize,
    /// Encoder `[d_in, d_sae]`.
    pub w_enc: &'a [f32],
    /// Encoder bias `[d_sae]`.
    pub b_enc: &'a [f32],
    /// Decoder `[d_sae, d_out]`.
    pub w_dec: &'a [f32],
    /// Decoder (output) bias `[d_out]`.
    pub b_dec: &'a [f32],
    /// Skip path `[d_out, d_in]`, if any.
    pub w_skip: Option<&'a [f32]>,
    /// Whether the encoder reads `x − b_dec` (SAELens' `apply_b_dec_to_input`).
    pub b_dec_to_input: bool,
}

impl<'a> TranscoderView<'a> {
    /// Views a `zephyra_sae` transcoder (or SAE) whose input and output are both `d_model` wide.
    pub fn of_sae(sae: &'a zephyra_sae::Sae) -> Self {
        let w_skip = (!sae.w_skip.is_empty()).then_some(&sae.w_skip[..]);
        TranscoderView {
            d_sae: sae.cfg.d_sae,
            w_enc: &sae.w_enc,
            b_enc: &sae.b_enc,
            w_dec: &sae.w_dec,
            b_dec: &sae.b_dec,
            w_skip,
            b_dec_to_input: sae.cfg.apply_b_dec_to_input,
        }
    }

    /// Encoder column of feature `f` (its read direction), `[d_in]`.
    pub fn encoder_row(&self, f: usize) -> Vec<f32> {
        self.w_enc
            .iter()
            .skip(f)
            .step_by(self.d_sae)
            .copied()
            .collect()
    }

    /// The encoder's constant term for feature `f`: `b_enc[f]` (minus `b_dec · w_enc[:, f]` when the
    /// encoder reads `x − b_dec`).
    pub fn encoder_bias(&self, f: usize) -> f64 {
        let mut b = f64::from(self.b_enc[f]);
        if self.b_dec_to_input {
            let w = self.encoder_row(f);
            b -= dot(&w, self.b_dec);
        }
        b
    }
}

/// An active transcoder feature on the prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveFeature {
    /// Layer of its transcoder.
    pub layer: usize,
    /// Position in the prompt.
    pub pos: usize,
    /// Feature id.
    pub feature: usize,
    /// Its activation.
    pub activation: f32,
    /// Its pre-activation (encoder output before the activation function), on the real input.
    pub pre_activation: f64,
}

/// Which constants a frozen forward pass writes into the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// Token embeddings.
    pub embeddings: bool,
    /// Feature decoder vectors × activations.
    pub features: bool,
    /// Error nodes.
    pub errors: bool,
    /// Decoder biases and the held positions' MLP outputs.
    pub biases: bool,
}

impl Sources {
    /// Everything: the pass reproduces the model.
    pub const ALL: Sources = Sources {
        embeddings: true,
        features: true,
        errors: true,
        biases: true,
    };
    /// Biases only: what no node accounts for.
    pub const BIASES: Sources = Sources {
        embeddings: false,
        features: false,
        errors: false,
        biases: true,
    };
}

/// The residual stream of a frozen pass: `mid[l]` = `hook_resid_mid` of block `l`, and the final one.
#[derive(Debug, Clone)]
pub struct FrozenRun {
    /// Per layer `[seq, d_model]`.
    pub mid: Vec<Vec<f32>>,
    /// `[seq, d_model]` after the last block.
    pub last: Vec<f32>,
}

/// Per layer, from the real pass: the transcoder inputs, their codes and the MLP outputs.
pub type Captures<'c> = (&'c [Vec<f32>], &'c [Vec<f32>], &'c [Vec<f32>]);

/// The local replacement model of one prompt.
#[derive(Debug, Clone)]
pub struct LocalReplacement<'a> {
    /// The model's weights.
    pub weights: FrozenWeights<'a>,
    /// Patterns and scales on the prompt.
    pub prompt: FrozenPrompt,
    /// One transcoder per layer.
    pub transcoders: Vec<TranscoderView<'a>>,
    /// Active features, ordered by (layer, pos, feature).
    pub active: Vec<ActiveFeature>,
    /// Per layer, the error `hook_mlp_out − transcoder output`, `[seq, d_model]` (zero at held positions).
    pub errors: Vec<Vec<f32>>,
    /// Per position, whether its MLP outputs are held fixed (no nodes; written with the biases).
    pub held: Vec<bool>,
    /// Per layer, what the MLP wrote at held positions beyond `b_dec` and the skip path, `[seq, d_model]`
    /// (zero elsewhere).
    held_out: Vec<Vec<f32>>,
}

impl<'a> LocalReplacement<'a> {
    /// Builds the model from a real pass: per layer the transcoder's input (`mlp_in`, `[seq, d_in]`),
    /// its codes (`codes`, `[seq, d_sae]`, as the dictionary's own encoder gave them) and the real
    /// `hook_mlp_out` (`mlp_out`, `[seq, d_model]`). `held[p]`: position `p`'s MLP outputs are constants
    /// of the prompt (see the module documentation), one flag per position.
    pub fn new(
        weights: FrozenWeights<'a>,
        prompt: FrozenPrompt,
        transcoders: Vec<TranscoderView<'a>>,
        (mlp_in, codes, mlp_out): Captures<'_>,
        held: &[bool],
    ) -> Result<Self> {
        prompt.check(&weights)?;
        let (n_layers, seq, d) = (weights.layers.len(), prompt.seq(), weights.d_model);
        if held.len() != seq {
            return Err(AnalysisError::ShapeMismatch {
                what: "held-position flags (one per position)",
                expected: seq,
                got: held.len(),
            });
        }
        for (what, n) in [
            ("transcoders (one per layer)", transcoders.len()),
            ("transcoder inputs (one per layer)", mlp_in.len()),
            ("codes (one per layer)", codes.len()),
            ("MLP outputs (one per layer)", mlp_out.len()),
        ] {
            if n != n_layers {
                return Err(AnalysisError::ShapeMismatch {
                    what,
                    expected: n_layers,
                    got: n,
                });
            }
        }
        let mut active = Vec::new();
        let mut errors = Vec::with_capacity(n_layers);
        let mut held_out = Vec::with_capacity(n_layers);
        for (l, tc) in transcoders.iter().enumerate() {
            let d_sae = tc.d_sae;
            for (what, expected, got) in [
                ("transcoder encoder", d * d_sae, tc.w_enc.len()),
                ("transcoder decoder", d * d_sae, tc.w_dec.len()),
                ("transcoder input", seq * d, mlp_in[l].len()),
                ("transcoder codes", seq * d_sae, codes[l].len()),
                ("MLP output", seq * d, mlp_out[l].len()),
            ] {
                if expected != got {
                    return Err(AnalysisError::ShapeMismatch {
                        what,
                        expected,
                        got,
                    });
                }
            }
            let mut err = mlp_out[l].clone();
            for p in 0..seq {
                let row = &mut err[p * d..(p + 1) * d];
                row.iter_mut().zip(tc.b_dec).for_each(|(e, b)| *e -= b);
                if held[p] {
                    continue;
                }
                let x = &mlp_in[l][p * d..(p + 1) * d];
                for (f, &a) in codes[l][p * d_sae..(p + 1) * d_sae].iter().enumerate() {
                    if a == 0.0 {
                        continue;
                    }
                    let w = &tc.w_dec[f * d..(f + 1) * d];
                    row.iter_mut().zip(w).for_each(|(e, w)| *e -= a * w);
                    let wenc = tc.encoder_row(f);
                    let pre = dot(&wenc, x) + tc.encoder_bias(f);
                    active.push(ActiveFeature {
                        layer: l,
                        pos: p,
                        feature: f,
                        activation: a,
                        pre_activation: pre,
                    });
                }
            }
            if let Some(ws) = tc.w_skip {
                let mut skip = vec![0.0f32; seq * d];
                mm(
                    &mut skip,
                    &mlp_in[l],
                    seq,
                    d,
                    MatRef::row_major(ws, d, d).t(),
                    false,
                );
                err.iter_mut().zip(&skip).for_each(|(e, s)| *e -= s);
            }
            let mut fixed = vec![0.0f32; seq * d];
            for p in (0..seq).filter(|&p| held[p]) {
                fixed[p * d..(p + 1) * d].copy_from_slice(&err[p * d..(p + 1) * d]);
                err[p * d..(p + 1) * d].fill(0.0);
            }
            errors.push(err);
            held_out.push(fixed);
        }
        Ok(LocalReplacement {
            weights,
            prompt,
            transcoders,
            active,
            errors,
            held: held.to_vec(),
            held_out,
        })
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.weights.layers.len()
    }

    /// The frozen forward pass writing `sources`; `scale` multiplies one active feature's activation
    /// (index into [`LocalReplacement::active`]) by a factor (interventions).
    pub fn forward(&self, sources: Sources, scale: Option<(usize, f32)>) -> FrozenRun {
        let w = &self.weights;
        let (seq, d) = (self.prompt.seq(), w.d_model);
        let mut r = vec![0.0f32; seq * d];
        if sources.embeddings {
            for (row, &t) in r.chunks_exact_mut(d).zip(&self.prompt.tokens) {
                let e = &w.embed[t as usize * d..(t as usize + 1) * d];
                row.iter_mut()
                    .zip(e)
                    .for_each(|(o, &e)| *o = e * w.embed_scale);
            }
        }
        let mut mid = Vec::with_capacity(self.n_layers());
        let mut next = 0; // first active feature of the current layer
        for l in 0..self.n_layers() {
            let mut attn = vec![0.0f32; seq * d];
            w.attn_forward(l, &self.prompt, &r, 1, seq, &mut attn);
            r.iter_mut().zip(&attn).for_each(|(a, b)| *a += b);
            mid.push(r.clone());
            let tc = &self.transcoders[l];
            let mut out = vec![0.0f32; seq * d];
            if let Some(ws) = tc.w_skip {
                let gain = self.mlp_gain(l);
                skip_forward(ws, &gain, &self.prompt.mlp_inv_scale[l], &r, seq, &mut out);
            }
            for (p, row) in out.chunks_exact_mut(d).enumerate() {
                if sources.biases {
                    row.iter_mut().zip(tc.b_dec).for_each(|(o, b)| *o += b);
                    if self.held[p] {
                        let h = &self.held_out[l][p * d..(p + 1) * d];
                        row.iter_mut().zip(h).for_each(|(o, h)| *o += h);
                    }
                }
                if sources.errors {
                    let e = &self.errors[l][p * d..(p + 1) * d];
                    row.iter_mut().zip(e).for_each(|(o, e)| *o += e);
                }
            }
            while next < self.active.len() && self.active[next].layer == l {
                let a = &self.active[next];
                let mut act = if sources.features { a.activation } else { 0.0 };
                if let Some((i, s)) = scale {
                    if i == next {
                        act *= s;
                    }
                }
                let wd = &tc.w_dec[a.feature * d..(a.feature + 1) * d];
                let row = &mut out[a.pos * d..(a.pos + 1) * d];
                row.iter_mut().zip(wd).for_each(|(o, w)| *o += act * w);
                next += 1;
            }
            r.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
        }
        FrozenRun { mid, last: r }
    }

    /// The transcoder input of layer `l` at `p` in a frozen run, `[d_model]`.
    pub fn mlp_input(&self, run: &FrozenRun, l: usize, p: usize) -> Vec<f32> {
        let d = self.weights.d_model;
        let (gain, s) = (self.mlp_gain(l), self.prompt.mlp_inv_scale[l][p]);
        let r = &run.mid[l][p * d..(p + 1) * d];
        r.iter()
            .zip(gain.iter())
            .map(|(&x, &g)| g * x * s)
            .collect()
    }

    /// The final-norm output at `p` of a frozen run, `[d_model]`.
    pub fn final_normed(&self, run: &FrozenRun, p: usize) -> Vec<f32> {
        let d = self.weights.d_model;
        let s = self.prompt.final_inv_scale[p];
        let r = &run.last[p * d..(p + 1) * d];
        r.iter()
            .zip(self.weights.final_gain)
            .map(|(&x, &g)| g * x * s)
            .collect()
    }

    /// All logits `[vocab]` at position `p` of a frozen run.
    pub fn logits(&self, run: &FrozenRun, p: usize) -> Vec<f32> {
        let x = self.final_normed(run, p);
        let d = self.weights.d_model;
        let vocab = self.weights.unembed.len() / d;
        let mut out = vec![0.0f32; vocab];
        mm(
            &mut out,
            &x,
            1,
            d,
            MatRef::row_major(self.weights.unembed, vocab, d).t(),
            false,
        );
        out
    }

    /// The skip path's transpose at layer `l`, for the batched backward pass.
    pub(crate) fn skip_backward(&self, l: usize, g: &[f32], seq: usize, grad: &mut [f32]) {
        if let Some(ws) = self.transcoders[l].w_skip {
            let gain = self.mlp_gain(l);
            skip_backward(ws, &gain, &self.prompt.mlp_inv_scale[l], g, seq, grad);
        }
    }

    /// The gain of layer `l`'s transcoder input (ones when the hook excludes the norm weight).
    pub fn mlp_gain(&self, l: usize) -> Cow<'a, [f32]> {
        match self.weights.layers[l].mlp_in_gain {
            Some(g) => Cow::Borrowed(g),
            None => Cow::Owned(vec![1.0; self.weights.d_model]),
        }
    }
}

/// `f64` dot product of two `f32` slices.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}
