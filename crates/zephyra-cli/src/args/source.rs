//! Where `train` reads its activations: `--acts FILE.npy | STORE_DIR`, or `--model … --hook …` to harvest on
//! the fly (`cmd/source.rs` opens them).

use std::path::PathBuf;

use zephyra_lm::HookPoint;

use super::model::PrecisionArg;
use super::{CorpusArgs, HarvestArgs};

/// Default shuffle buffer (rows) of the store and on-the-fly readers.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 1 << 18;

/// Options choosing and shaping the activations `train` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Activations: a float32 `.npy` [n, d_in] or an activation store directory made by `zephyra harvest`.
    #[arg(long, value_name = "PATH")]
    pub acts: Option<PathBuf>,
    /// Harvest on the fly from this model (`smollm2` or a .gguf path) instead of reading --acts. With --acts
    /// DIR it is checked against the store's model instead.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    // `--precision` of on-the-fly harvesting.
    #[command(flatten)]
    pub precision: PrecisionArg,
    // Corpus for on-the-fly harvesting.
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Hook point to harvest on the fly (with --acts DIR: checked against the store's hook). Repeat it to
    /// train one SAE per hook from one forward pass (`--out DIR` then holds one run per hook, `DIR/<hook>`).
    #[arg(long, value_name = "HOOK")]
    pub hook: Vec<HookPoint>,
    // Contexts, batching and row exclusion of on-the-fly harvesting.
    #[command(flatten)]
    pub harvest: HarvestArgs,
    /// Rows held by the shuffle buffer of store and on-the-fly sources (bounds their memory).
    #[arg(long, default_value_t = DEFAULT_SHUFFLE_BUFFER, value_name = "ROWS")]
    pub shuffle_buffer: usize,
}
