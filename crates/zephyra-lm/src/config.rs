//! Model hyper-parameters ([`LlamaConfig`]), read from GGUF metadata by [`crate::gguf`].

use serde::{Deserialize, Serialize};

/// The validated shape of a Llama-family model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `general.architecture` (always `llama` today).
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Number of transformer blocks (`llama.block_count`).
    pub n_layers: usize,
    /// Residual-stream width (`llama.embedding_length`).
    pub d_model: usize,
    /// MLP hidden width (`llama.feed_forward_length`).
    pub d_mlp: usize,
    /// Number of query heads (`llama.attention.head_count`).
    pub n_heads: usize,
    /// Number of key/value heads (`llama.attention.head_count_kv`, = `n_heads` when absent).
    pub n_kv_heads: usize,
    /// Width of one attention head (`d_model / n_heads`, or `llama.rope.dimension_count`).
    pub d_head: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Maximum context length (`llama.context_length`).
    pub context_length: usize,
    /// RoPE base θ (`llama.rope.freq_base`, 10 000 when absent).
    pub rope_theta: f32,
    /// RMSNorm ε (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_norm_eps: f32,
    /// Whether the unembedding reuses the token embedding (no `output.weight` in the file).
    pub tied_embeddings: bool,
}

impl LlamaConfig {
    /// Number of parameters (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        let kv = self.n_kv_heads * self.d_head;
        let q = self.n_heads * self.d_head;
        let per_block = self.d_model * (q + 2 * kv) // q, k, v
            + q * self.d_model // o
            + 3 * self.d_model * self.d_mlp // gate, up, down
            + 2 * self.d_model; // two norms
        let embed = self.vocab_size * self.d_model;
        let unembed = if self.tied_embeddings { 0 } else { embed };
        self.n_layers * per_block + embed + unembed + self.d_model
    }
}
