//! The model: weights ([`Llama`]) and the batched, hookable forward pass, for two families.
//!
//! Llama: Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models"
//! (arXiv:2302.13971) — pre-RMSNorm blocks, rotary position embeddings (Su et al. 2021,
//! arXiv:2104.09864, "rotate half" form as in Hugging Face transformers), SwiGLU MLP, grouped-query
//! attention (Ainslie et al. 2023, arXiv:2305.13245).
//!
//! Gemma 3: Gemma Team 2025, "Gemma 3 Technical Report" (arXiv:2503.19786) — the same skeleton with
//! embeddings scaled by √d_model, RMSNorms before *and* after attention and MLP, q/k RMSNorm per
//! head, GeGLU MLP, and sliding-window attention (local RoPE base 10k) on all blocks but every
//! sixth. [`crate::config::LlamaConfig`] supplies these per-family pieces; there is one forward pass.
//!
//! Weights are `f32` (or bf16, see [`Precision`]), stored `[n_out, n_in]` as in the GGUF file; Q/K/V and gate/up are fused
//! into one matrix each so every block runs four large matrix products over all `batch × seq` rows.

mod attention;
mod forward;
pub(crate) mod kernels;
mod linear;
mod scoring;
mod weights;

pub use kernels::bf16::{Bf16Kernel, FORCE_PORTABLE_ENV};
pub use linear::Precision;
pub use scoring::{log_softmax_at, LOGIT_ROWS};
pub use weights::BlockWeights;

pub(crate) use linear::Linear;

use kernels::bf16::Bf16Matrix;

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::config::{Family, LlamaConfig};
use crate::error::{LmError, Result};
use crate::gguf::{self, GgufModel};
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
    /// Gemma 3 only: the extra norms.
    pub(crate) extra_norms: Option<ExtraNorms>,
}

/// The norms Gemma 3 adds to a Llama block.
#[derive(Debug)]
pub(crate) struct ExtraNorms {
    /// Per-head RMSNorm weights of queries and keys, `[d_head]` each.
    pub(crate) q_norm: Vec<f32>,
    pub(crate) k_norm: Vec<f32>,
    /// Norms of the attention and MLP outputs before they join the residual stream, `[d_model]`.
    pub(crate) post_attn: Vec<f32>,
    pub(crate) post_mlp: Vec<f32>,
}

/// A Llama or Gemma 3 model with `f32` weights, ready to run.
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
    /// The unembedding packed once in bf16 when the linear layers are bf16 (logits are then
    /// bf16 products with `f32` accumulation); `None` in f32.
    pub(crate) unembed_bf16: Option<Bf16Matrix>,
    /// The format of the linear layers.
    pub(crate) precision: Precision,
    /// Work buffers reused between passes (one set; concurrent passes allocate their own).
    pub(crate) buffers: std::sync::Mutex<Option<forward::Buffers>>,
}

impl Llama {
    /// Loads a Llama or Gemma 3 GGUF file, dequantizing every tensor to `f32`.
    ///
    /// Errors: [`LmError::NotGguf`], [`LmError::CorruptGguf`] (truncated file),
    /// [`LmError::UnsupportedArchitecture`], [`LmError::MissingMetadata`],
    /// [`LmError::MissingTensor`], [`LmError::TensorShape`], [`LmError::Io`].
    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Llama> {
        Llama::load_gguf_with_precision(path, Precision::F32)
    }

    /// Loads a GGUF file like [`Llama::load_gguf`], storing the linear layers in `precision`
    /// (bf16: re-quantized from the dequantized `f32`, which is then dropped).
    pub fn load_gguf_with_precision(path: impl AsRef<Path>, precision: Precision) -> Result<Llama> {
        let path = path.as_ref();
        let _span = tracing::info_span!("load_gguf", path = %path.display(), %precision).entered();
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
            let extra_norms = match config.family {
                Family::Llama => None,
                Family::Gemma3 => Some(ExtraNorms {
                    q_norm: t("attn_q_norm")?.data,
                    k_norm: t("attn_k_norm")?.data,
                    post_attn: t("post_attention_norm")?.data,
                    post_mlp: t("post_ffw_norm")?.data,
                }),
            };
            blocks.push(Block {
                attn_norm,
                qkv: Linear::stack(&[&q, &k, &v], precision),
                o: Linear::stack(&[&o], precision),
                mlp_norm,
                gate_up: Linear::stack(&[&gate, &up], precision),
                down: Linear::stack(&[&down], precision),
                extra_norms,
            });
        }
        let unembed_bf16 = (precision == Precision::Bf16).then(|| {
            let w = unembed.as_deref().unwrap_or(&embed);
            Bf16Matrix::from_f32(w, config.vocab_size, config.d_model)
        });
        Ok(Llama {
            config,
            path,
            n_tensors,
            embed,
            blocks,
            final_norm,
            unembed,
            unembed_bf16,
            precision,
            buffers: Default::default(),
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The number format of the linear layers.
    pub fn precision(&self) -> Precision {
        debug_assert!(self
            .blocks
            .iter()
            .all(|b| b.down.precision() == self.precision));
        self.precision
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tensors the model uses from the file.
    pub fn n_tensors(&self) -> usize {
        self.n_tensors
    }

    /// The residual-stream hook points of this model (`[batch, seq, d_model]`), in forward-pass
    /// order; [`Llama::every_hook_point`] adds the hooks inside the blocks.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.config.n_layers)
    }

    /// Every hook point of this model, in forward-pass order.
    pub fn every_hook_point(&self) -> Vec<HookPoint> {
        HookPoint::all_for(&self.config)
    }

    /// Parses a hook name and checks it exists in this model.
    pub fn hook_point(&self, name: &str) -> Result<HookPoint> {
        name.parse::<HookPoint>()?.validate_for(&self.config)
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

    /// The weight of the final RMSNorm, `[d_model]`: `ln_final.hook_normalized =
    /// hook_resid_post / ln_final.hook_scale · w` (Gemma: `1 + w` of Hugging Face, as stored).
    pub fn final_norm_weight(&self) -> &[f32] {
        &self.final_norm
    }
}
