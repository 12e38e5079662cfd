//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while evaluating or plotting an SAE.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Two buffers that must agree in size do not.
    #[error("{what}: expected {expected} values, got {got}")]
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length implied by the other arguments.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// The SAE reads a different width than the hook writes.
    #[error(
        "the SAE reads vectors of width d_in = {sae_d_in} but hook `{hook}` of the model has width {hook_width}: \
         evaluate it at the hook it was trained on (see `metadata.hook_name` in its cfg.json)"
    )]
    WidthMismatch {
        /// The hook being evaluated.
        hook: String,
        /// The hook's width (d_model for residual hooks).
        hook_width: usize,
        /// The SAE's input width.
        sae_d_in: usize,
    },
    /// The SAE (or store) was made from another model than the one given.
    #[error(
        "{what} was made from model `{expected}` but the model given is `{got}`: pass the matching --model, \
         or retrain the SAE on this model"
    )]
    ModelMismatch {
        /// What carries the model name (an SAE, a store).
        what: String,
        /// The model it records.
        expected: String,
        /// The model that was given.
        got: String,
    },
    /// Nothing was left to evaluate after excluding attention sinks and special tokens.
    #[error(
        "no usable tokens to evaluate ({seen} tokens read, all excluded or none read): use more or longer \
         documents (--tokens), or check the corpus (--data)"
    )]
    NoTokens {
        /// How many tokens were read before exclusion.
        seen: usize,
    },
    /// A value that must be finite is not (a diverged SAE, a broken activation file).
    #[error("{what} is not finite ({value}): the SAE or the activations contain NaN/inf")]
    NotFinite {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// A long pass was stopped by its caller between batches; what it had done is kept.
    #[error(
        "interrupted after {n_tokens} tokens; {} holds the pass so far: run it again to continue",
        checkpoint.display()
    )]
    Interrupted {
        /// Tokens read before the stop.
        n_tokens: u64,
        /// The checkpoint written on the way out.
        checkpoint: PathBuf,
    },
    /// A bad argument (empty inputs, zero sizes, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A line of a metrics JSONL file could not be parsed.
    #[error("{path}:{line}: not a metrics record ({reason}); is this a `metrics.jsonl` written by `zephyra train`?")]
    BadMetrics {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// Nothing to plot.
    #[error("nothing to plot: {0}")]
    NothingToPlot(String),
    /// Drawing failed inside the plotting backend.
    #[error("drawing {path} failed: {reason}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// The backend's message.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A features store does not match its index (truncated, overwritten, changed after it was written).
    #[error(
        "{path}: the features store is damaged: {reason}; recompute it with `zephyra features`"
    )]
    DamagedStore {
        /// The records file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// Writing or hashing a file failed (`zephyra_io`).
    #[error(transparent)]
    File(#[from] zephyra_io::Error),
    /// JSON (de)serialisation failed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The model runtime failed (its error, or a tensor operation's, kept as the source).
    #[error("model: {0}")]
    Model(#[source] BoxError),
    /// The SAE failed.
    #[error("SAE: {0}")]
    Sae(#[from] zephyra_sae::SaeError),
    /// The data layer failed.
    #[error("data: {0}")]
    Data(#[from] zephyra_data::DataError),
}

/// The source of a [`AnalysisError::Model`]: the runtime's or a tensor operation's error, or a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl AnalysisError {
    /// A model-runtime failure, keeping `source` (an `LmError`, a tensor operation's error).
    pub fn model(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        AnalysisError::Model(Box::new(source))
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;
