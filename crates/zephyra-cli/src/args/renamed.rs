//! Old flag spellings that scripts may still use. Each is a hidden argument whose value parser always
//! fails with a message naming the new flag, so `zephyra train --batch 4096` stops with
//! "`--batch` was renamed: use `--batch-rows` (rows per optimizer step)" instead of an unknown-flag error.

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// A value parser that refuses every value of the old flag `old`, naming what to use instead.
#[derive(Debug, Clone, Copy)]
pub struct Renamed {
    /// The old spelling, e.g. `--batch`.
    pub old: &'static str,
    /// What to write instead, e.g. "`--batch-rows` (rows per optimizer step)".
    pub new: &'static str,
}

impl Renamed {
    /// `old` was renamed to `new`.
    pub const fn new(old: &'static str, new: &'static str) -> Self {
        Self { old, new }
    }

    /// The message shown to the user.
    pub fn message(&self) -> String {
        format!("`{}` was renamed: use {}", self.old, self.new)
    }
}

impl TypedValueParser for Renamed {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        _value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let mut cmd = cmd.clone();
        Err(
            clap::Error::raw(ErrorKind::ValueValidation, format!("{}\n", self.message()))
                .format(&mut cmd),
        )
    }
}

/// `--batch` where rows per optimizer step are meant (`train`, `encode`, `bench train`, `bench stream`).
#[derive(Debug, Clone, clap::Args)]
pub struct OldBatchRows {
    #[arg(long = "batch", hide = true, value_parser = Renamed::new("--batch", "`--batch-rows` (rows per step)"))]
    renamed_batch_rows: Option<String>,
}

/// `--batch` where contexts per forward pass are meant (`harvest`, `eval`, `features`, `bench forward`).
#[derive(Debug, Clone, clap::Args)]
pub struct OldBatchContexts {
    #[arg(long = "batch", hide = true, value_parser = Renamed::new("--batch", "`--batch-contexts` (contexts per forward pass)"))]
    renamed_batch_contexts: Option<String>,
}

/// `--harvest-batch`, now `--batch-contexts` (`train` on the fly, `bench stream`).
#[derive(Debug, Clone, clap::Args)]
pub struct OldHarvestBatch {
    #[arg(long = "harvest-batch", hide = true,
          value_parser = Renamed::new("--harvest-batch", "`--batch-contexts` (contexts per forward pass)"))]
    renamed_harvest_batch: Option<String>,
}
