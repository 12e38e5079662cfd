//! Test fixtures (feature `test-util`): tiny random Llama and Gemma 3 GGUF files ([`tiny_gemma`])
//! written to a temp dir, with a
//! small GPT-2-style byte-level tokenizer in their metadata, plus corrupt variants for error tests.
//!
//! The tiny model mirrors SmolLM2's layout at toy size: 2 blocks, `d_model` 64, 4 query heads /
//! 2 KV heads of width 16, `d_mlp` 128, tied embeddings, RoPE θ = 10 000, and Q/K rows permuted the
//! way llama.cpp's converter does. Its vocabulary: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`
//! (ids 0–2, token type 3 = control), the 256 byte-level symbols (ids 3–258, byte `b` at `3 + b`),
//! then one token per merge in [`TINY_MERGES`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Family, LlamaConfig};
use crate::error::{LmError, Result};
use crate::gguf::permute_rows;

mod gemma;
pub use gemma::{
    tiny_gemma, tiny_gemma_config, tiny_gemma_with, TINY_GEMMA_CONTROL, TINY_GEMMA_FIRST_PIECE,
    TINY_GEMMA_PIECES, TINY_GEMMA_USER,
};

/// The special tokens, ids 0, 1, 2.
pub const TINY_SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// End-of-sequence id (`<|im_end|>`, as in SmolLM2-Instruct).
pub const TINY_EOS_ID: u32 = 2;
/// BPE merges of the tiny tokenizer, in priority order (byte-level symbols, `Ġ` = space).
pub const TINY_MERGES: [&str; 8] = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ Ġ", "Ġ w"];

/// Weight storage type of a tiny model's matrices (norms are always `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyDType {
    /// Plain `f32`.
    F32,
    /// llama.cpp Q8_0 (32-value blocks, one f16 scale).
    Q8_0,
    /// llama.cpp Q4_1 (32-value blocks, f16 scale and minimum), as in the SmolLM2 file.
    Q4_1,
}

impl TinyDType {
    fn ggml(self) -> GgmlDType {
        match self {
            TinyDType::F32 => GgmlDType::F32,
            TinyDType::Q8_0 => GgmlDType::Q8_0,
            TinyDType::Q4_1 => GgmlDType::Q4_1,
        }
    }
}

/// Variations of the tiny model, mostly to build broken files.
#[derive(Debug, Clone)]
pub struct TinyOptions {
    /// Storage type of the weight matrices.
    pub dtype: TinyDType,
    /// Value of `general.architecture`.
    pub architecture: String,
    /// Whether to omit `output.weight` (tied embeddings).
    pub tied_embeddings: bool,
    /// A tensor to leave out of the file.
    pub skip_tensor: Option<String>,
    /// A metadata key to leave out of the file.
    pub skip_metadata: Option<String>,
}

impl Default for TinyOptions {
    fn default() -> Self {
        TinyOptions {
            dtype: TinyDType::F32,
            architecture: "llama".into(),
            tied_embeddings: true,
            skip_tensor: None,
            skip_metadata: None,
        }
    }
}

/// A tiny model written to a temporary directory (deleted on drop).
#[derive(Debug)]
pub struct TinyLlama {
    /// The directory holding the file.
    pub dir: tempfile::TempDir,
    /// The GGUF file.
    pub path: PathBuf,
    /// The configuration written into its metadata.
    pub config: LlamaConfig,
}

/// Writes a tiny random `f32` Llama GGUF (tied embeddings) into a fresh temp dir.
/// The same `seed` gives the same weights.
pub fn tiny_llama(seed: u64) -> Result<TinyLlama> {
    tiny_llama_with(seed, &TinyOptions::default())
}

/// Like [`tiny_llama`], with options.
pub fn tiny_llama_with(seed: u64, options: &TinyOptions) -> Result<TinyLlama> {
    let dir = fresh_temp_dir()?;
    let path = dir.path().join("tiny-llama.gguf");
    let config = write_tiny_llama(&path, seed, options)?;
    Ok(TinyLlama { dir, path, config })
}

/// A new temporary directory for a tiny model file (removed when dropped).
fn fresh_temp_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|source| LmError::Io {
        path: std::env::temp_dir(),
        source,
    })
}

/// The tiny model's configuration (`tied_embeddings` as given).
pub fn tiny_config(tied_embeddings: bool) -> LlamaConfig {
    LlamaConfig {
        architecture: "llama".into(),
        family: Family::Llama,
        name: Some("tiny-llama".into()),
        n_layers: 2,
        d_model: 64,
        d_mlp: 128,
        n_heads: 4,
        n_kv_heads: 2,
        d_head: 16,
        vocab_size: TINY_SPECIAL_TOKENS.len() + 256 + TINY_MERGES.len(),
        context_length: 256,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings,
        sliding_window: None,
    }
}

/// GPT-2's byte → printable-character map used by byte-level BPE vocabularies.
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// The tiny vocabulary, in id order.
pub fn tiny_vocab() -> Vec<String> {
    let mut tokens: Vec<String> = TINY_SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    tokens.extend((0..=255u8).map(|b| byte_to_char(b).to_string()));
    tokens.extend(TINY_MERGES.iter().map(|m| m.replace(' ', "")));
    tokens
}

/// Writes the tiny model to `path` (atomically) and returns its configuration.
pub fn write_tiny_llama(path: &Path, seed: u64, options: &TinyOptions) -> Result<LlamaConfig> {
    let cfg = tiny_config(options.tied_embeddings);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut matrix = |n_out: usize, n_in: usize| random_matrix(&mut rng, n_out, n_in);
    let (d, q, kv) = (
        cfg.d_model,
        cfg.n_heads * cfg.d_head,
        cfg.n_kv_heads * cfg.d_head,
    );
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let embed: Vec<f32> = matrix(cfg.vocab_size, d).iter().map(|x| x * 4.0).collect();
    tensors.push(("token_embd.weight".into(), vec![cfg.vocab_size, d], embed));
    for l in 0..cfg.n_layers {
        let name = |n: &str| format!("blk.{l}.{n}.weight");
        let wq = permute_rows(&matrix(q, d), cfg.n_heads, cfg.d_head, d);
        let wk = permute_rows(&matrix(kv, d), cfg.n_kv_heads, cfg.d_head, d);
        tensors.push((name("attn_q"), vec![q, d], wq));
        tensors.push((name("attn_k"), vec![kv, d], wk));
        tensors.push((name("attn_v"), vec![kv, d], matrix(kv, d)));
        tensors.push((name("attn_output"), vec![d, q], matrix(d, q)));
        tensors.push((name("ffn_gate"), vec![cfg.d_mlp, d], matrix(cfg.d_mlp, d)));
        tensors.push((name("ffn_up"), vec![cfg.d_mlp, d], matrix(cfg.d_mlp, d)));
        tensors.push((name("ffn_down"), vec![d, cfg.d_mlp], matrix(d, cfg.d_mlp)));
        let norm: Vec<f32> = matrix(1, d).iter().map(|x| 1.0 + 0.2 * x).collect();
        tensors.push((name("attn_norm"), vec![d], norm));
        let norm: Vec<f32> = matrix(1, d).iter().map(|x| 1.0 + 0.2 * x).collect();
        tensors.push((name("ffn_norm"), vec![d], norm));
    }
    let norm: Vec<f32> = matrix(1, d).iter().map(|x| 1.0 + 0.2 * x).collect();
    tensors.push(("output_norm.weight".into(), vec![d], norm));
    if !options.tied_embeddings {
        tensors.push((
            "output.weight".into(),
            vec![cfg.vocab_size, d],
            matrix(cfg.vocab_size, d),
        ));
    }

    let dtype = options.dtype.ggml();
    let tensors = tensors
        .into_iter()
        .map(|(name, shape, data)| {
            let dtype = if shape.len() == 1 {
                GgmlDType::F32
            } else {
                dtype
            };
            (name, shape, data, dtype)
        })
        .collect();

    let u32v = |x: usize| Value::U32(x as u32);
    let tokens = tiny_vocab();
    let token_types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i < TINY_SPECIAL_TOKENS.len() { 3 } else { 1 }))
        .collect();
    let metadata: Vec<(&str, Value)> = vec![
        (
            "general.architecture",
            Value::String(options.architecture.clone()),
        ),
        ("general.name", Value::String("tiny-llama".into())),
        ("llama.block_count", u32v(cfg.n_layers)),
        ("llama.context_length", u32v(cfg.context_length)),
        ("llama.embedding_length", u32v(d)),
        ("llama.feed_forward_length", u32v(cfg.d_mlp)),
        ("llama.attention.head_count", u32v(cfg.n_heads)),
        ("llama.attention.head_count_kv", u32v(cfg.n_kv_heads)),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps),
        ),
        ("llama.rope.dimension_count", u32v(cfg.d_head)),
        ("llama.vocab_size", u32v(cfg.vocab_size)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(token_types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                TINY_MERGES
                    .iter()
                    .map(|m| Value::String(m.to_string()))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(TINY_EOS_ID)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.padding_token_id", Value::U32(TINY_EOS_ID)),
    ];
    write_gguf(path, &metadata, tensors, options)?;
    Ok(LlamaConfig {
        architecture: options.architecture.clone(),
        ..cfg
    })
}

/// A tensor to write: GGUF name, shape (outermost first), values, storage type.
pub(crate) type TensorSpec = (String, Vec<usize>, Vec<f32>, GgmlDType);

/// Writes a GGUF file atomically, leaving out `options.skip_tensor` and `options.skip_metadata`.
pub(crate) fn write_gguf(
    path: &Path,
    metadata: &[(&str, Value)],
    tensors: Vec<TensorSpec>,
    options: &TinyOptions,
) -> Result<()> {
    let mut qtensors = Vec::new();
    for (name, shape, data, dtype) in tensors {
        if options.skip_tensor.as_deref() == Some(name.as_str()) {
            continue;
        }
        let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu)?;
        qtensors.push((name, QTensor::quantize(&t, dtype)?));
    }
    let metadata: Vec<(&str, &Value)> = metadata
        .iter()
        .filter(|(k, _)| options.skip_metadata.as_deref() != Some(*k))
        .map(|(k, v)| (*k, v))
        .collect();
    let qrefs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let io = |source| LmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("gguf.partial");
    {
        let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
        gguf_file::write(&mut w, &metadata, &qrefs)?;
        w.flush().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Uniform random `[n_out, n_in]` weights with variance `1 / n_in`.
pub(crate) fn random_matrix(rng: &mut ChaCha8Rng, n_out: usize, n_in: usize) -> Vec<f32> {
    let scale = (3.0 / n_in as f32).sqrt();
    (0..n_out * n_in)
        .map(|_| rng.random_range(-scale..scale))
        .collect()
}

/// The pieces [`crate::Tokenizer::decode_stream`] yields for `ids`, one per step that completed text.
pub fn stream_pieces(tok: &crate::Tokenizer, ids: &[u32]) -> Result<Vec<String>> {
    let mut stream = tok.decode_stream();
    let mut pieces = Vec::new();
    for &id in ids {
        pieces.extend(stream.step(id)?);
    }
    Ok(pieces)
}

/// Copies the first `keep_bytes` bytes of `src` to `dst` (a truncated download).
pub fn write_truncated(src: &Path, dst: &Path, keep_bytes: usize) -> Result<()> {
    let bytes = std::fs::read(src).map_err(|source| LmError::Io {
        path: src.to_path_buf(),
        source,
    })?;
    std::fs::write(dst, &bytes[..keep_bytes.min(bytes.len())]).map_err(|source| LmError::Io {
        path: dst.to_path_buf(),
        source,
    })
}

/// Writes a file that is not a GGUF (an HTML error page, as a failed download might leave).
pub fn write_not_gguf(path: &Path) -> Result<()> {
    std::fs::write(
        path,
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
    )
    .map_err(|source| LmError::Io {
        path: path.to_path_buf(),
        source,
    })
}
