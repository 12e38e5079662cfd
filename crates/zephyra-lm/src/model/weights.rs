//! Read access to the weights for analyses that take the model apart (attribution graphs):
//! [`BlockWeights`], one block's matrices and norm weights as `f32` views.
//!
//! Orientation: every matrix is row-major `[n_out, n_in]`, as in the GGUF file and in Hugging
//! Face's `nn.Linear.weight`: `y = x · Wᵀ`, so row `i` is the vector whose dot product with the
//! input gives output `i`. (TransformerLens stores the transposes, per head: its
//! `W_Q[h] = w_q[h·d_head..(h+1)·d_head, :]ᵀ` and `W_O[h] = w_o[:, h·d_head..(h+1)·d_head]ᵀ`.)
//!
//! Norm weights are the multipliers the forward pass applies: `out = x / scale · w`. For Gemma 3
//! the GGUF file already stores Hugging Face's `1 + weight` (llama.cpp adds the 1 on conversion),
//! so no further `1 +` is applied anywhere.

use super::Llama;
use crate::error::{LmError, Result};

/// One block's weights, borrowed from the model. Shapes use `q = n_heads · d_head` and
/// `kv = n_kv_heads · d_head`.
#[derive(Debug, Clone, Copy)]
pub struct BlockWeights<'a> {
    /// `ln1` (attention norm) weight `[d_model]`.
    pub ln1: &'a [f32],
    /// `ln2` (MLP norm) weight `[d_model]`.
    pub ln2: &'a [f32],
    /// Gemma 3's post-attention norm weight `[d_model]` (`ln1_post`), `None` for Llama.
    pub ln1_post: Option<&'a [f32]>,
    /// Gemma 3's post-MLP norm weight `[d_model]` (`ln2_post`), `None` for Llama.
    pub ln2_post: Option<&'a [f32]>,
    /// Gemma 3's per-head query and key norm weights `[d_head]`, `None` for Llama.
    pub q_norm: Option<&'a [f32]>,
    /// See [`BlockWeights::q_norm`].
    pub k_norm: Option<&'a [f32]>,
    /// Query projection `[q, d_model]` (rows head by head).
    pub w_q: &'a [f32],
    /// Key projection `[kv, d_model]`.
    pub w_k: &'a [f32],
    /// Value projection `[kv, d_model]`; query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
    pub w_v: &'a [f32],
    /// Output projection `[d_model, q]`: `hook_attn_out` (Llama; Gemma: before `ln1_post`)
    /// `= hook_z · w_oᵀ`.
    pub w_o: &'a [f32],
    /// MLP gate `[d_mlp, d_model]`: `mlp.hook_post = act(x · w_gateᵀ) ⊙ (x · w_upᵀ)`.
    pub w_gate: &'a [f32],
    /// MLP up projection `[d_mlp, d_model]`.
    pub w_up: &'a [f32],
    /// MLP down projection `[d_model, d_mlp]`: MLP output (Gemma: before `ln2_post`)
    /// `= mlp.hook_post · w_downᵀ`.
    pub w_down: &'a [f32],
}

impl Llama {
    /// The weights of block `layer` (orientation and norms: the `model::weights` notes on [`BlockWeights`]).
    ///
    /// Errors: [`LmError::LayerOutOfRange`] when the model has no such block.
    pub fn block_weights(&self, layer: usize) -> Result<BlockWeights<'_>> {
        let blk = self
            .blocks
            .get(layer)
            .ok_or_else(|| LmError::LayerOutOfRange {
                hook: format!("blocks.{layer}"),
                n_layers: self.blocks.len(),
            })?;
        let cfg = &self.config;
        let (q, kv, d) = (
            cfg.n_heads * cfg.d_head,
            cfg.n_kv_heads * cfg.d_head,
            cfg.d_model,
        );
        let (w_q, rest) = blk.qkv.w.split_at(q * d);
        let (w_k, w_v) = rest.split_at(kv * d);
        let (w_gate, w_up) = blk.gate_up.w.split_at(cfg.d_mlp * d);
        let extra = blk.extra_norms.as_ref();
        Ok(BlockWeights {
            ln1: &blk.attn_norm,
            ln2: &blk.mlp_norm,
            ln1_post: extra.map(|e| e.post_attn.as_slice()),
            ln2_post: extra.map(|e| e.post_mlp.as_slice()),
            q_norm: extra.map(|e| e.q_norm.as_slice()),
            k_norm: extra.map(|e| e.k_norm.as_slice()),
            w_q,
            w_k,
            w_v,
            w_o: &blk.o.w,
            w_gate,
            w_up,
            w_down: &blk.down.w,
        })
    }

    /// The factor applied to the token embeddings before block 0 (√d_model for Gemma 3, else 1):
    /// `blocks.0.hook_resid_pre = embedding_scale · token_embedding()[id]`.
    pub fn embedding_scale(&self) -> f32 {
        self.config.embedding_scale()
    }
}
