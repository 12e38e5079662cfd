//! Corpus readers, context packing, activation harvesting and a sharded activation store.
//!
//! The path from text to training rows: [`corpus`] streams documents from files, directories, globs or
//! stdin; [`pack`] tokenizes and packs them into shuffled fixed-length contexts; [`harvest`] runs the model
//! over batches of contexts and, after the attention-sink [`exclude`] rule, writes an [`store`] of
//! safetensors shards (or hands the rows straight to a trainer); [`store::reader`] reads them back in
//! shuffled, memory-bounded, resumable order.
//!
//! # Crate map
//! | module | responsibility | main types |
//! |---|---|---|
//! | [`corpus`] | `.txt`/`.md`/`.html`/`.jsonl`/`.parquet`, directories, globs, stdin, the Rust-docs default | [`Corpus`], [`corpus::Document`] |
//! | [`corpus::html`] | HTML → text | [`corpus::html::html_to_text`] |
//! | [`pack`] | tokenize, pack into contexts, shuffle | [`pack::ContextStream`], [`pack::TextEncoder`] |
//! | [`exclude`] | which rows are dropped (sinks, specials, position 0) | [`ExclusionRule`] |
//! | [`store`] | shards + `manifest.json`, reading | [`ActivationStore`], [`store::Manifest`] |
//! | [`store::reader`] | shuffle-buffer reading with a cursor | [`ShuffleReader`], [`store::ReaderCursor`] |
//! | [`store::merge`] | merging the rank stores of a sharded harvest | [`store::merge_rank_stores`] |
//! | [`harvest`] | model forward → stores; on-the-fly rows | [`harvest::HarvestConfig`], [`harvest::harvest`], [`harvest::StreamFeed`] |
//! | [`source`] | the trainer's sources: a store or the model on the fly | [`source::BufferedSource`] |
//! | [`error`] | the crate's error | [`DataError`] |
//!
//! # Example
//! ```
//! use zephyra_data::corpus::html::html_to_text;
//! let text = html_to_text("<p>Rust &amp; <b>SAEs</b></p><script>alert(1)</script>");
//! assert_eq!(text, "Rust & SAEs");
//! ```
#![deny(missing_docs)]

pub mod corpus;
pub mod error;
pub mod exclude;
pub mod harvest;
pub mod pack;
pub mod source;
pub mod store;

pub use corpus::Corpus;
pub use error::{DataError, Result};
pub use exclude::ExclusionRule;
pub use store::{ActivationStore, ShuffleReader};
