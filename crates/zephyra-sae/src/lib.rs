//! Sparse autoencoders on any `f32` activation matrix: seven architectures with hand-derived gradients on
//! fast CPU kernels, a resumable trainer, and SAELens-compatible files. Nothing here knows about language
//! models: inputs are row-major `[n, d_in]` slices. Transcoders (predicting one activation from another,
//! with an optional skip path) are the same dictionaries with an output width `d_out`.
//!
//! # Crate map
//! | module | responsibility | main types |
//! |---|---|---|
//! | [`sae`] | configuration, weights (SAELens names/orientation), gradients, step settings | [`Sae`], [`SaeConfig`], [`Architecture`], [`Gradients`], [`StepConfig`], [`StepStats`] |
//! | [`transcoder`] | transcoders: output width `d_out`, optional skip path `W_skip x`, `transcode`; training rows `[x \| y]` | [`TranscoderShape`] |
//! | [`arch`] | forward + hand-derived backward of every architecture (`arch/codes/` per architecture, `gated.rs`), encode/decode, decoder norm hooks, resampling | [`Workspace`] |
//! | [`kernels`] | dense GEMM (`gemm` crate), sparse code kernels, top-k selection, the [`kernels::Real`] trait | [`kernels::Codes`] |
//! | [`init`] | data-dependent initialisation: input scale, geometric median, folding the scale into weights | |
//! | [`optim`] | Adam with decoupled weight decay, global-norm clipping | [`optim::Adam`], [`optim::AdamConfig`] |
//! | [`schedule`] | learning-rate and sparsity-coefficient schedules | [`schedule::LrSchedule`], [`schedule::Decay`] |
//! | [`train`] | the trainer: configuration and its validation, the one setup ([`train::TrainSession`]), the loop, checkpoint state and resume comparison, activation sources, hold-out evaluation, `summary.json`, data parallelism | [`train::TrainConfig`], [`train::TrainSession`], [`train::Trainer`], [`train::ActivationSource`], [`train::StateMeta`], [`train::TrainSummary`], [`train::Difference`] |
//! | [`checkpoint`] | the `training_state.safetensors` file (written through `zephyra_io::write_atomic`) | [`checkpoint::TrainingState`] |
//! | [`metrics`] | `metrics.jsonl`, one record per line | [`metrics::MetricsRecord`] |
//! | [`npy`] | float32 `.npy` files: checked header parser, writer, memory-mapped source | [`npy::NpyFile`], [`npy::NpySource`] |
//! | [`saelens`] | `cfg.json` + `sae_weights.safetensors` save/load (SAELens 6 layout) | [`saelens::save`], [`saelens::load`] |
//! | [`gemma_scope`] | Gemma Scope `params.safetensors` (+ `config.json`) read/write | [`gemma_scope::read`], [`gemma_scope::write`] |
//! | [`synth`] | synthetic activations with known true features (SynthSAEBench design): directions, Zipfian firing, hierarchy, correlation, noise | [`synth::SynthModel`], [`synth::SynthConfig`] |
//! | [`by_hand`] | the seed article's worksheet, computed with the trainer's code | [`by_hand::Worksheet`] |
//! | [`error`] | the crate's error type: one variant per kind, causes kept as sources | [`SaeError`], [`Result`] |
//!
//! # Example
//! ```
//! use zephyra_sae::{Architecture, Gradients, Sae, SaeConfig, StepConfig, Workspace};
//! use rand::SeedableRng;
//! let cfg = SaeConfig::new(8, 32, Architecture::TopK { k: 4 }).unwrap();
//! let sae = Sae::init(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
//! let x: Vec<f32> = (0..3 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut ws = Workspace::default();
//! let mut grads = Gradients::zeros_like(&sae);
//! let stats = sae.forward_backward(&x, 3, &StepConfig::default(), &mut ws, &mut grads).unwrap();
//! assert!(stats.l0 <= 4.0 && stats.loss.is_finite());
//! ```
#![deny(missing_docs)]

pub mod arch;
pub mod by_hand;
pub mod checkpoint;
pub mod error;
pub mod gemma_scope;
pub mod init;
pub mod kernels;
pub mod metrics;
pub mod npy;
pub mod optim;
pub mod sae;
pub mod saelens;
pub mod schedule;
pub mod synth;
pub mod train;
pub mod transcoder;

pub use arch::{JumpReluSparsity, MatryoshkaAux, MatryoshkaWidths, Workspace, WorkspaceOf};
pub use error::{Result, SaeError};
pub use sae::{
    Architecture, Gradients, GradientsOf, Param, Reduction, Sae, SaeConfig, SaeMetadata, SaeOf,
    StepConfig, StepStats,
};
pub use transcoder::TranscoderShape;
