//! `zephyra attribute`: the attribution graph of one prompt through per-layer transcoders, pruned, written in
//! circuit-tracer's frontend JSON; prints the strongest paths into the most probable next token.
//!
//! stdout: the top logits, node / edge counts before and after pruning, replacement and completeness
//! scores, the top paths and the real-model check (the most influential features ablated in the model,
//! the target logit's change beside the graph's prediction); with `--json`, one JSON object with the
//! same (schema: [`Summary`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use zephyra_analysis::attribution::trace::TraceSummary;
use zephyra_analysis::attribution::{AttributionConfig, TraceOptions, Tracer, Transcoder};
use zephyra_lm::HookPoint;

use super::source::load_model;
use super::Global;
use crate::args::harvest::ExclusionArgs;
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
    /// The real-model check: ablate this many of the most influential features (attention free) and
    /// report the target logit's change beside the graph's prediction; 0 = no check.
    #[arg(long, default_value_t = 10)]
    pub ablate: usize,
    #[command(flatten)]
    pub exclusion: ExclusionArgs,
    /// Accept transcoders for only some layers: the MLPs of the others stay whole, as error nodes (no
    /// features there; the local replacement model stays exact). Without it a missing layer is refused.
    #[arg(long)]
    pub allow_missing_layers: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints: the library's summary, where the graph went and how long it took.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub out: String,
    #[serde(flatten)]
    pub trace: TraceSummary,
    pub seconds: f64,
}

/// Loads `--transcoders` into a tracer over the model; with `allow_missing`, a layer without a transcoder
/// gets [`Transcoder::empty`] (its MLP is an error node), else it is refused.
pub fn tracer(
    model: Arc<zephyra_lm::Llama>,
    tokenizer: Arc<zephyra_lm::Tokenizer>,
    args: &TranscodersArgs,
    allow_missing: bool,
) -> anyhow::Result<Tracer> {
    let (n_layers, d) = (model.config().n_layers, model.config().d_model);
    let mut by_layer: Vec<Option<Transcoder>> = (0..n_layers).map(|_| None).collect();
    for t in args.load(&model)? {
        by_layer[t.layer] = Some(Transcoder {
            layer: t.layer,
            input: t.input,
            name: t.dir.display().to_string(),
            sae: t.sae,
        });
    }
    let missing: Vec<usize> = (0..n_layers).filter(|&l| by_layer[l].is_none()).collect();
    if !missing.is_empty() {
        if !allow_missing {
            bail!(
                "{} has no transcoder for layers {missing:?} of 0..{n_layers}: train them with `zephyra \
                 train --transcoder --layers all`, or pass --allow-missing-layers to keep those MLPs whole \
                 as error nodes",
                args.transcoders.display()
            );
        }
        tracing::warn!(
            ?missing,
            "layers without a transcoder: their MLPs are error nodes (no features there)"
        );
    }
    let transcoders = by_layer
        .into_iter()
        .enumerate()
        .map(|(l, t)| match t {
            Some(t) => Ok(t),
            None => Transcoder::empty(l, HookPoint::Ln2Normalized(l), d),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tracer::new(model, tokenizer, transcoders)
        .with_context(|| format!("using the transcoders in {}", args.transcoders.display()))
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
    let tracer = tracer(
        model,
        tokenizer,
        &args.transcoders,
        args.allow_missing_layers,
    )?;
    let opts = TraceOptions {
        attribution: AttributionConfig {
            max_n_logits: args.max_logits,
            desired_logit_prob: args.logit_prob,
            max_feature_nodes: (args.max_feature_nodes > 0).then_some(args.max_feature_nodes),
            batch_size: args.batch,
        },
        node_threshold: args.node_threshold,
        edge_threshold: args.edge_threshold,
        n_paths: args.paths,
        n_ablate: args.ablate,
        exclusion: args.exclusion.rule(),
    };
    let slug = args.slug.clone().unwrap_or_else(|| {
        args.out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "graph".into())
    });
    let bar = progress_bar(global);
    let traced = tracer
        .trace(&args.prompt, &slug, &opts, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .context("attributing --prompt")?;
    bar.finish_and_clear();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    zephyra_io::write_atomic(&args.out, &serde_json::to_vec(&traced.file)?)
        .with_context(|| format!("writing --out {}", args.out.display()))?;
    let summary = Summary {
        out: args.out.display().to_string(),
        trace: traced.summary,
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
        .trace
        .logits
        .iter()
        .map(|(t, p)| format!("{t:?} {p:.3}"))
        .collect();
    println!("next token: {}", logits.join(", "));
    println!(
        "local replacement model: logits within {:.2e} of the model's",
        s.trace.max_abs_logit_error
    );
    if !s.trace.held_positions.is_empty() {
        println!(
            "held fixed (no nodes; the exclusion rule, --keep-sinks to keep them): positions {:?}",
            s.trace.held_positions
        );
    }
    println!(
        "graph: {} nodes ({} of {} active features), {} edges; pruned: {} nodes, {} edges",
        s.trace.n_nodes,
        s.trace.n_feature_nodes,
        s.trace.n_active_features,
        s.trace.n_edges,
        s.trace.n_nodes_pruned,
        s.trace.n_edges_pruned
    );
    println!(
        "replacement score {:.3} (pruned {:.3}), completeness {:.3} (pruned {:.3})",
        s.trace.scores.replacement,
        s.trace.scores_pruned.replacement,
        s.trace.scores.completeness,
        s.trace.scores_pruned.completeness
    );
    println!(
        "top paths to {:?}:",
        s.trace.logits.first().map(|l| l.0.as_str()).unwrap_or("")
    );
    for (score, nodes) in &s.trace.paths {
        println!("  {score:.4}  {}", nodes.join(" → "));
    }
    if let Some(c) = &s.trace.check {
        println!(
            "check: ablating the {} most influential features in the real model moves {:?} (logit − mean {:.3}) by {:+.3}; \
             the graph predicts {:+.3} (direct edges) / {:+.3} (along the graph)",
            c.features.len(),
            c.target,
            c.before,
            c.real_change,
            c.predicted_direct,
            c.predicted
        );
    }
    println!("wrote {} in {:.1} s", s.out, s.seconds);
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
