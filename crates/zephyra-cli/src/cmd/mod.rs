//! One module per subcommand: each defines its clap `Args` and a `run` function.

pub mod attribute;
pub mod bench;
pub mod by_hand;
pub mod convert;
pub mod demo;
pub mod encode;
pub mod eval;
mod eval_absorption;
pub mod eval_synth;
mod eval_transcoders;
pub mod explain;
pub mod features;
pub mod fetch_model;
pub mod generate;
pub mod harvest;
pub mod inspect;
pub mod plot;
pub mod run;
pub mod serve;
pub mod source;
pub mod steer;
pub mod synth;
pub mod tokenize;
pub mod train;
pub mod transcoder_source;

pub use crate::args::Global;
