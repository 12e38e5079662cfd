//! The Llama model: weights ([`Llama`]) and the batched, hookable forward pass.
//!
//! Architecture: Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models"
//! (arXiv:2302.13971) — pre-RMSNorm blocks, rotary position embeddings (Su et al. 2021,
//! arXiv:2104.09864, "rotate half" form as in Hugging Face transformers), SwiGLU MLP, grouped-query
//! attention (Ainslie et al. 2023, arXiv:2305.13245).
//!
//! Weights are `f32`, stored `[n_out, n_in]` as in the GGUF file; Q/K/V and gate/up are fused
//! into one matrix each so every block runs four large matrix products over all `batch × seq` rows.

mod attention;
mod forward;
pub(crate) mod kernels;

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::config::LlamaConfig;
use crate::error::{LmError, Result};
use crate::gguf::{self, F32Tensor, GgufModel};
use crate::hooks::{Activations, HookPoint};

pub(crate) use attention::KvCache;

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Logits {
    /// No logits: the pass stops after the deepest hook.
    #[default]
    None,
    /// Logits at the last (non-padding) position of each sequence: `[batch, vocab]`.
    Last,
    /// Logits at every position: `[batch, seq, vocab]`.
    All,
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Logits as asked for by [`Logits`] (`None` for [`Logits::None`]).
    pub logits: Option<Tensor>,
    /// The captured activations, each `[batch, seq, d_model]` (`seq` = the longest sequence).
    pub activations: Activations,
    /// The length of each sequence; positions at or beyond it are padding and hold no meaning.
    pub lengths: Vec<usize>,
}

/// A linear layer `y = x · wᵀ` with `w` stored `[n_out, n_in]`.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) w: Vec<f32>,
    pub(crate) n_in: usize,
    pub(crate) n_out: usize,
}

impl Linear {
    /// `dst[rows, n_out] = x[rows, n_in] · wᵀ`, with `x` rows `x_stride` apart.
    pub(crate) fn forward(&self, dst: &mut [f32], x: &[f32], x_stride: usize, rows: usize) {
        let par = gemm::Parallelism::Rayon(0);
        kernels::matmul_nt(dst, x, x_stride, &self.w, rows, self.n_out, self.n_in, par);
    }

    /// Stacks the rows of several `[n_out_i, n_in]` tensors into one layer.
    fn stack(parts: &[&F32Tensor]) -> Linear {
        let n_in = parts[0].shape[1];
        let n_out = parts.iter().map(|t| t.shape[0]).sum();
        let mut w = Vec::with_capacity(n_in * n_out);
        for t in parts {
            w.extend_from_slice(&t.data);
        }
        Linear { w, n_in, n_out }
    }
}

/// One transformer block's weights.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) attn_norm: Vec<f32>,
    /// Rows: q (n_heads·d_head), k (n_kv·d_head), v (n_kv·d_head); HF row order.
    pub(crate) qkv: Linear,
    pub(crate) o: Linear,
    pub(crate) mlp_norm: Vec<f32>,
    /// Rows: gate (d_mlp), then up (d_mlp).
    pub(crate) gate_up: Linear,
    pub(crate) down: Linear,
}

/// A Llama-family model with `f32` weights, ready to run.
///
/// ```no_run
/// use zephyra_lm::{model::Logits, HookPoint, Hooks, Llama};
/// # fn main() -> zephyra_lm::Result<()> {
/// let llama = Llama::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let mut hooks = Hooks::new();
/// hooks.capture(HookPoint::ResidPre(15));
/// let out = llama.forward(&[vec![504u32, 3575, 282]], &mut hooks, Logits::None)?;
/// let acts = out.activations.get(HookPoint::ResidPre(15)).unwrap(); // [1, 3, 576]
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Llama {
    pub(crate) config: LlamaConfig,
    pub(crate) path: PathBuf,
    pub(crate) n_tensors: usize,
    /// `[vocab, d_model]`.
    pub(crate) embed: Vec<f32>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) final_norm: Vec<f32>,
    /// `[vocab, d_model]`; `None` when tied to `embed`.
    pub(crate) unembed: Option<Vec<f32>>,
    /// Work buffers reused between passes (one set; concurrent passes allocate their own).
    pub(crate) buffers: std::sync::Mutex<Option<forward::Buffers>>,
}

impl Llama {
    /// Loads a Llama-family GGUF file, dequantizing every tensor to `f32`.
    ///
    /// Errors: [`LmError::NotGguf`], [`LmError::CorruptGguf`] (truncated file),
    /// [`LmError::UnsupportedArchitecture`], [`LmError::MissingMetadata`],
    /// [`LmError::MissingTensor`], [`LmError::TensorShape`], [`LmError::Io`].
    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Llama> {
        let path = path.as_ref();
        let _span = tracing::info_span!("load_gguf", path = %path.display()).entered();
        let GgufModel {
            path,
            config,
            mut tensors,
        } = gguf::load(path)?;
        let n_tensors = tensors.len();
        let mut take = |name: &str| {
            tensors.remove(name).ok_or_else(|| LmError::MissingTensor {
                path: path.clone(),
                name: name.to_string(),
            })
        };
        let embed = take("token_embd.weight")?.data;
        let final_norm = take("output_norm.weight")?.data;
        let unembed = if config.tied_embeddings {
            None
        } else {
            Some(take("output.weight")?.data)
        };
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let mut t = |n: &str| take(&format!("blk.{l}.{n}.weight"));
            let attn_norm = t("attn_norm")?.data;
            let (q, k, v) = (t("attn_q")?, t("attn_k")?, t("attn_v")?);
            let o = t("attn_output")?;
            let mlp_norm = t("ffn_norm")?.data;
            let (gate, up, down) = (t("ffn_gate")?, t("ffn_up")?, t("ffn_down")?);
            blocks.push(Block {
                attn_norm,
                qkv: Linear::stack(&[&q, &k, &v]),
                o: Linear::stack(&[&o]),
                mlp_norm,
                gate_up: Linear::stack(&[&gate, &up]),
                down: Linear::stack(&[&down]),
            });
        }
        Ok(Llama {
            config,
            path,
            n_tensors,
            embed,
            blocks,
            final_norm,
            unembed,
            buffers: Default::default(),
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tensors the model uses from the file.
    pub fn n_tensors(&self) -> usize {
        self.n_tensors
    }

    /// Every hook point of this model, in forward-pass order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.config.n_layers)
    }

    /// Parses a hook name and checks it exists in this model.
    pub fn hook_point(&self, name: &str) -> Result<HookPoint> {
        HookPoint::parse_for(name, self.config.n_layers)
    }

    /// The unembedding matrix `[vocab, d_model]`, row-major: logits = `ln_final.hook_normalized · Wᵀ`
    /// (the token embedding when tied).
    pub fn unembedding(&self) -> &[f32] {
        self.unembed.as_deref().unwrap_or(&self.embed)
    }

    /// The token embedding `[vocab, d_model]`, row-major.
    pub fn token_embedding(&self) -> &[f32] {
        &self.embed
    }

    /// The weight of the final RMSNorm, `[d_model]`.
    pub fn final_norm_weight(&self) -> &[f32] {
        &self.final_norm
    }
}
