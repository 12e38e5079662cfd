//! Tiny random Gemma 3 GGUF files: Gemma 3's layout at toy size, with a SentencePiece-style
//! vocabulary in the metadata.
//!
//! 3 blocks, `d_model` 256, 4 query heads / 1 KV head of width 64, `d_mlp` 512, tied embeddings,
//! sliding window 4 on blocks 0 and 1 (`gemma3.attention.sliding_window_pattern` = 3, so block 2 is
//! global), RoPE θ 1M global / 10k local. Unless `dtype` is [`TinyDType::F32`], the matrices use the
//! four types of the real Gemma 3 270M file: Q8_0 (embedding, `attn_v`), Q5_0 (`attn_q`, `attn_k`,
//! `ffn_gate`), Q4_K (`attn_output`, `ffn_up`) and Q6_K (`ffn_down`); norms are F32.
//!
//! Vocabulary: control pieces `<pad> <eos> <bos> <unk> <start_of_turn> <end_of_turn>` (ids 0–5),
//! user-defined `"\n"` and `"  "` (6, 7), the 256 byte pieces `<0x00>`… (8–263), then
//! [`TINY_GEMMA_PIECES`] with descending scores.

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    fresh_temp_dir, random_matrix, write_gguf, TensorSpec, TinyDType, TinyLlama, TinyOptions,
};
use crate::config::{Family, LlamaConfig, SlidingWindow};
use crate::error::Result;

/// Control pieces, ids 0–5.
pub const TINY_GEMMA_CONTROL: [&str; 6] = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
];
/// User-defined pieces (whitespace runs), ids 6 and 7.
pub const TINY_GEMMA_USER: [&str; 2] = ["\n", "  "];
/// Normal pieces from id 264 on, best score first.
pub const TINY_GEMMA_PIECES: [&str; 12] = [
    "▁", "t", "h", "e", "a", "n", "d", "▁t", "he", "▁the", "an", "▁and",
];
/// Id of the first normal piece.
pub const TINY_GEMMA_FIRST_PIECE: u32 = 264;

/// The tiny Gemma's configuration.
pub fn tiny_gemma_config() -> LlamaConfig {
    LlamaConfig {
        architecture: "gemma3".into(),
        family: Family::Gemma3,
        name: Some("tiny-gemma".into()),
        n_layers: 3,
        d_model: 256,
        d_mlp: 512,
        n_heads: 4,
        n_kv_heads: 1,
        d_head: 64,
        vocab_size: TINY_GEMMA_FIRST_PIECE as usize + TINY_GEMMA_PIECES.len(),
        context_length: 128,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: Some(SlidingWindow {
            window: 4,
            global_every: 3,
            rope_theta: 1e4,
        }),
    }
}

/// Writes a tiny random Gemma 3 GGUF into a fresh temp dir (`options.architecture` is ignored; the
/// skip options build broken files). The same `seed` gives the same weights.
pub fn tiny_gemma_with(seed: u64, options: &TinyOptions) -> Result<TinyLlama> {
    let dir = fresh_temp_dir()?;
    let path = dir.path().join("tiny-gemma.gguf");
    let config = tiny_gemma_config();
    let cfg = &config;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (d, q, kv) = (cfg.d_model, cfg.n_heads * cfg.d_head, cfg.d_head);
    let quant = |t: GgmlDType| {
        if options.dtype == TinyDType::F32 {
            GgmlDType::F32
        } else {
            t
        }
    };
    let mut tensors: Vec<TensorSpec> = Vec::new();
    let mut matrix = |name: String, n_out: usize, n_in: usize, t: GgmlDType| {
        (
            name,
            vec![n_out, n_in],
            random_matrix(&mut rng, n_out, n_in),
            quant(t),
        )
    };
    tensors.push(matrix(
        "token_embd.weight".into(),
        cfg.vocab_size,
        d,
        GgmlDType::Q8_0,
    ));
    for l in 0..cfg.n_layers {
        let name = |n: &str| format!("blk.{l}.{n}.weight");
        tensors.push(matrix(name("attn_q"), q, d, GgmlDType::Q5_0));
        tensors.push(matrix(name("attn_k"), kv, d, GgmlDType::Q5_0));
        tensors.push(matrix(name("attn_v"), kv, d, GgmlDType::Q8_0));
        tensors.push(matrix(name("attn_output"), d, q, GgmlDType::Q4K));
        tensors.push(matrix(name("ffn_gate"), cfg.d_mlp, d, GgmlDType::Q5_0));
        tensors.push(matrix(name("ffn_up"), cfg.d_mlp, d, GgmlDType::Q4K));
        tensors.push(matrix(name("ffn_down"), d, cfg.d_mlp, GgmlDType::Q6K));
    }
    // Norm weights as llama.cpp stores Gemma's (the "+1" already applied): around 1.
    let mut norm = |name: String, n: usize| -> TensorSpec {
        let w = (0..n)
            .map(|_| 1.0 + 0.2 * rng.random_range(-1.0f32..1.0))
            .collect();
        (name, vec![n], w, GgmlDType::F32)
    };
    for l in 0..cfg.n_layers {
        for (n, width) in [
            ("attn_norm", d),
            ("attn_q_norm", cfg.d_head),
            ("attn_k_norm", cfg.d_head),
            ("post_attention_norm", d),
            ("ffn_norm", d),
            ("post_ffw_norm", d),
        ] {
            tensors.push(norm(format!("blk.{l}.{n}.weight"), width));
        }
    }
    tensors.push(norm("output_norm.weight".into(), d));

    let u32v = |x: usize| Value::U32(x as u32);
    let a = "gemma3";
    let window = cfg.sliding_window.as_ref().map_or(0, |s| s.window);
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String("tiny-gemma".into())),
        (format!("{a}.block_count"), u32v(cfg.n_layers)),
        (format!("{a}.context_length"), u32v(cfg.context_length)),
        (format!("{a}.embedding_length"), u32v(d)),
        (format!("{a}.feed_forward_length"), u32v(cfg.d_mlp)),
        (format!("{a}.attention.head_count"), u32v(cfg.n_heads)),
        (format!("{a}.attention.head_count_kv"), u32v(cfg.n_kv_heads)),
        (format!("{a}.attention.key_length"), u32v(cfg.d_head)),
        (format!("{a}.attention.value_length"), u32v(cfg.d_head)),
        (format!("{a}.attention.sliding_window"), u32v(window)),
        (format!("{a}.attention.sliding_window_pattern"), u32v(3)),
        (format!("{a}.rope.freq_base"), Value::F32(cfg.rope_theta)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps),
        ),
    ];
    metadata.extend(tiny_gemma_tokenizer_metadata());
    let metadata: Vec<(&str, Value)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    write_gguf(&path, &metadata, tensors, options)?;
    Ok(TinyLlama { dir, path, config })
}

/// Writes a tiny random Gemma 3 GGUF (the four quantization types of the real file).
pub fn tiny_gemma(seed: u64) -> Result<TinyLlama> {
    tiny_gemma_with(
        seed,
        &TinyOptions {
            dtype: TinyDType::Q8_0,
            architecture: "gemma3".into(),
            ..TinyOptions::default()
        },
    )
}

/// The tiny SentencePiece vocabulary as `tokenizer.ggml.*` metadata.
fn tiny_gemma_tokenizer_metadata() -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = TINY_GEMMA_CONTROL.iter().map(|s| s.to_string()).collect();
    tokens.extend(TINY_GEMMA_USER.iter().map(|s| s.to_string()));
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(TINY_GEMMA_PIECES.iter().map(|s| s.to_string()));
    let mut types = vec![3; TINY_GEMMA_CONTROL.len()];
    types.extend([4; TINY_GEMMA_USER.len()]);
    types.extend([6; 256]);
    types.extend([1; TINY_GEMMA_PIECES.len()]);
    let mut scores = vec![-1000.0f32; TINY_GEMMA_CONTROL.len() + TINY_GEMMA_USER.len()];
    scores.extend([0.0; 256]);
    scores.extend((0..TINY_GEMMA_PIECES.len()).map(|i| -(i as f32)));
    let k = |s: &str| format!("tokenizer.ggml.{s}");
    vec![
        (k("model"), Value::String("llama".into())),
        (k("pre"), Value::String("default".into())),
        (
            k("tokens"),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            k("token_type"),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            k("scores"),
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (k("bos_token_id"), Value::U32(2)),
        (k("eos_token_id"), Value::U32(1)),
        (k("unknown_token_id"), Value::U32(3)),
        (k("padding_token_id"), Value::U32(0)),
        (k("add_bos_token"), Value::Bool(true)),
        (k("add_space_prefix"), Value::Bool(false)),
    ]
}
