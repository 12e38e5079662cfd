//! Attribution graphs of one prompt through per-layer transcoders (Ameisen et al. 2025, "Circuit
//! Tracing: Revealing Computational Graphs in Language Models"; the open-source circuit-tracer).
//!
//! | module | responsibility | main types |
//! | --- | --- | --- |
//! | [`capture`] | one real pass → the local replacement model (scales, patterns, inputs, errors); exactness | [`capture::build`] |
//! | [`frozen`] | the frozen linear model: fixed patterns and norm scales, forward and hand-derived backward | [`FrozenWeights`], [`FrozenPrompt`] |
//! | [`local`] | the local replacement model: transcoders, active features, error nodes; frozen forward | [`LocalReplacement`], [`TranscoderView`] |
//! | [`graph`] | edges by batched backward passes, logit and feature selection | [`attribute`], [`Graph`] |
//! | [`prune`] | influence, pruning, replacement and completeness scores | [`prune::prune`], [`GraphScores`] |
//! | [`paths`] | the strongest paths into a node, for printing | [`paths::top_paths`] |
//! | [`intervene`] | features ablated or scaled in the real model (attention free) | [`intervene::FeatureEdit`] |
//! | [`trace`] | prompt → pruned graph, summary and real-model check | [`Tracer`], [`trace::Traced`] |
//! | [`json`] | circuit-tracer's frontend graph JSON | [`GraphFile`] |

pub mod capture;
pub mod frozen;
pub mod graph;
pub mod intervene;
pub mod json;
pub mod local;
pub mod paths;
pub mod prune;
pub mod trace;

pub use frozen::{FrozenLayer, FrozenPrompt, FrozenWeights};
pub use graph::{attribute, AttributionConfig, Graph};
pub use json::GraphFile;
pub use local::{ActiveFeature, LocalReplacement, Sources, TranscoderView};
pub use prune::{GraphScores, Pruned};
pub use trace::{TraceOptions, Tracer, Transcoder};

#[cfg(test)]
mod tests;
