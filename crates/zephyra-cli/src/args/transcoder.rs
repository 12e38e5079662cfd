//! `train`'s transcoder flags: `--target-acts` (the activations to predict from `--acts`) and `--skip`.

use std::path::PathBuf;

/// Train a transcoder from two activation stores of one harvest.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TranscoderArgs {
    /// Train a transcoder predicting these activations (an activation store of the same harvest as
    /// --acts, e.g. `blocks.3.hook_mlp_out` for --acts `blocks.3.ln2.hook_normalized`) from --acts.
    #[arg(long, value_name = "STORE_DIR", requires = "acts")]
    pub target_acts: Option<PathBuf>,
    /// With --target-acts: add the affine skip path `W_skip x` (a skip transcoder).
    #[arg(long, requires = "target_acts")]
    pub skip: bool,
}
