//! Model hyper-parameters ([`LlamaConfig`]), read from GGUF metadata by [`crate::gguf`].
//!
//! One configuration type serves every supported family ([`Family`]): the forward pass asks it for
//! the per-family pieces (embedding scale, norms around each sub-layer, MLP activation, attention
//! window and RoPE base of each block).

use serde::{Deserialize, Serialize};

/// The model family, from `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama (`llama`): pre-norm blocks, SwiGLU, global attention everywhere.
    #[default]
    Llama,
    /// Gemma 3 (`gemma3`): embeddings scaled by √d_model, norms before and after attention and MLP,
    /// q/k RMSNorm per head, GeGLU (tanh GELU), sliding-window attention on most blocks.
    Gemma3,
}

impl Family {
    /// The family of a `general.architecture` value, if supported.
    pub fn from_architecture(architecture: &str) -> Option<Family> {
        match architecture {
            "llama" => Some(Family::Llama),
            "gemma3" => Some(Family::Gemma3),
            _ => None,
        }
    }

    /// The `general.architecture` value (also the prefix of the model's metadata keys).
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Gemma3 => "gemma3",
        }
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) · up` (SwiGLU).
    Silu,
    /// `gelu_tanh(gate) · up` (GeGLU with the tanh approximation of GELU).
    GeluTanh,
}

/// Local attention: every block except each `global_every`-th one sees only the last `window`
/// positions and uses its own RoPE base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Positions a query sees, itself included (`<arch>.attention.sliding_window`).
    pub window: usize,
    /// Block `l` is global when `(l + 1) % global_every == 0`.
    pub global_every: usize,
    /// RoPE base θ of the sliding blocks.
    pub rope_theta: f32,
}

/// The validated shape of a supported model (the name stays from when Llama was the only family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `general.architecture` (`llama` or `gemma3`).
    pub architecture: String,
    /// The family that `architecture` selects.
    #[serde(default)]
    pub family: Family,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Number of transformer blocks (`<arch>.block_count`).
    pub n_layers: usize,
    /// Residual-stream width (`<arch>.embedding_length`).
    pub d_model: usize,
    /// MLP hidden width (`<arch>.feed_forward_length`).
    pub d_mlp: usize,
    /// Number of query heads (`<arch>.attention.head_count`).
    pub n_heads: usize,
    /// Number of key/value heads (`<arch>.attention.head_count_kv`, = `n_heads` when absent).
    pub n_kv_heads: usize,
    /// Width of one attention head (`<arch>.attention.key_length`, else `d_model / n_heads`).
    pub d_head: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Maximum context length (`<arch>.context_length`).
    pub context_length: usize,
    /// RoPE base θ of the global blocks (`<arch>.rope.freq_base`, 10 000 when absent).
    pub rope_theta: f32,
    /// RMSNorm ε (`<arch>.attention.layer_norm_rms_epsilon`).
    pub rms_norm_eps: f32,
    /// Whether the unembedding reuses the token embedding (no `output.weight` in the file).
    pub tied_embeddings: bool,
    /// Sliding-window attention, when the family has it.
    #[serde(default)]
    pub sliding_window: Option<SlidingWindow>,
}

impl LlamaConfig {
    /// Number of parameters (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        let kv = self.n_kv_heads * self.d_head;
        let q = self.n_heads * self.d_head;
        let norms = match self.family {
            Family::Llama => 2 * self.d_model,
            Family::Gemma3 => 4 * self.d_model + 2 * self.d_head,
        };
        let per_block = self.d_model * (q + 2 * kv) // q, k, v
            + q * self.d_model // o
            + 3 * self.d_model * self.d_mlp // gate, up, down
            + norms;
        let embed = self.vocab_size * self.d_model;
        let unembed = if self.tied_embeddings { 0 } else { embed };
        self.n_layers * per_block + embed + unembed + self.d_model
    }

    /// Factor applied to the token embeddings (√d_model for Gemma, else 1).
    pub fn embedding_scale(&self) -> f32 {
        match self.family {
            Family::Llama => 1.0,
            Family::Gemma3 => (self.d_model as f32).sqrt(),
        }
    }

    /// The MLP's gate activation.
    pub fn activation(&self) -> Activation {
        match self.family {
            Family::Llama => Activation::Silu,
            Family::Gemma3 => Activation::GeluTanh,
        }
    }

    /// Factor applied to `q · k` before the softmax: `d_head^-1/2` (Gemma 3's
    /// `query_pre_attn_scalar` equals `d_head` for the sizes supported here).
    pub fn attention_scale(&self) -> f32 {
        1.0 / (self.d_head as f32).sqrt()
    }

    /// The attention window of block `layer` (`None`: every earlier position).
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        self.sliding_window
            .as_ref()
            .filter(|s| !(layer + 1).is_multiple_of(s.global_every))
            .map(|s| s.window)
    }

    /// The RoPE base θ of block `layer`.
    pub fn layer_rope_theta(&self, layer: usize) -> f32 {
        match &self.sliding_window {
            Some(s) if !(layer + 1).is_multiple_of(s.global_every) => s.rope_theta,
            _ => self.rope_theta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_blocks_5_11_17_are_global() {
        let cfg = LlamaConfig {
            architecture: "gemma3".into(),
            family: Family::Gemma3,
            name: None,
            n_layers: 18,
            d_model: 640,
            d_mlp: 2048,
            n_heads: 4,
            n_kv_heads: 1,
            d_head: 256,
            vocab_size: 262_144,
            context_length: 32_768,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tied_embeddings: true,
            sliding_window: Some(SlidingWindow {
                window: 512,
                global_every: 6,
                rope_theta: 1e4,
            }),
        };
        let global: Vec<usize> = (0..18).filter(|&l| cfg.layer_window(l).is_none()).collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!(cfg.layer_window(0), Some(512));
        assert_eq!(
            (cfg.layer_rope_theta(4), cfg.layer_rope_theta(5)),
            (1e4, 1e6)
        );
        assert_eq!(cfg.attention_scale(), 1.0 / 16.0);
        assert_eq!(cfg.embedding_scale(), 640f32.sqrt());
    }
}
