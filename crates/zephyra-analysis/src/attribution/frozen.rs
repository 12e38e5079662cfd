//! The frozen linear model of one prompt: attention patterns and every RMSNorm scale fixed at their
//! values on the prompt, so the residual stream is a linear function of what is written into it.
//!
//! Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language Models"
//! (transformer-circuits.pub/2025/attribution-graphs/methods.html), § "local replacement model".
//!
//! Pieces, with the residual `R[p]` (`d_model`) at position `p`:
//! - frozen RMSNorm: `x[p] = g ⊙ R[p] · ι[p]` with `ι[p] = 1/σ[p]` fixed; backward `∂R[p] = g ⊙ ∂x[p] · ι[p]`;
//! - frozen attention (OV with a fixed pattern `P[h,t,s]`): `v = x·W_Vᵀ`, `z[t,h] = Σ_s P[h,t,s] v[s,kv(h)]`,
//!   `out = z·W_Oᵀ` (Gemma: then a frozen post-norm). Backward: `∂z = ∂out·W_O`,
//!   `∂v[s,kv] = Σ_{h∈kv} Σ_t P[h,t,s] ∂z[t,h]`, `∂x = ∂v·W_V`, then the frozen norm's backward;
//! - skip path of a transcoder: `out = W_skip x` (`W_skip` `[d_out, d_in]`), backward `∂x = W_skipᵀ ∂out`;
//! - unembedding: `logit_v = u_v · (g_f ⊙ R · ι_f)`; its gradient is the norm's backward of `u_v`.
//!
//! Everything the transcoders write (features, biases, errors) is a constant of this model.

use zephyra_sae::kernels::{matmul, MatRef};

use crate::error::{AnalysisError, Result};

/// One block's weights as the frozen model uses them (borrowed from the runtime).
#[derive(Debug, Clone, Copy)]
pub struct FrozenLayer<'a> {
    /// Gain of the attention's input RMSNorm, `[d_model]`.
    pub attn_gain: &'a [f32],
    /// Value projection `[n_kv_heads·d_head, d_model]` (rows = outputs).
    pub w_v: &'a [f32],
    /// Output projection `[d_model, n_heads·d_head]`.
    pub w_o: &'a [f32],
    /// Gemma 3: gain of the post-attention RMSNorm, `[d_model]`.
    pub post_attn_gain: Option<&'a [f32]>,
    /// The gain that, with the frozen MLP-norm scale, makes the transcoder's input from `hook_resid_mid`:
    /// the norm weight when `ln2.hook_normalized` includes it, `None` (ones) when it does not.
    pub mlp_in_gain: Option<&'a [f32]>,
}

/// The model's weights as the frozen model uses them.
#[derive(Debug, Clone)]
pub struct FrozenWeights<'a> {
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention: `n_heads / n_kv_heads` queries share one).
    pub n_kv_heads: usize,
    /// Head width.
    pub d_head: usize,
    /// Blocks in order.
    pub layers: Vec<FrozenLayer<'a>>,
    /// Gain of the final RMSNorm, `[d_model]`.
    pub final_gain: &'a [f32],
    /// Unembedding `[vocab, d_model]`.
    pub unembed: &'a [f32],
    /// Token embedding `[vocab, d_model]`.
    pub embed: &'a [f32],
    /// Factor the embedding is multiplied by (Gemma: √d_model).
    pub embed_scale: f32,
}

/// What is frozen on one prompt: patterns and inverse RMS scales.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenPrompt {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// Per layer, the attention pattern `[n_heads, seq, seq]` (query row, key column).
    pub patterns: Vec<Vec<f32>>,
    /// Per layer, `1/σ` of the attention's input norm, `[seq]`.
    pub attn_inv_scale: Vec<Vec<f32>>,
    /// Per layer (Gemma 3 only, else empty), `1/σ` of the post-attention norm, `[seq]`.
    pub post_attn_inv_scale: Vec<Vec<f32>>,
    /// Per layer, `1/σ` of the MLP's input norm, `[seq]`.
    pub mlp_inv_scale: Vec<Vec<f32>>,
    /// `1/σ` of the final norm, `[seq]`.
    pub final_inv_scale: Vec<f32>,
}

impl FrozenPrompt {
    /// Number of positions.
    pub fn seq(&self) -> usize {
        self.tokens.len()
    }

    /// Checks every frozen quantity against the weights' shapes.
    pub fn check(&self, w: &FrozenWeights<'_>) -> Result<()> {
        let (seq, n_layers) = (self.seq(), w.layers.len());
        let want = |what: &'static str, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(AnalysisError::ShapeMismatch {
                    what,
                    expected,
                    got,
                })
            }
        };
        want("patterns (layers)", n_layers, self.patterns.len())?;
        want(
            "attention scales (layers)",
            n_layers,
            self.attn_inv_scale.len(),
        )?;
        want("MLP scales (layers)", n_layers, self.mlp_inv_scale.len())?;
        want("final scale", seq, self.final_inv_scale.len())?;
        for (l, layer) in w.layers.iter().enumerate() {
            want("pattern", w.n_heads * seq * seq, self.patterns[l].len())?;
            want("attention scale", seq, self.attn_inv_scale[l].len())?;
            want("MLP scale", seq, self.mlp_inv_scale[l].len())?;
            if layer.post_attn_gain.is_some() {
                want(
                    "post-attention scale",
                    seq,
                    self.post_attn_inv_scale[l].len(),
                )?;
            }
        }
        Ok(())
    }
}

/// `dst[b, p] += g ⊙ src[b, p] · inv[p]` over `n_b` blocks of `seq` rows (a frozen RMSNorm, either
/// direction: it is diagonal).
pub(crate) fn frozen_norm_acc(dst: &mut [f32], src: &[f32], gain: &[f32], inv: &[f32], seq: usize) {
    let d = gain.len();
    for (r, (o, x)) in dst.chunks_exact_mut(d).zip(src.chunks_exact(d)).enumerate() {
        let s = inv[r % seq];
        for ((o, &x), &g) in o.iter_mut().zip(x).zip(gain) {
            *o += g * x * s;
        }
    }
}

/// Row-major product helper: `dst[m, n] (+)= a[m, k] · b`, `b` given as `[k, n]` or transposed.
pub(crate) fn mm(dst: &mut [f32], a: &[f32], m: usize, k: usize, b: MatRef<'_, f32>, acc: bool) {
    matmul(dst, MatRef::row_major(a, m, k), b, acc, 1.0);
}

impl FrozenWeights<'_> {
    /// Frozen attention of layer `l`, forward: adds `attn(R)` to `out` for `n_b` prompts of `seq`
    /// positions (`r`, `out`: `[n_b·seq, d_model]`).
    pub fn attn_forward(
        &self,
        l: usize,
        fp: &FrozenPrompt,
        r: &[f32],
        n_b: usize,
        seq: usize,
        out: &mut [f32],
    ) {
        let (d, layer) = (self.d_model, &self.layers[l]);
        let (qw, kvw) = (self.n_heads * self.d_head, self.n_kv_heads * self.d_head);
        let rows = n_b * seq;
        let mut x = vec![0.0f32; rows * d];
        frozen_norm_acc(&mut x, r, layer.attn_gain, &fp.attn_inv_scale[l], seq);
        let mut v = vec![0.0f32; rows * kvw];
        mm(
            &mut v,
            &x,
            rows,
            d,
            MatRef::row_major(layer.w_v, kvw, d).t(),
            false,
        );
        let mut z = vec![0.0f32; rows * qw];
        self.mix(l, fp, &v, &mut z, n_b, seq, false);
        let mut o = vec![0.0f32; rows * d];
        mm(
            &mut o,
            &z,
            rows,
            qw,
            MatRef::row_major(layer.w_o, d, qw).t(),
            false,
        );
        match layer.post_attn_gain {
            Some(g) => frozen_norm_acc(out, &o, g, &fp.post_attn_inv_scale[l], seq),
            None => out.iter_mut().zip(&o).for_each(|(a, b)| *a += b),
        }
    }

    /// Frozen attention of layer `l`, backward: adds `attnᵀ(g)` to `grad` (same layout as forward).
    pub fn attn_backward(
        &self,
        l: usize,
        fp: &FrozenPrompt,
        g: &[f32],
        n_b: usize,
        seq: usize,
        grad: &mut [f32],
    ) {
        let (d, layer) = (self.d_model, &self.layers[l]);
        let (qw, kvw) = (self.n_heads * self.d_head, self.n_kv_heads * self.d_head);
        let rows = n_b * seq;
        let normed;
        let g = match layer.post_attn_gain {
            Some(gain) => {
                let mut t = vec![0.0f32; rows * d];
                frozen_norm_acc(&mut t, g, gain, &fp.post_attn_inv_scale[l], seq);
                normed = t;
                &normed[..]
            }
            None => g,
        };
        let mut gz = vec![0.0f32; rows * qw];
        mm(
            &mut gz,
            g,
            rows,
            d,
            MatRef::row_major(layer.w_o, d, qw),
            false,
        );
        let mut gv = vec![0.0f32; rows * kvw];
        self.mix(l, fp, &gz, &mut gv, n_b, seq, true);
        let mut gx = vec![0.0f32; rows * d];
        mm(
            &mut gx,
            &gv,
            rows,
            kvw,
            MatRef::row_major(layer.w_v, kvw, d),
            false,
        );
        frozen_norm_acc(grad, &gx, layer.attn_gain, &fp.attn_inv_scale[l], seq);
    }

    /// Mixes positions with the frozen pattern. Forward: `z[t,h] = Σ_s P[h,t,s] v[s,kv(h)]` (`src` = v,
    /// `dst` = z). Transposed: `∂v[s,kv(h)] += Σ_t P[h,t,s] ∂z[t,h]` (`src` = ∂z, `dst` = ∂v).
    /// `seq` may be shorter than the prompt (the first `seq` positions: the pattern is causal).
    #[allow(clippy::too_many_arguments)]
    fn mix(
        &self,
        l: usize,
        fp: &FrozenPrompt,
        src: &[f32],
        dst: &mut [f32],
        n_b: usize,
        seq: usize,
        transpose: bool,
    ) {
        let (dh, n_seq) = (self.d_head, fp.seq());
        let group = self.n_heads / self.n_kv_heads.max(1);
        let (qw, kvw) = (self.n_heads * dh, self.n_kv_heads * dh);
        let pat = &fp.patterns[l];
        for b in 0..n_b {
            for h in 0..self.n_heads {
                let (qo, ko) = (h * dh, (h / group) * dh);
                for t in 0..seq {
                    let row = &pat[(h * n_seq + t) * n_seq..(h * n_seq + t) * n_seq + n_seq];
                    for (s, &p) in row.iter().enumerate().take(t + 1) {
                        if p == 0.0 {
                            continue;
                        }
                        let (ri, ro) = if transpose {
                            ((b * seq + t) * qw + qo, (b * seq + s) * kvw + ko)
                        } else {
                            ((b * seq + s) * kvw + ko, (b * seq + t) * qw + qo)
                        };
                        let (src, dst) = (&src[ri..ri + dh], &mut dst[ro..ro + dh]);
                        dst.iter_mut().zip(src).for_each(|(o, &x)| *o += p * x);
                    }
                }
            }
        }
    }
}

/// A transcoder's skip path as the frozen model uses it: `out = W_skip (g ⊙ R_mid · ι)`.
pub(crate) fn skip_forward(
    w_skip: &[f32],
    gain: &[f32],
    inv: &[f32],
    r: &[f32],
    seq: usize,
    out: &mut [f32],
) {
    let d = gain.len();
    let rows = r.len() / d;
    let mut x = vec![0.0f32; r.len()];
    frozen_norm_acc(&mut x, r, gain, inv, seq);
    let d_out = w_skip.len() / d;
    mm(
        out,
        &x,
        rows,
        d,
        MatRef::row_major(w_skip, d_out, d).t(),
        true,
    );
}

/// The skip path's transpose: adds `g ⊙ (W_skipᵀ ∂out) · ι` to `grad`.
pub(crate) fn skip_backward(
    w_skip: &[f32],
    gain: &[f32],
    inv: &[f32],
    g: &[f32],
    seq: usize,
    grad: &mut [f32],
) {
    let d = gain.len();
    let d_out = w_skip.len() / d;
    let rows = g.len() / d_out;
    let mut gx = vec![0.0f32; rows * d];
    mm(
        &mut gx,
        g,
        rows,
        d_out,
        MatRef::row_major(w_skip, d_out, d),
        false,
    );
    frozen_norm_acc(grad, &gx, gain, inv, seq);
}
