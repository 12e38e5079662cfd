//! `train`'s transcoder flags: `--transcoder --layers L` (one transcoder per layer, harvested from the
//! model in one forward pass), `--target-acts` (one transcoder from two stores of one harvest), and
//! `--skip` for either.

use std::path::PathBuf;

use super::train::Layers;

/// Train transcoders instead of SAEs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TranscoderArgs {
    /// Train one transcoder per layer of --layers instead of SAEs, all from one forward pass: input
    /// `blocks.{l}.ln2.hook_normalized`, target `blocks.{l}.hook_mlp_out`; `--out DIR` holds `DIR/layer-{l}`.
    #[arg(
        long = "transcoder",
        group = "transcoder_mode",
        requires = "layers",
        conflicts_with_all = ["hook", "acts"]
    )]
    pub per_layer: bool,
    /// Layers of --transcoder: `all`, or a list of layers and ranges such as `0,3,5-7`.
    #[arg(long, value_name = "LAYERS", requires = "per_layer")]
    pub layers: Option<Layers>,
    /// Train a transcoder predicting these activations (an activation store of the same harvest as
    /// --acts, e.g. `blocks.3.hook_mlp_out` for --acts `blocks.3.ln2.hook_normalized`) from --acts.
    #[arg(
        long,
        value_name = "STORE_DIR",
        requires = "acts",
        group = "transcoder_mode"
    )]
    pub target_acts: Option<PathBuf>,
    /// With --transcoder or --target-acts: add the affine skip path `W_skip x` (skip transcoders).
    #[arg(long, requires = "transcoder_mode")]
    pub skip: bool,
}
