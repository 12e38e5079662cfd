//! One prompt → its pruned attribution graph, its summary and the real-model check: what `zephyra
//! attribute` prints and the web app's graph jobs run.
//!
//! The check ablates the most influential kept features in the real model (attention, norms and MLPs
//! recomputed, see [`intervene`](super::intervene)) and sets the target logit's change beside the graph's
//! predictions: the direct effects alone (other features held, exact in the frozen model) and the effects
//! propagated along the graph's edges (other features respond linearly, attention frozen).

use std::sync::Arc;

use serde::Serialize;
use zephyra_data::exclude::ExclusionRule;
use zephyra_lm::{HookPoint, Llama, Tokenizer};
use zephyra_sae::{Architecture, Sae, SaeConfig, SaeOf};

use super::capture;
use super::graph::{attribute, AttributionConfig, Graph};
use super::intervene::{demeaned, intervene, FeatureEdit, Intervened};
use super::json::{graph_file, GraphFile, GraphLabels};
use super::paths::top_paths;
use super::prune::{prune, scores, GraphScores, Pruned};
use crate::error::{AnalysisError, Result};

/// One layer's transcoder as the tracer holds it.
#[derive(Debug)]
pub struct Transcoder {
    /// The block whose MLP it replaces.
    pub layer: usize,
    /// The hook it reads (`blocks.{l}.ln2.hook_normalized`).
    pub input: HookPoint,
    /// Its name in graph files (its directory).
    pub name: String,
    /// The weights.
    pub sae: Sae,
}

/// The name in graph files of a layer without a trained transcoder ([`Transcoder::empty`]).
pub const EMPTY_TRANSCODER: &str = "none: the MLP is an error node";

impl Transcoder {
    /// A stand-in for a layer without a trained transcoder: an all-zero ReLU dictionary of one latent,
    /// which never fires, so the layer has no feature nodes and its whole MLP output is its error nodes
    /// (frozen, like every error); the local replacement model stays exact.
    pub fn empty(layer: usize, input: HookPoint, d_model: usize) -> Result<Transcoder> {
        let cfg = SaeConfig::transcoder(d_model, d_model, 1, Architecture::Relu, false)?;
        Ok(Transcoder {
            layer,
            input,
            name: EMPTY_TRANSCODER.into(),
            sae: SaeOf::<f32>::zeros(cfg)?,
        })
    }
}

/// A model with one transcoder per layer: makes graphs and runs interventions.
#[derive(Debug)]
pub struct Tracer {
    /// The model.
    pub llama: Arc<Llama>,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    transcoders: Vec<Transcoder>,
}

/// Knobs of [`Tracer::trace`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceOptions {
    /// Logits, feature budget, batch.
    pub attribution: AttributionConfig,
    /// Share of the influence the kept nodes cover.
    pub node_threshold: f64,
    /// Share of the influence the kept edges cover.
    pub edge_threshold: f64,
    /// Paths printed.
    pub n_paths: usize,
    /// Features ablated by the real-model check (0: no check).
    pub n_ablate: usize,
    /// Positions whose MLP outputs are held fixed, without nodes: those this rule drops (default: the
    /// harvest's, position 0, special tokens and attention sinks; see [`capture::Holding`]).
    pub exclusion: ExclusionRule,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            attribution: AttributionConfig::default(),
            node_threshold: 0.8,
            edge_threshold: 0.98,
            n_paths: 5,
            n_ablate: 10,
            exclusion: ExclusionRule::default(),
        }
    }
}

/// The real-model check: the most influential kept features ablated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AblationCheck {
    /// The target token (the most probable logit).
    pub target: String,
    /// The target's `logit − mean logit` before.
    pub before: f64,
    /// The features ablated, in words.
    pub features: Vec<String>,
    /// Its change in the real model (attention free).
    pub real_change: f64,
    /// The same features, as edits of the real model (scale 0).
    pub ablated: Vec<FeatureEdit>,
    /// The graph's prediction from the direct edges alone (other features held).
    pub predicted_direct: f64,
    /// The graph's prediction propagated along its edges (other features respond, attention frozen).
    pub predicted: f64,
}

/// Everything `zephyra attribute` reports about one graph (its `--json` object, besides `out` and
/// `seconds`).
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// Prompt tokens.
    pub n_tokens: usize,
    /// Positions held fixed (no feature or error nodes; [`TraceOptions::exclusion`]).
    pub held_positions: Vec<usize>,
    /// The logit nodes: (token, probability).
    pub logits: Vec<(String, f32)>,
    /// Largest |frozen-model logit − model logit|.
    pub max_abs_logit_error: f32,
    /// Active features in all.
    pub n_active_features: usize,
    /// Feature nodes in the graph.
    pub n_feature_nodes: usize,
    /// Nodes before pruning.
    pub n_nodes: usize,
    /// Non-zero edges before pruning.
    pub n_edges: usize,
    /// Nodes in the file.
    pub n_nodes_pruned: usize,
    /// Edges in the file.
    pub n_edges_pruned: usize,
    /// Scores of the whole graph.
    pub scores: GraphScores,
    /// Scores of the pruned graph.
    pub scores_pruned: GraphScores,
    /// The strongest paths into the target: (score, nodes in words).
    pub paths: Vec<(f64, Vec<String>)>,
    /// The real-model check (absent with `n_ablate` 0 or no kept feature).
    pub check: Option<AblationCheck>,
}

/// A traced prompt.
#[derive(Debug, Clone)]
pub struct Traced {
    /// The graph file.
    pub file: GraphFile,
    /// What to print.
    pub summary: TraceSummary,
}

impl Tracer {
    /// A tracer over `transcoders`, one per layer of `llama` in layer order.
    pub fn new(
        llama: Arc<Llama>,
        tokenizer: Arc<Tokenizer>,
        transcoders: Vec<Transcoder>,
    ) -> Result<Self> {
        let n_layers = llama.config().n_layers;
        let layers: Vec<usize> = transcoders.iter().map(|t| t.layer).collect();
        if layers != (0..n_layers).collect::<Vec<_>>() {
            return Err(AnalysisError::InvalidArgument(format!(
                "attribution replaces every MLP: the transcoders cover layers {layers:?} of 0..{n_layers}; \
                 train the rest with `zephyra train --transcoder --layers all` (or stand in for them with \
                 `Transcoder::empty`: their MLPs become error nodes)"
            )));
        }
        Ok(Tracer {
            llama,
            tokenizer,
            transcoders,
        })
    }

    /// The transcoders, in layer order.
    pub fn transcoders(&self) -> &[Transcoder] {
        &self.transcoders
    }

    /// A token as text (`<id>` when it does not decode).
    pub fn piece(&self, id: u32) -> String {
        self.tokenizer
            .decode(&[id])
            .unwrap_or_else(|_| format!("<{id}>"))
    }

    /// The prompt's tokens, checked to be non-empty and to fit the context.
    pub fn tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        let tokens = self
            .tokenizer
            .encode(prompt)
            .map_err(AnalysisError::model)?;
        let n_ctx = self.llama.config().context_length;
        if tokens.is_empty() {
            return Err(AnalysisError::InvalidArgument(
                "the prompt is empty: give the text whose next token to explain".into(),
            ));
        }
        if tokens.len() > n_ctx {
            return Err(AnalysisError::InvalidArgument(format!(
                "the prompt has {} tokens, more than the model's context of {n_ctx}: shorten it",
                tokens.len()
            )));
        }
        Ok(tokens)
    }

    /// Runs `tokens` through the real model without and with `edits`.
    pub fn intervene(&self, tokens: &[u32], edits: &[FeatureEdit]) -> Result<Intervened> {
        let decoders: Vec<&[f32]> = self.transcoders.iter().map(|t| &t.sae.w_dec[..]).collect();
        intervene(&self.llama, &decoders, tokens, edits)
    }

    /// The pruned graph of `prompt` named `slug`; `progress(done, total)` after each backward pass.
    pub fn trace(
        &self,
        prompt: &str,
        slug: &str,
        opts: &TraceOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Traced> {
        let tokens = self.tokens(prompt)?;
        self.trace_tokens(&tokens, prompt, slug, opts, progress)
    }

    /// [`Tracer::trace`] of given tokens (`prompt`: their text, for the file).
    pub fn trace_tokens(
        &self,
        tokens: &[u32],
        prompt: &str,
        slug: &str,
        opts: &TraceOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Traced> {
        let saes: Vec<(HookPoint, &Sae)> =
            self.transcoders.iter().map(|t| (t.input, &t.sae)).collect();
        let is_special = |id: u32| self.tokenizer.is_special(id);
        let holding = capture::Holding {
            rule: opts.exclusion,
            is_special: &is_special,
        };
        let built = capture::build(&self.llama, &saes, tokens, &holding)?;
        let graph = attribute(&built.local, &opts.attribution, progress)?;
        let pruned = prune(&graph, opts.node_threshold, opts.edge_threshold)?;
        let (full, kept) = (scores(&graph, None)?, scores(&graph, Some(&pruned))?);
        let prompt_tokens: Vec<String> = tokens.iter().map(|&t| self.piece(t)).collect();
        let logit_tokens: Vec<String> = graph.logit_tokens.iter().map(|&t| self.piece(t)).collect();
        let names: Vec<String> = self.transcoders.iter().map(|t| t.name.clone()).collect();
        let labels = GraphLabels {
            slug,
            prompt,
            prompt_tokens: &prompt_tokens,
            logit_tokens: &logit_tokens,
            transcoders: &names,
            node_threshold: opts.node_threshold,
        };
        let file = graph_file(&graph, &pruned, &labels);
        let describe = |i: usize| describe_node(&graph, i, &prompt_tokens, &logit_tokens);
        let paths = top_paths(&graph, &pruned, graph.logit_start(), opts.n_paths, 64);
        let check = self.check(&graph, &pruned, opts.n_ablate, &describe)?;
        let summary = TraceSummary {
            n_tokens: tokens.len(),
            held_positions: (0..tokens.len()).filter(|&p| built.local.held[p]).collect(),
            logits: logit_tokens
                .iter()
                .cloned()
                .zip(graph.logit_probs.iter().copied())
                .collect(),
            max_abs_logit_error: built.max_abs_logit_error,
            n_active_features: graph.n_active,
            n_feature_nodes: graph.features.len(),
            n_nodes: graph.n_nodes(),
            n_edges: graph.adjacency.iter().filter(|&&a| a != 0.0).count(),
            n_nodes_pruned: file.nodes.len(),
            n_edges_pruned: file.links.len(),
            scores: full,
            scores_pruned: kept,
            paths: paths
                .iter()
                .map(|p| (p.score, p.nodes.iter().map(|&i| describe(i)).collect()))
                .collect(),
            check,
        };
        Ok(Traced { file, summary })
    }

    /// Ablates the `n` most influential kept features in the real model (see the module's header).
    fn check(
        &self,
        g: &Graph,
        pruned: &Pruned,
        n: usize,
        describe: &dyn Fn(usize) -> String,
    ) -> Result<Option<AblationCheck>> {
        let chosen = most_influential_features(g, pruned, n);
        if chosen.is_empty() {
            return Ok(None);
        }
        let edits: Vec<FeatureEdit> = chosen
            .iter()
            .map(|&i| {
                let f = &g.features[i];
                FeatureEdit {
                    layer: f.layer,
                    pos: f.pos,
                    feature: f.feature,
                    activation: f.activation,
                    scale: 0.0,
                }
            })
            .collect();
        let out = self.intervene(&g.tokens, &edits)?;
        let v = g.logit_tokens[0];
        let before = demeaned(&out.before, v);
        let (predicted_direct, predicted) = predicted_change(g, &chosen, &vec![0.0; chosen.len()]);
        Ok(Some(AblationCheck {
            target: self.piece(v),
            features: chosen.iter().map(|&i| describe(i)).collect(),
            before,
            real_change: demeaned(&out.after, v) - before,
            predicted_direct,
            predicted,
            ablated: edits,
        }))
    }
}

/// The `n` kept feature nodes with the most influence on the logits, most influential first.
pub fn most_influential_features(g: &Graph, pruned: &Pruned, n: usize) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..g.features.len())
        .filter(|&i| pruned.node_mask[i])
        .collect();
    kept.sort_by(|&a, &b| pruned.cumulative[a].total_cmp(&pruned.cumulative[b]));
    kept.truncate(n);
    kept
}

/// The graph's prediction of the first logit's change when feature nodes `chosen` are scaled by
/// `scales`: `(direct edges only, propagated along the edges)`. Propagated: each other feature's
/// activation moves by its pre-activation's change (`Σ_s A[t,s] · Δa_s / a_s`, the edges being
/// `a_s ×` the linear effect), features visited in layer order (edges only point to later layers).
pub fn predicted_change(g: &Graph, chosen: &[usize], scales: &[f32]) -> (f64, f64) {
    let n_f = g.features.len();
    let target = g.logit_start();
    // Relative change of every source node's value (features only; errors and tokens fixed).
    let mut rel = vec![0.0f64; n_f];
    for (&i, &s) in chosen.iter().zip(scales) {
        rel[i] = f64::from(s) - 1.0;
    }
    let direct: f64 = chosen
        .iter()
        .map(|&i| f64::from(g.edge(target, i)) * rel[i])
        .sum();
    let mut order: Vec<usize> = (0..n_f).collect();
    order.sort_by_key(|&i| (g.features[i].layer, g.features[i].pos));
    for &t in &order {
        if chosen.contains(&t) {
            continue;
        }
        let d_pre: f64 = (0..n_f)
            .filter(|&s| rel[s] != 0.0)
            .map(|s| f64::from(g.edge(t, s)) * rel[s])
            .sum();
        let a = f64::from(g.features[t].activation);
        if a != 0.0 {
            rel[t] = d_pre / a;
        }
    }
    let propagated = (0..n_f)
        .filter(|&s| rel[s] != 0.0)
        .map(|s| f64::from(g.edge(target, s)) * rel[s])
        .sum();
    (direct, propagated)
}

/// A node in words: `tok 3 " Paris"`, `L12 f345 @7 (2.31)`, `err L4 @2`, `logit " Paris"`.
pub fn describe_node(g: &Graph, i: usize, prompt: &[String], logits: &[String]) -> String {
    let n_pos = g.tokens.len();
    if i < g.error_start() {
        let f = &g.features[i];
        format!(
            "L{} f{} @{} ({:.2})",
            f.layer, f.feature, f.pos, f.activation
        )
    } else if i < g.token_start() {
        let k = i - g.error_start();
        format!("err L{} @{}", k / n_pos, k % n_pos)
    } else if i < g.logit_start() {
        let p = i - g.token_start();
        format!(
            "tok {p} {:?}",
            prompt.get(p).map(String::as_str).unwrap_or("")
        )
    } else {
        let k = i - g.logit_start();
        format!(
            "logit {:?}",
            logits.get(k).map(String::as_str).unwrap_or("")
        )
    }
}
