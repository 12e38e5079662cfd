//! GGUF reading: metadata → [`LlamaConfig`] (Llama or Gemma 3), every tensor dequantized to `f32`.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Parsing is done by
//! `candle_core::quantized::gguf_file`; this module maps its failures to [`LmError`] variants,
//! checks the architecture and required keys, and undoes llama.cpp's Q/K row permutation.
//!
//! llama.cpp's HF→GGUF converter reorders the rows of `attn_q`/`attn_k` within each head from
//! `[half, pair]` to `[pair, half]` so that its "adjacent pairs" RoPE equals HF's "rotate half"
//! RoPE. [`unpermute_rows`] puts the rows back in HF order, so the model applies rotate-half RoPE
//! and its Q/K projections equal the Hugging Face ones.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use rayon::prelude::*;

use crate::config::{Family, LlamaConfig, SlidingWindow};
use crate::error::{LmError, Result};
use crate::quants;

/// A dequantized tensor: row-major `f32` data and its shape (GGUF dims reversed, so a weight
/// matrix is `[n_out, n_in]`).
#[derive(Debug, Clone)]
pub struct F32Tensor {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A GGUF file read into memory: configuration plus all tensors as `f32`.
#[derive(Debug)]
pub struct GgufModel {
    /// The file it came from.
    pub path: PathBuf,
    /// Hyper-parameters from the metadata.
    pub config: LlamaConfig,
    /// Every tensor, by GGUF name, with `attn_q`/`attn_k` rows already in HF order.
    pub tensors: HashMap<String, F32Tensor>,
}

/// Opens `path` and parses its GGUF header (metadata and tensor directory).
///
/// Errors: [`LmError::Io`], [`LmError::NotGguf`] (wrong magic), [`LmError::CorruptGguf`].
/// The tokenizer reads its metadata through this function too.
pub fn read_content(path: &Path) -> Result<(Content, File)> {
    let io = |source| LmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match file.read(&mut magic[n..]).map_err(io)? {
            0 => break,
            k => n += k,
        }
    }
    if n < 4 || &magic != b"GGUF" {
        let detail = if n < 4 {
            format!("the file is only {n} bytes long")
        } else {
            format!("it starts with bytes {magic:02x?}, not `GGUF`")
        };
        return Err(LmError::NotGguf {
            path: path.to_path_buf(),
            detail,
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let content = Content::read(&mut file).map_err(|e| LmError::CorruptGguf {
        path: path.to_path_buf(),
        detail: without_backtrace(&e),
    })?;
    Ok((content, file))
}

/// candle's message without the backtrace its errors capture when `RUST_BACKTRACE` is set.
fn without_backtrace(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(inner),
        other => other.to_string(),
    }
}

/// Metadata accessors with typed errors.
struct Meta<'a> {
    path: &'a Path,
    metadata: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| LmError::MissingMetadata {
                path: self.path.to_path_buf(),
                key: key.to_string(),
            })
    }

    fn bad(&self, key: &str, detail: impl Into<String>) -> LmError {
        LmError::BadMetadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            detail: detail.into(),
        }
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.bad(key, format!("expected a string, got {other:?}"))),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            other => return Err(self.bad(key, format!("expected an integer, got {other:?}"))),
        };
        if n <= 0 {
            return Err(self.bad(key, format!("expected a positive integer, got {n}")));
        }
        usize::try_from(n).map_err(|_| self.bad(key, format!("{n} is too large")))
    }

    fn f32(&self, key: &str) -> Result<f32> {
        match self.get(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => Err(self.bad(key, format!("expected a float, got {other:?}"))),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.metadata.contains_key(key)
    }
}

/// Rows in Gemma 3's layer pattern: every 6th block is global (llama.cpp and HF hard-code it; the
/// optional key `gemma3.attention.sliding_window_pattern` overrides it).
const GEMMA3_GLOBAL_EVERY: usize = 6;
/// RoPE base of Gemma 3's sliding-window blocks (HF `rope_local_base_freq`; not in the GGUF).
const GEMMA3_LOCAL_ROPE_THETA: f32 = 10_000.0;

/// Reads the configuration of a supported model ([`Family`]) from GGUF metadata.
///
/// `vocab_size` and `tied_embeddings` come from the tensor directory.
pub fn read_config(path: &Path, content: &Content) -> Result<LlamaConfig> {
    let meta = Meta {
        path,
        metadata: &content.metadata,
    };
    let architecture = meta.string("general.architecture")?;
    let family = Family::from_architecture(&architecture).ok_or_else(|| {
        LmError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: architecture.clone(),
        }
    })?;
    let a = family.architecture();
    let n_layers = meta.usize(&format!("{a}.block_count"))?;
    let d_model = meta.usize(&format!("{a}.embedding_length"))?;
    let d_mlp = meta.usize(&format!("{a}.feed_forward_length"))?;
    let n_heads = meta.usize(&format!("{a}.attention.head_count"))?;
    let kv_key = format!("{a}.attention.head_count_kv");
    let n_kv_heads = if meta.has(&kv_key) {
        meta.usize(&kv_key)?
    } else {
        n_heads
    };
    let context_length = meta.usize(&format!("{a}.context_length"))?;
    let theta_key = format!("{a}.rope.freq_base");
    let rope_theta = if meta.has(&theta_key) {
        meta.f32(&theta_key)?
    } else {
        10_000.0
    };
    let eps_key = format!("{a}.attention.layer_norm_rms_epsilon");
    let rms_norm_eps = meta.f32(&eps_key)?;
    let head_key = format!("{a}.attention.head_count");
    if n_heads % n_kv_heads != 0 {
        return Err(meta.bad(
            &kv_key,
            format!("{n_kv_heads} KV heads do not divide {n_heads} query heads"),
        ));
    }
    let key_len = format!("{a}.attention.key_length");
    let d_head = if meta.has(&key_len) {
        let d_head = meta.usize(&key_len)?;
        let value_len = format!("{a}.attention.value_length");
        if meta.has(&value_len) && meta.usize(&value_len)? != d_head {
            return Err(meta.bad(
                &value_len,
                "keys and values of different widths are not supported",
            ));
        }
        d_head
    } else if d_model % n_heads == 0 {
        d_model / n_heads
    } else {
        return Err(meta.bad(
            &head_key,
            format!("{n_heads} heads do not divide embedding_length {d_model}"),
        ));
    };
    let rope_key = format!("{a}.rope.dimension_count");
    if meta.has(&rope_key) {
        let rope_dims = meta.usize(&rope_key)?;
        if rope_dims != d_head {
            return Err(meta.bad(
                &rope_key,
                format!("partial RoPE ({rope_dims} of {d_head} dims) is not supported"),
            ));
        }
    }
    if d_head % 2 != 0 {
        return Err(meta.bad(&rope_key, format!("head width {d_head} is odd")));
    }
    if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
        return Err(meta.bad(&eps_key, format!("{rms_norm_eps} is not a positive number")));
    }
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(meta.bad(&theta_key, format!("{rope_theta} is not a positive number")));
    }
    let sliding_window = match family {
        Family::Llama => None,
        Family::Gemma3 => {
            let pattern_key = format!("{a}.attention.sliding_window_pattern");
            let global_every = if meta.has(&pattern_key) {
                meta.usize(&pattern_key)?
            } else {
                GEMMA3_GLOBAL_EVERY
            };
            Some(SlidingWindow {
                window: meta.usize(&format!("{a}.attention.sliding_window"))?,
                global_every,
                rope_theta: GEMMA3_LOCAL_ROPE_THETA,
            })
        }
    };
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| LmError::MissingTensor {
            path: path.to_path_buf(),
            name: "token_embd.weight".into(),
        })?;
    let dims = embd.shape.dims();
    if dims.len() != 2 || dims[1] != d_model {
        return Err(LmError::TensorShape {
            name: "token_embd.weight".into(),
            expected: vec![0, d_model],
            got: dims.to_vec(),
        });
    }
    let name = match content.metadata.get("general.name") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(LlamaConfig {
        architecture,
        family,
        name,
        n_layers,
        d_model,
        d_mlp,
        n_heads,
        n_kv_heads,
        d_head,
        vocab_size: dims[0],
        context_length,
        rope_theta,
        rms_norm_eps,
        tied_embeddings: !content.tensor_infos.contains_key("output.weight"),
        sliding_window,
    })
}

/// Names and shapes (outermost first) of the tensors a model of `cfg`'s family needs.
pub fn expected_tensors(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (d, q, kv) = (
        cfg.d_model,
        cfg.n_heads * cfg.d_head,
        cfg.n_kv_heads * cfg.d_head,
    );
    let mut out = vec![
        ("token_embd.weight".to_string(), vec![cfg.vocab_size, d]),
        ("output_norm.weight".to_string(), vec![d]),
    ];
    if !cfg.tied_embeddings {
        out.push(("output.weight".to_string(), vec![cfg.vocab_size, d]));
    }
    for l in 0..cfg.n_layers {
        for (name, shape) in [
            ("attn_norm", vec![d]),
            ("attn_q", vec![q, d]),
            ("attn_k", vec![kv, d]),
            ("attn_v", vec![kv, d]),
            ("attn_output", vec![d, q]),
            ("ffn_norm", vec![d]),
            ("ffn_gate", vec![cfg.d_mlp, d]),
            ("ffn_up", vec![cfg.d_mlp, d]),
            ("ffn_down", vec![d, cfg.d_mlp]),
        ] {
            out.push((format!("blk.{l}.{name}.weight"), shape));
        }
        if cfg.family == Family::Gemma3 {
            for (name, shape) in [
                ("attn_q_norm", vec![cfg.d_head]),
                ("attn_k_norm", vec![cfg.d_head]),
                ("post_attention_norm", vec![d]),
                ("post_ffw_norm", vec![d]),
            ] {
                out.push((format!("blk.{l}.{name}.weight"), shape));
            }
        }
    }
    out
}

/// Reads a supported GGUF (Llama or Gemma 3): checks metadata and tensor shapes, dequantizes every tensor the
/// model needs to `f32` (in parallel), and un-permutes `attn_q`/`attn_k`.
pub fn load(path: &Path) -> Result<GgufModel> {
    let (content, mut file) = read_content(path)?;
    let config = read_config(path, &content)?;
    let wanted = expected_tensors(&config);
    let mut raw = Vec::with_capacity(wanted.len());
    for (name, shape) in &wanted {
        let data = read_raw(&mut file, path, &content, name, Some(shape))?;
        raw.push((name.clone(), shape.clone(), data));
    }
    let tensors = raw
        .into_par_iter()
        .map(|(name, shape, raw)| {
            let mut data = raw.dequantize()?;
            // Only llama.cpp's Llama converter permutes Q/K (Gemma's "rotate half" rows are as in HF).
            let llama = config.family == Family::Llama;
            if llama && name.ends_with(".attn_q.weight") {
                data = unpermute_rows(&data, config.n_heads, config.d_head, config.d_model);
            } else if llama && name.ends_with(".attn_k.weight") {
                data = unpermute_rows(&data, config.n_kv_heads, config.d_head, config.d_model);
            }
            Ok((name, F32Tensor { shape, data }))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    tracing::info!(
        path = %path.display(),
        n_tensors = content.tensor_infos.len(),
        n_layers = config.n_layers,
        d_model = config.d_model,
        "loaded GGUF"
    );
    Ok(GgufModel {
        path: path.to_path_buf(),
        config,
        tensors,
    })
}

/// A tensor's stored bytes, not yet dequantized.
enum RawTensor {
    /// Whole blocks of a type [`quants::dequantize`] implements.
    Blocks(GgmlDType, Vec<u8>),
    /// Another type (Q2_K, Q3_K, Q8_1), read and dequantized by candle.
    Candle(QTensor),
}

impl RawTensor {
    fn dequantize(self) -> Result<Vec<f32>> {
        match self {
            RawTensor::Blocks(dtype, bytes) => quants::dequantize(dtype, &bytes),
            RawTensor::Candle(q) => Ok(q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?),
        }
    }
}

/// Reads the stored bytes of tensor `name`, checking its shape against `expected` when given.
fn read_raw(
    file: &mut File,
    path: &Path,
    content: &Content,
    name: &str,
    expected: Option<&Vec<usize>>,
) -> Result<RawTensor> {
    let info = content
        .tensor_infos
        .get(name)
        .ok_or_else(|| LmError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
        })?;
    if let Some(shape) = expected.filter(|s| info.shape.dims() != s.as_slice()) {
        return Err(LmError::TensorShape {
            name: name.to_string(),
            expected: shape.clone(),
            got: info.shape.dims().to_vec(),
        });
    }
    let corrupt = |detail: String| LmError::CorruptGguf {
        path: path.to_path_buf(),
        detail: format!("tensor `{name}`: {detail}"),
    };
    if !quants::is_supported(info.ggml_dtype) {
        let q = info
            .read(file, content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| corrupt(e.to_string()))?;
        return Ok(RawTensor::Candle(q));
    }
    let n_bytes = quants::byte_len(info.ggml_dtype, info.shape.elem_count())
        .map_err(|e| corrupt(e.to_string()))?;
    let mut bytes = vec![0u8; n_bytes];
    file.seek(SeekFrom::Start(content.tensor_data_offset + info.offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| corrupt(format!("reading {n_bytes} bytes: {e}")))?;
    Ok(RawTensor::Blocks(info.ggml_dtype, bytes))
}

/// Reads one tensor of a GGUF file, dequantized to `f32` as stored (no row permutation), shape
/// outermost first.
pub fn read_tensor(path: &Path, name: &str) -> Result<F32Tensor> {
    let (content, mut file) = read_content(path)?;
    let raw = read_raw(&mut file, path, &content, name, None)?;
    let shape = content.tensor_infos[name].shape.dims().to_vec();
    Ok(F32Tensor {
        shape,
        data: raw.dequantize()?,
    })
}

/// The rows of llama.cpp's Q/K permutation as `(gguf, hf)` pairs: within each head, GGUF row `2*j + i` is HF
/// row `i * d_head/2 + j` (`i` ∈ {0, 1}, `j` < `d_head/2`).
fn gguf_hf_row_pairs(n_heads: usize, d_head: usize) -> impl Iterator<Item = (usize, usize)> {
    let half = d_head / 2;
    (0..n_heads).flat_map(move |h| {
        (0..half).flat_map(move |j| {
            (0..2).map(move |i| (h * d_head + 2 * j + i, h * d_head + i * half + j))
        })
    })
}

/// A copy of `w` (rows of `n_in`) with row `src` moved to row `dst` for each `(dst, src)`.
fn move_rows(w: &[f32], n_in: usize, moves: impl Iterator<Item = (usize, usize)>) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for (dst, src) in moves {
        out[dst * n_in..(dst + 1) * n_in].copy_from_slice(&w[src * n_in..(src + 1) * n_in]);
    }
    out
}

/// Undoes llama.cpp's Q/K permutation: within each head, GGUF row `2*j + i` is HF row
/// `i * d_head/2 + j` (`i` ∈ {0, 1}, `j` < `d_head/2`). `w` is `[n_heads * d_head, n_in]`.
pub fn unpermute_rows(w: &[f32], n_heads: usize, d_head: usize, n_in: usize) -> Vec<f32> {
    let moves = gguf_hf_row_pairs(n_heads, d_head).map(|(gguf, hf)| (hf, gguf));
    move_rows(w, n_in, moves)
}

/// The inverse of [`unpermute_rows`]: HF row order → llama.cpp row order (used to write GGUF files).
pub fn permute_rows(w: &[f32], n_heads: usize, d_head: usize, n_in: usize) -> Vec<f32> {
    move_rows(w, n_in, gguf_hf_row_pairs(n_heads, d_head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_moves_rows() {
        let (n_heads, d_head, n_in) = (3, 4, 2);
        let w: Vec<f32> = (0..n_heads * d_head * n_in).map(|x| x as f32).collect();
        let p = permute_rows(&w, n_heads, d_head, n_in);
        assert_eq!(unpermute_rows(&p, n_heads, d_head, n_in), w);
        // HF head 0 rows [r0, r1 | r2, r3] → GGUF [r0, r2, r1, r3].
        assert_eq!(&p[..8], &[0., 1., 4., 5., 2., 3., 6., 7.]);
    }
}
