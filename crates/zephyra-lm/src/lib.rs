//! Llama-family language-model runtime with TransformerLens-style hook points.
#![deny(missing_docs)]
