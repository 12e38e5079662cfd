//! Every argument group that more than one command takes, declared once and flattened where used
//! (`#[command(flatten)]`), with the code that turns each group into validated, typed values.
//!
//! | module       | group / parser                     | used by                                              |
//! |--------------|------------------------------------|------------------------------------------------------|
//! | [`model`]    | [`ModelArgs`] (`--model`)          | tokenize, inspect, run, generate, harvest, bench     |
//! | [`text`]     | [`TextInput`] (`--text`/`--file`)  | tokenize, run                                        |
//! | [`sae`]      | [`SaeArgs`] (`--sae --model --hook`) | eval, features, steer, explain, serve              |
//! | [`corpus`]   | [`CorpusArgs`] (`--data --text-field`) | harvest, train (on the fly), eval, features, bench |
//! | [`harvest`]  | [`HarvestArgs`], [`BatchContextsArg`] | harvest, train (on the fly), eval, features, bench |
//! | [`arch`]     | [`ArchArgs`] (`--arch --k --expansion`) | train, bench                                    |
//! | [`values`]   | range-checked parsers for every float and size flag                                      |
//! | [`renamed`]  | hidden old spellings that fail naming the new flag                                       |
//!
//! [`Global`] holds the options of every subcommand (`--quiet`). `cmd/*.rs` only declares what is its own,
//! maps the groups to library calls and prints; nothing here depends on `cmd`.

pub mod arch;
pub mod corpus;
pub mod harvest;
pub mod model;
pub mod renamed;
pub mod sae;
pub mod text;
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
pub use text::TextInput;
