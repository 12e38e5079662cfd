//! `zephyra attribute`: the attribution graph of one prompt through per-layer transcoders, pruned, written in
//! circuit-tracer's frontend JSON; prints the strongest paths into the most probable next token.
//!
//! stdout: the top logits, node / edge counts before and after pruning, replacement and completeness
//! scores, and the top paths; with `--json`, one JSON object with the same (schema: [`Summary`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use zephyra_analysis::attribution::json::{graph_file, GraphLabels};
use zephyra_analysis::attribution::paths::top_paths;
use zephyra_analysis::attribution::prune::{prune, scores};
use zephyra_analysis::attribution::{attribute, capture, AttributionConfig, Graph, GraphScores};

use super::source::load_model;
use super::Global;
use crate::args::transcoders::TranscodersArgs;
use crate::args::values::unit_open_closed;
use crate::args::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub transcoders: TranscodersArgs,
    /// The prompt whose next token is explained.
    #[arg(long)]
    pub prompt: String,
    /// Where to write the graph (circuit-tracer's frontend JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The graph's name in the file [default: the file name without extension].
    #[arg(long)]
    pub slug: Option<String>,
    /// Keep the nodes covering this share of the influence on the logits.
    #[arg(long, default_value_t = 0.8, value_parser = unit_open_closed::<f64>)]
    pub node_threshold: f64,
    /// Keep the edges covering this share of the influence on the logits.
    #[arg(long, default_value_t = 0.98, value_parser = unit_open_closed::<f64>)]
    pub edge_threshold: f64,
    /// At most this many feature nodes (the most influential, found as circuit-tracer does); 0 = all.
    #[arg(long, default_value_t = 4096)]
    pub max_feature_nodes: usize,
    /// At most this many logit nodes.
    #[arg(long, default_value_t = 10)]
    pub max_logits: usize,
    /// Logit nodes cover this much of the next-token probability.
    #[arg(long, default_value_t = 0.95, value_parser = unit_open_closed::<f64>)]
    pub logit_prob: f64,
    /// Targets per backward pass.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Paths to print.
    #[arg(long, default_value_t = 5)]
    pub paths: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub out: String,
    pub n_tokens: usize,
    pub logits: Vec<(String, f32)>,
    pub max_abs_logit_error: f32,
    pub n_active_features: usize,
    pub n_feature_nodes: usize,
    pub n_nodes: usize,
    pub n_edges: usize,
    pub n_nodes_pruned: usize,
    pub n_edges_pruned: usize,
    pub scores: GraphScores,
    pub scores_pruned: GraphScores,
    pub paths: Vec<(f64, Vec<String>)>,
    pub seconds: f64,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    if args.batch == 0 || args.max_logits == 0 {
        bail!("--batch and --max-logits must be at least 1");
    }
    // Attribution reads the f32 weights: `--precision bf16` is refused by the weight accessors.
    let (model, tokenizer, _path) = load_model(
        &args.model.model.to_string(),
        args.model.precision.precision,
    )?;
    let tcs = args.transcoders.load(&model)?;
    let n_layers = model.config().n_layers;
    if tcs.len() != n_layers {
        let have: Vec<usize> = tcs.iter().map(|t| t.layer).collect();
        bail!(
            "attribution replaces every MLP: {} holds transcoders for layers {have:?} of 0..{n_layers}; \
             train the rest with `zephyra train --transcoder --layers all`",
            args.transcoders.transcoders.display()
        );
    }
    let tokens = tokenizer
        .encode(&args.prompt)
        .context("tokenizing --prompt")?;
    if tokens.is_empty() {
        bail!("--prompt is empty: give the text whose next token to explain");
    }
    let saes: Vec<(zephyra_lm::HookPoint, &zephyra_sae::Sae)> =
        tcs.iter().map(|t| (t.input, &t.sae)).collect();
    let built =
        capture::build(&model, &saes, &tokens).context("running the prompt through the model")?;
    let lr = &built.local;
    let cfg = AttributionConfig {
        max_n_logits: args.max_logits,
        desired_logit_prob: args.logit_prob,
        max_feature_nodes: (args.max_feature_nodes > 0).then_some(args.max_feature_nodes),
        batch_size: args.batch,
    };
    let bar = progress_bar(global);
    let graph = attribute(lr, &cfg, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let pruned = prune(&graph, args.node_threshold, args.edge_threshold)?;
    let (full, kept) = (scores(&graph, None)?, scores(&graph, Some(&pruned))?);

    let piece = |id: u32| {
        tokenizer
            .decode(&[id])
            .unwrap_or_else(|_| format!("<{id}>"))
    };
    let prompt_tokens: Vec<String> = tokens.iter().map(|&t| piece(t)).collect();
    let logit_tokens: Vec<String> = graph.logit_tokens.iter().map(|&t| piece(t)).collect();
    let transcoders: Vec<String> = tcs.iter().map(|t| t.dir.display().to_string()).collect();
    let slug = args.slug.clone().unwrap_or_else(|| {
        args.out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "graph".into())
    });
    let labels = GraphLabels {
        slug: &slug,
        prompt: &args.prompt,
        prompt_tokens: &prompt_tokens,
        logit_tokens: &logit_tokens,
        transcoders: &transcoders,
        node_threshold: args.node_threshold,
    };
    let file = graph_file(&graph, &pruned, &labels);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    zephyra_io::write_atomic(&args.out, &serde_json::to_vec(&file)?)
        .with_context(|| format!("writing --out {}", args.out.display()))?;

    let describe = |i: usize| describe_node(&graph, i, &prompt_tokens, &logit_tokens);
    let paths = top_paths(&graph, &pruned, graph.logit_start(), args.paths, 64);
    let n = graph.n_nodes();
    let summary = Summary {
        out: args.out.display().to_string(),
        n_tokens: tokens.len(),
        logits: logit_tokens
            .iter()
            .cloned()
            .zip(graph.logit_probs.iter().copied())
            .collect(),
        max_abs_logit_error: built.max_abs_logit_error,
        n_active_features: graph.n_active,
        n_feature_nodes: graph.features.len(),
        n_nodes: n,
        n_edges: graph.adjacency.iter().filter(|&&a| a != 0.0).count(),
        n_nodes_pruned: file.nodes.len(),
        n_edges_pruned: file.links.len(),
        scores: full,
        scores_pruned: kept,
        paths: paths
            .iter()
            .map(|p| (p.score, p.nodes.iter().map(|&i| describe(i)).collect()))
            .collect(),
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary) {
    let logits: Vec<String> = s
        .logits
        .iter()
        .map(|(t, p)| format!("{t:?} {p:.3}"))
        .collect();
    println!("next token: {}", logits.join(", "));
    println!(
        "local replacement model: logits within {:.2e} of the model's",
        s.max_abs_logit_error
    );
    println!(
        "graph: {} nodes ({} of {} active features), {} edges; pruned: {} nodes, {} edges",
        s.n_nodes,
        s.n_feature_nodes,
        s.n_active_features,
        s.n_edges,
        s.n_nodes_pruned,
        s.n_edges_pruned
    );
    println!(
        "replacement score {:.3} (pruned {:.3}), completeness {:.3} (pruned {:.3})",
        s.scores.replacement,
        s.scores_pruned.replacement,
        s.scores.completeness,
        s.scores_pruned.completeness
    );
    println!(
        "top paths to {:?}:",
        s.logits.first().map(|l| l.0.as_str()).unwrap_or("")
    );
    for (score, nodes) in &s.paths {
        println!("  {score:.4}  {}", nodes.join(" → "));
    }
    println!("wrote {} in {:.1} s", s.out, s.seconds);
}

/// A node in words: `tok 3 " Paris"`, `L12 f345 @7`, `err L4 @2`, `logit " Paris"`.
fn describe_node(g: &Graph, i: usize, prompt: &[String], logits: &[String]) -> String {
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

fn progress_bar(global: &Global) -> ProgressBar {
    if !global.show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} feature rows (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("attribution");
    bar
}
