//! The crate's error type: one enum whose variants carry the offending values.

use std::path::PathBuf;

/// Everything that can go wrong in `zephyra-sae`.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    /// A buffer or tensor has the wrong shape or length.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was being checked (a parameter or argument name).
        what: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A bad argument — the crate's one name for it: a setting or value outside its valid range (NaN,
    /// infinite, negative, too large) or inconsistent with the others, named as the command line spells it
    /// (`--max-grad-norm`), or by its configuration field or argument when no flag sets it.
    #[error("{option} {value} is invalid: {valid}")]
    InvalidConfig {
        /// The option (`--lr`), configuration field (`adam.beta1`) or argument.
        option: String,
        /// The value given, as text.
        value: String,
        /// The valid range and what to do.
        valid: String,
    },
    /// A source that yields no usable row in a whole pass over its data (all NaN/Inf under
    /// `--non-finite skip`): reading on would loop forever.
    #[error(
        "the activations have no usable row: every one of the {rows_per_pass} rows of a whole pass holds \
         NaN or Inf; clean or re-harvest them (`--non-finite error` stops at the first such row)"
    )]
    NoUsableRows {
        /// Rows in one pass over the source.
        rows_per_pass: u64,
    },
    /// `cfg.json` names an architecture Zephyra does not know.
    #[error(
        "unknown SAE architecture `{0}` in cfg.json: supported are `standard`, `topk`, `jumprelu` and `gated` \
         (SAELens names), `matryoshka_batchtopk` and Zephyra's `relu`, `relu-unit`, `batchtopk`"
    )]
    UnknownArchitecture(String),
    /// A file could not be parsed (JSON, safetensors): what is wrong and where.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The parser's error, when one reported it.
        #[source]
        source: Option<Cause>,
    },
    /// A tensor named by the format is missing from a weights file.
    #[error("{path}: tensor `{name}` is missing (the architecture `{architecture}` needs it)")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The architecture being loaded.
        architecture: String,
    },
    /// Input values that cannot be used (NaN, Inf).
    #[error("non-finite value in {what} (row {row}); clean the activations or skip such rows")]
    NonFinite {
        /// What held the value.
        what: String,
        /// The first offending row.
        row: usize,
    },
    /// An I/O error on a file (the OS error is the source: shown once by `{:#}`).
    #[error("{path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file that cannot be read or written as its type (`summary.json`, `metrics.jsonl`).
    #[error("{path}: not the expected JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Writing or hashing a file failed (`zephyra_io`).
    #[error(transparent)]
    File(#[from] zephyra_io::Error),
    /// A `.npy` activation file that cannot be used (trainer).
    #[error("{path}: {reason}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A training checkpoint that cannot be read or does not fit (trainer).
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The training-state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The underlying error (I/O, safetensors, JSON), when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// `--resume` with settings that differ from the checkpoint's (trainer); nothing was written.
    #[error(
        "cannot resume: the training configuration differs from the checkpoint's ({}); resume with \
         the original settings (omit the flags) or train into a new --out directory",
        crate::train::resume::list(.differences)
    )]
    ConfigMismatch {
        /// Each differing setting: `option: checkpoint → requested`.
        differences: Vec<crate::train::Difference>,
    },
    /// The worker threads of a run could not be started.
    #[error("cannot start {threads} worker threads; lower --threads")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The thread pool's error.
        source: rayon::ThreadPoolBuildError,
    },
    /// Optimizer state that does not match the parameters (trainer).
    #[error("optimizer: {0}")]
    Optimizer(String),
    /// A training run that cannot proceed (trainer): no usable rows, a diverged loss.
    #[error("training: {0}")]
    Training(String),
    /// An activation source failed: its own error (another crate's, kept as the source) or a message.
    #[error("activation source: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An underlying error kept as the source of a [`SaeError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// `Some(Box::new(e))`: `e` as the source of a [`SaeError`].
pub fn cause(e: impl std::error::Error + Send + Sync + 'static) -> Option<Cause> {
    Some(Box::new(e))
}

/// `Result` with [`SaeError`].
pub type Result<T, E = SaeError> = std::result::Result<T, E>;

impl SaeError {
    /// [`SaeError::Checkpoint`] for `path`, with the underlying error if there is one.
    pub fn checkpoint(
        path: &std::path::Path,
        reason: impl Into<String>,
        source: Option<Cause>,
    ) -> Self {
        let (path, reason) = (path.to_path_buf(), reason.into());
        Self::Checkpoint {
            path,
            reason,
            source,
        }
    }

    /// [`SaeError::Format`] for `path`, with the parser's error if there is one.
    pub fn format(
        path: &std::path::Path,
        message: impl Into<String>,
        source: Option<Cause>,
    ) -> Self {
        let (path, message) = (path.to_path_buf(), message.into());
        Self::Format {
            path,
            message,
            source,
        }
    }

    /// Shorthand for [`SaeError::InvalidConfig`].
    pub fn invalid(
        option: impl Into<String>,
        value: impl std::fmt::Display,
        valid: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            option: option.into(),
            value: value.to_string(),
            valid: valid.into(),
        }
    }

    /// Shorthand for [`SaeError::ShapeMismatch`].
    pub fn shape(what: impl Into<String>, expected: &[usize], got: &[usize]) -> Self {
        Self::ShapeMismatch {
            what: what.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        }
    }
}
