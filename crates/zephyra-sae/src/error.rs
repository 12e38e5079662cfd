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
    /// A configuration value is out of range or inconsistent.
    #[error("invalid SAE configuration: {0}")]
    InvalidConfig(String),
    /// `cfg.json` names an architecture Zephyra does not know.
    #[error(
        "unknown SAE architecture `{0}` in cfg.json: supported are `standard`, `topk`, `jumprelu` and `gated` \
         (SAELens names) and Zephyra's `relu`, `relu-unit`, `batchtopk`"
    )]
    UnknownArchitecture(String),
    /// A file could not be parsed (JSON, safetensors): what is wrong and where.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
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
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
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
    },
    /// `--resume` with settings that differ from the checkpoint's (trainer); nothing was written.
    #[error(
        "cannot resume: the training configuration differs from the checkpoint's ({differences}); resume with \
         the original settings (omit the flags) or train into a new --out directory"
    )]
    ConfigMismatch {
        /// `key: checkpoint → requested` for each differing setting.
        differences: String,
    },
    /// Optimizer state that does not match the parameters (trainer).
    #[error("optimizer: {0}")]
    Optimizer(String),
    /// A training run that cannot proceed (trainer): no usable rows, a diverged loss.
    #[error("training: {0}")]
    Training(String),
    /// An error from outside the crate (activation sources, other crates), as text.
    #[error("activation source: {0}")]
    Source(String),
}

/// `Result` with [`SaeError`].
pub type Result<T, E = SaeError> = std::result::Result<T, E>;

impl SaeError {
    /// Shorthand for [`SaeError::ShapeMismatch`].
    pub fn shape(what: impl Into<String>, expected: &[usize], got: &[usize]) -> Self {
        Self::ShapeMismatch {
            what: what.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        }
    }
}
