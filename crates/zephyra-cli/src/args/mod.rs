//! The command line's argument groups, each declared once and flattened where used (`#[command(flatten)]`),
//! with the code that turns it into validated, typed values (ripgrep's `defs.rs` → `hiargs.rs` split).
//!
//! | module      | group                                        | used by                                   |
//! |-------------|----------------------------------------------|-------------------------------------------|
//! | [`model`]   | [`ModelArgs`] (`--model`), loading           | tokenize, inspect, run, generate, harvest, bench |
//! | [`text`]    | [`TextInput`] (`--text` / `--file`), [`ModelText`] | tokenize, run                       |
//! | [`sae`]     | [`SaeArgs`] (`--sae --model --hook`), [`Stack`] | eval, features, steer, explain, serve  |
//! | [`corpus`]  | [`CorpusArgs`] (`--data --text-field`)       | harvest, train, eval, features, bench     |
//! | [`harvest`] | [`HarvestArgs`], [`BatchContextsArg`]        | harvest, train, eval, features            |
//! | [`arch`]    | [`ArchArgs`] (`--arch --k --expansion`)      | train, bench                              |
//! | [`source`]  | [`source::SourceArgs`] (`--acts`, or `--model --hook` on the fly) | train                |
//! | [`train`]   | [`train::TrainArgs`]: `train`'s flags, mapped onto a `TrainConfig` | train               |
//! | [`transcoder`] | [`transcoder::TranscoderArgs`] (`--target-acts --skip`)      | train               |
//! | [`values`]  | the range-checked parser of every float flag, the `--max-tokens` bound                   |
//! | [`renamed`] | hidden old spellings that fail naming the new flag                                       |
//!
//! [`Global`] holds the options of every subcommand (`--quiet`). `cmd/*.rs` declares only what is its own,
//! maps the groups to library calls and prints; nothing here depends on `cmd`.

pub mod arch;
pub mod corpus;
pub mod harvest;
pub mod model;
pub mod renamed;
pub mod sae;
pub mod source;
pub mod text;
pub mod train;
pub mod transcoder;
pub mod transcoders;
pub mod values;

/// Options shared by every subcommand.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    /// Hide progress bars.
    pub quiet: bool,
}

impl Global {
    /// Whether progress bars should be drawn: not with `--quiet`, and only when stderr is a terminal.
    pub fn show_progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.quiet && std::io::stderr().is_terminal()
    }
}

pub use arch::{Arch, ArchArgs};
pub use corpus::CorpusArgs;
pub use harvest::{BatchContextsArg, HarvestArgs};
pub use model::{ModelArgs, ModelSpec};
pub use sae::{SaeArgs, Stack};
pub use text::{ModelText, TextInput};
