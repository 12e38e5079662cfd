//! `--data` / `--text-field`: the corpus a command reads.

use anyhow::Context;
use zephyra_data::corpus::CorpusOptions;
use zephyra_data::Corpus;

/// The corpus: files, directories, globs or `-`, and the field holding the text in JSONL/parquet.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CorpusArgs {
    /// Corpus: files (.txt .md .html .jsonl .parquet), directories, globs, `-` for stdin (repeatable)
    /// [default: the Rust documentation shipped with the toolchain].
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub data: Vec<String>,
    /// JSONL field / parquet column holding the text.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_field: String,
}

impl CorpusArgs {
    /// Whether `--data` was given (else the default corpus is read).
    pub fn is_default(&self) -> bool {
        self.data.is_empty()
    }

    /// The corpus of `--data`, or the default Rust documentation.
    pub fn open(&self) -> anyhow::Result<Corpus> {
        if self.data.is_empty() {
            return Corpus::default_rust_docs()
                .context("finding the default corpus (the Rust documentation); pass --data");
        }
        Corpus::from_specs(
            &self.data,
            CorpusOptions {
                text_field: self.text_field.clone(),
            },
        )
        .context("reading --data")
    }
}
