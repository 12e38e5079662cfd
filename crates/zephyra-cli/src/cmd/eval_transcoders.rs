//! `zephyra eval --transcoders DIR`: the replacement model (a transcoder per MLP), per layer and all at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;
use zephyra_analysis::eval_data::held_out_tail;
use zephyra_analysis::replacement::{
    evaluate_replacement, LayerTranscoder, ReplacementConfig, ReplacementFigures,
};
use zephyra_data::pack::{ContextStream, PackOptions, TextEncoder, DEFAULT_SHUFFLE_CONTEXTS};
use zephyra_data::ExclusionRule;

use super::eval::{corpus_description, progress_bar, Args};
use super::source::load_model;
use super::Global;
use crate::args::transcoders::TranscodersArgs;
use crate::args::ModelSpec;

/// The JSON written to `--out` (default `DIR/eval.json`) and printed with `--json`.
#[derive(Debug, Serialize)]
struct TranscoderReport {
    transcoders: String,
    model: String,
    corpus: String,
    ctx: usize,
    n_contexts: usize,
    ce_contexts: usize,
    /// The rows the figures are taken on (those the transcoders were trained on).
    exclusion_rule: String,
    figures: ReplacementFigures,
}

pub fn run(args: &Args, dir: PathBuf, global: &Global) -> anyhow::Result<ExitCode> {
    let spec = args
        .stack
        .model
        .clone()
        .unwrap_or_else(|| recorded_model(args, &dir));
    let (model, tokenizer, model_path) =
        load_model(&spec.to_string(), args.stack.precision.precision)?;
    let tcs = TranscodersArgs {
        transcoders: dir.clone(),
    }
    .load(&model)?;
    let ctx = args
        .ctx
        .or(tcs[0].sae.cfg.metadata.context_size)
        .unwrap_or(128);
    if ctx < 2 || ctx > model.config().context_length {
        bail!(
            "--ctx {ctx} must be between 2 and the model's context length {}",
            model.config().context_length
        );
    }
    let n_contexts = (args.tokens as usize / ctx).max(1);
    let ce_contexts = (args.ce_tokens as usize).div_ceil(ctx).min(n_contexts);
    let base = args.corpus.open()?;
    let corpus = if args.corpus.is_default() {
        held_out_tail(&base, args.train_seed)?
    } else {
        base
    };
    let encoder: Arc<dyn TextEncoder> = tokenizer.clone();
    let opts = PackOptions {
        ctx,
        seed: args.seed,
        shuffle_contexts: DEFAULT_SHUFFLE_CONTEXTS.min(n_contexts),
    };
    let contexts: Vec<Vec<u32>> = ContextStream::new(corpus.documents(), encoder, opts)?
        .take(n_contexts)
        .collect::<Result<_, _>>()
        .context("reading the eval contexts")?;
    let layers: Vec<LayerTranscoder<'_>> = tcs
        .iter()
        .map(|t| LayerTranscoder {
            layer: t.layer,
            input: t.input,
            output: t.output,
            transcoder: &t.sae,
        })
        .collect();
    let cfg = ReplacementConfig {
        batch_contexts: args.batch.batch_contexts,
        downstream_contexts: ce_contexts,
        rule: ExclusionRule::default(),
    };
    let bar = progress_bar(global);
    bar.set_message("replacement");
    let is_special = |id: u32| tokenizer.is_special(id);
    let figures = evaluate_replacement(
        &model,
        &layers,
        &is_special,
        &contexts,
        &cfg,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let report = TranscoderReport {
        transcoders: dir.display().to_string(),
        model: model_path.display().to_string(),
        corpus: corpus_description(&args.corpus.data, &corpus),
        ctx,
        n_contexts: contexts.len(),
        ce_contexts,
        exclusion_rule: cfg.rule.describe(),
        figures,
    };
    let out = args.out.clone().unwrap_or_else(|| dir.join("eval.json"));
    let text = serde_json::to_string_pretty(&report)?;
    zephyra_io::write_atomic(&out, text.as_bytes())
        .with_context(|| format!("writing --out {}", out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report.figures);
    }
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn print_table(f: &ReplacementFigures) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("layer      FVE   error‖·‖  rel.error   CE(this MLP replaced)   KL");
    for l in &f.layers {
        println!(
            "{:>5}  {:>7.4}  {:>9.4}  {:>9.4}  {:>22}  {}",
            l.layer,
            l.reconstruction.fve,
            l.error_norm,
            l.relative_error_norm,
            opt(l.ce_replaced),
            opt(l.kl_replaced)
        );
    }
    if let Some(a) = &f.all {
        println!(
            "every MLP replaced ({} positions): CE {:.4} (clean {:.4}, every MLP mean-ablated {:.4}), \
             delta LM loss {:.4}, KL {:.4}, CE loss recovered {}",
            a.n_positions,
            a.ce_replaced,
            a.ce_clean,
            a.ce_mean_ablated,
            a.delta_lm_loss,
            a.kl_replaced,
            opt(a.ce_recovered)
        );
    }
}

/// Without `--model`: the model the first `layer-{l}/` transcoder of `dir` records, else SmolLM2 (as the
/// `--sae` commands do).
fn recorded_model(args: &Args, dir: &Path) -> ModelSpec {
    let first = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("layer-"))
            })
            .min()
    });
    match first.and_then(|p| zephyra_sae::saelens::load(&p).ok()) {
        Some(sae) => args.stack.model_for(&sae),
        None => ModelSpec::smollm2(),
    }
}
