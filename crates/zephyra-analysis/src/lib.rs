//! Evaluate sparse autoencoders the way the field does, and plot their training.
//!
//! # Crate map
//! | module | responsibility | main types |
//! | --- | --- | --- |
//! | [`recon`] | MSE, centred FVE, cosine, relative bias, streamed in `f64` | [`ReconAccumulator`], [`ReconStats`] |
//! | [`sparsity`] | L0, L1, dead / dense latents, log10 feature-density histogram | [`SparsityAccumulator`], [`SparsityStats`] |
//! | [`downstream`] | next-token CE / KL with the SAE spliced in, CE recovered, KL score | [`LossAccumulator`], [`DownstreamStats`] |
//! | [`plot`] | training curves, density histogram, L0-vs-FVE scatter (PNG + SVG) | [`plot::RunCurve`] |
//! | [`eval`] | the driver: model forward, exclusion, splicing, both passes | [`eval::evaluate`], [`eval::Dictionary`], [`eval::EvalFigures`] |
//! | [`replacement`] | a transcoder per MLP: per-layer FVE / CE / error norm, every MLP replaced vs mean-ablated | [`replacement::evaluate_replacement`] |
//! | [`report`] | what was evaluated on which data, JSON and the text table | [`report::EvalReport`] |
//! | [`eval_data`] | the held-out tail of the training corpus | [`eval_data::held_out_tail`] |
//! | [`provenance`] | the SAE's (and its store's) model and hook match the ones given | [`provenance::check_model`], [`provenance::check_model_file`], [`provenance::check_store`] |
//! | [`attribution`] | attribution graphs through transcoders: frozen model, edges, pruning, graph JSON | [`attribution::attribute`], [`attribution::Graph`] |
//! | [`ground_truth`] | MCC (Hungarian), recall/precision, uniqueness, absorption against synthetic truth | [`ground_truth::GroundTruthFigures`] |
//! | [`seeds`] | several SAEs of one recipe (seeds): every figure's mean ± 95 % interval, the side-by-side table | [`seeds::Interval`], [`seeds::SeedRuns`] |
//! | [`absorption`] | first-letter feature absorption on a real model (Chanin et al. 2024, SAEBench) | [`absorption::score_absorption`], [`absorption::AbsorptionFigures`] |
//! | [`error`] | the crate's error enum | [`AnalysisError`] |
//!
//! ```
//! use zephyra_analysis::ReconAccumulator;
//! let mut acc = ReconAccumulator::new(2);
//! // Two tokens, x = (1,0),(3,0); x̂ = (1,0),(2,0): SSE 1, centred variance 2, FVE 0.5.
//! acc.add(&[1.0, 0.0, 3.0, 0.0], &[1.0, 0.0, 2.0, 0.0]).unwrap();
//! let s = acc.finish().unwrap();
//! assert!((s.fve - 0.5).abs() < 1e-12);
//! ```

pub mod absorption;
pub mod attribution;
pub mod downstream;
pub mod error;
pub mod eval;
pub mod eval_data;
pub mod explain;
pub mod features;
mod file_io;
pub mod ground_truth;
pub mod plot;
pub mod provenance;
pub mod recon;
pub mod replacement;
pub mod report;
pub mod seeds;
pub mod sparsity;
pub mod steer;

pub use downstream::{DownstreamStats, LossAccumulator, PositionLogits};
pub use error::{AnalysisError, Result};
pub use recon::{ReconAccumulator, ReconStats};
pub use sparsity::{DensityHistogram, SparsityAccumulator, SparsityStats};
