//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading a corpus, harvesting or reading an activation store.
///
/// Variants carry the offending values; messages say what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A path named on the command line (or inside a manifest) does not exist.
    #[error("`{}` does not exist: check the path given to --data/--acts", path.display())]
    MissingPath {
        /// The path that was not found.
        path: PathBuf,
    },
    /// An I/O error on a file or directory.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing or hashing a file failed (`zephyra_io`).
    #[error(transparent)]
    File(#[from] zephyra_io::Error),
    /// A glob pattern could not be parsed.
    #[error("invalid glob pattern `{pattern}`: {reason}")]
    BadGlob {
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A glob matched nothing.
    #[error("glob `{pattern}` matches no file: check the pattern (quote it so the shell does not expand it)")]
    EmptyGlob {
        /// The pattern as given.
        pattern: String,
    },
    /// A file has an extension no reader handles.
    #[error(
        "`{}`: unsupported corpus file type; use .txt, .md, .html/.htm, .jsonl{parquet} (or a directory of them)",
        path.display(),
        parquet = if cfg!(feature = "parquet") { ", .parquet" } else { "" }
    )]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },
    /// A parquet file could not be read, or has no usable string column.
    #[error("parquet file `{}`: {reason}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Every line of a JSONL file was malformed or lacked the text field.
    #[error("`{}`: none of its {n_lines} lines is a JSON object with a string field `{field}`; pass --text-field NAME if the text lives under another key", path.display())]
    NoTextField {
        /// The file.
        path: PathBuf,
        /// The field looked for.
        field: String,
        /// Lines in the file.
        n_lines: u64,
    },
    /// `--data` was omitted and the Rust toolchain documentation is not installed.
    #[error("no --data given and the default corpus (the Rust documentation shipped with the toolchain) was not found at `{}`: pass --data FILE_OR_DIR (or install it with `rustup component add rust-docs`)", path.display())]
    NoDefaultCorpus {
        /// Where the documentation was looked for.
        path: PathBuf,
    },
    /// The corpus produced no tokens at all.
    #[error("the corpus {corpus} contains no usable text (0 tokens after reading {n_documents} documents): point --data at files with text in them")]
    EmptyCorpus {
        /// The corpus description.
        corpus: String,
        /// Documents read.
        n_documents: u64,
    },
    /// The requested context length is invalid for the model.
    #[error("--ctx {ctx} is too large: the model's context length is {max_ctx} tokens; use --ctx {max_ctx} or less")]
    CtxTooLarge {
        /// Requested context length.
        ctx: usize,
        /// The model's maximum.
        max_ctx: usize,
    },
    /// An option has an invalid value.
    #[error("invalid {name} `{value}`: {reason}")]
    InvalidOption {
        /// Option name, e.g. `--ctx`.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// The tokenizer or the model failed.
    #[error("model: {0}")]
    Lm(#[from] zephyra_lm::LmError),
    /// A store's manifest is unreadable or inconsistent with its shards.
    #[error("activation store `{}`: {reason}", dir.display())]
    BadStore {
        /// The store directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A harvest was asked to write into a store made with different settings.
    #[error("`{}` holds a harvest with different settings ({field}: store has {stored}, this run asks for {requested}); pass the same options to resume it, or choose another --out", dir.display())]
    ResumeMismatch {
        /// The store directory.
        dir: PathBuf,
        /// The setting that differs.
        field: String,
        /// Value in the store.
        stored: String,
        /// Value requested now.
        requested: String,
    },
    /// A store is complete already.
    #[error("`{}` already holds a complete activation store ({n_tokens} tokens); choose another --out or delete it", dir.display())]
    StoreComplete {
        /// The store directory.
        dir: PathBuf,
        /// Rows in the store.
        n_tokens: u64,
    },
    /// The forward pass returned no activations for a hook it was asked to capture.
    #[error("the forward pass did not capture `{hook}`; this is a bug in the model runtime, please report it")]
    NotCaptured {
        /// The hook point.
        hook: zephyra_lm::HookPoint,
    },
    /// A background thread could not be started.
    #[error("cannot start the {thread} thread (the system is out of threads or memory; retry with fewer --threads)")]
    ThreadSpawn {
        /// Which thread (`packer`, `writer`, `harvesting`).
        thread: &'static str,
        /// The error of the spawn.
        #[source]
        source: std::io::Error,
    },
    /// A background thread panicked or stopped before its work was done.
    #[error("the {thread} thread stopped unexpectedly (it panicked; the message above says why)")]
    ThreadStopped {
        /// Which thread (`packer`, `writer`, `harvesting`).
        thread: &'static str,
    },
    /// A shard could not be serialized to safetensors.
    #[error("encoding a shard as safetensors")]
    EncodeShard(#[source] safetensors::SafeTensorError),
    /// A window feed delivered values that are not whole rows.
    #[error("a window of {n_values} values is not a whole number of rows of {d}; the feed is inconsistent with its width")]
    RaggedWindow {
        /// Values delivered.
        n_values: usize,
        /// Row width.
        d: usize,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Wraps an I/O error with what was being done and on which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A [`DataError::BadStore`] for `dir`.
    pub fn bad_store(dir: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::BadStore {
            dir: dir.into(),
            reason: reason.into(),
        }
    }
}
