//! How contexts are cut and batched through the model, and which rows are kept: the options `harvest`,
//! on-the-fly `train` and `bench stream` share (`eval` and `features` take [`BatchContextsArg`]).

use zephyra_data::exclude::ExclusionRule;
use zephyra_data::harvest::{DEFAULT_BATCH_CONTEXTS, DEFAULT_CONTEXTS_PER_SHARD};

use super::renamed::OldHarvestBatch;
use super::values;

/// `--batch-contexts`: contexts per forward pass.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchContextsArg {
    /// Contexts per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH_CONTEXTS, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_contexts: usize,
}

/// Context length, batching, shards and the exclusion rule of a harvest.
#[derive(Debug, Clone, clap::Args)]
pub struct HarvestArgs {
    /// Tokens per context.
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    #[command(flatten)]
    pub batch: BatchContextsArg,
    /// Contexts per shard file (match the store's to reproduce it on the fly).
    #[arg(long, default_value_t = DEFAULT_CONTEXTS_PER_SHARD, value_name = "N")]
    pub shard_contexts: usize,
    #[command(flatten)]
    pub exclusion: ExclusionArgs,
    #[command(flatten)]
    old_harvest_batch: OldHarvestBatch,
}

/// The exclusion rule's flags (`harvest`, on-the-fly `train`, `attribute`).
#[derive(Debug, Clone, clap::Args)]
pub struct ExclusionArgs {
    /// Keep every row: do not drop position 0, special tokens or high-norm attention sinks.
    #[arg(long)]
    pub keep_sinks: bool,
    /// Drop rows whose norm exceeds this multiple of their shard's median norm.
    #[arg(long, default_value_t = zephyra_data::exclude::DEFAULT_MAX_NORM_MULTIPLE,
          allow_negative_numbers = true, value_parser = values::positive::<f32>)]
    pub max_norm_multiple: f32,
}

impl ExclusionArgs {
    /// The rule these flags select.
    pub fn rule(&self) -> ExclusionRule {
        ExclusionRule::from_flags(self.keep_sinks, self.max_norm_multiple)
    }
}
