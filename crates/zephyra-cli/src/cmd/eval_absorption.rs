//! `zephyra eval --absorption`: first-letter feature absorption of one SAE on its model (Chanin et al.
//! 2024, SAEBench's procedure; see the README's eval section).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use zephyra_analysis::absorption::prompts::TEMPLATE_SUFFIX;
use zephyra_analysis::absorption::{
    letter_activations, score_absorption, AbsorptionConfig, AbsorptionPrompts, AbsorptionReport,
};
use zephyra_analysis::report::EvaluatedSae;

use super::Global;

/// The `eval` flags of this path.
#[derive(Debug, Clone, clap::Args)]
pub struct AbsorptionArgs {
    /// Measure first-letter feature absorption (Chanin et al. 2024, as SAEBench does) instead of the
    /// reconstruction figures: letter probes on the model's activations at the SAE's hook, k-sparse
    /// probing for each letter's main latents, then which latents absorbed the letter on the test words.
    /// Writes SAE_DIR/eval_absorption.json (or --out).
    #[arg(long)]
    pub absorption: bool,
    /// With --absorption: single-token alphabetic words drawn from the vocabulary (80 % train, 20 % test);
    /// each costs one ~90-token forward to the hook.
    #[arg(
        long,
        default_value_t = 3000,
        value_name = "N",
        requires = "absorption"
    )]
    pub absorption_words: usize,
}

/// Runs the absorption eval of the SAE in `args.stack`.
pub fn run(args: &super::eval::Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sae_dir = &args.stack.sae;
    let sae = args.stack.load_sae()?;
    let hook = args.stack.hook_of(&sae)?;
    if let (Some(given), Some(recorded)) = (args.stack.hook, &sae.cfg.metadata.hook_name) {
        if &given.to_string() != recorded {
            bail!(
                "the SAE in {} was trained at hook `{recorded}` but --hook is `{given}`: absorption is \
                 measured at the SAE's own hook; drop --hook",
                sae_dir.display()
            );
        }
    }
    let others = super::eval::load_seed_runs(&args.seed_runs, &sae, hook)?;
    let (model, tokenizer, model_path) = super::eval::load_model_for(&args.stack, &sae, hook)?;

    let prompts = AbsorptionPrompts {
        n_words: args.absorption.absorption_words,
        batch: args.batch.batch_contexts,
        ..AbsorptionPrompts::default()
    };
    let bar = progress_bar(global);
    bar.set_message("spelling prompts");
    // The probes read the model, not the SAE: one pass of the prompts serves every seed.
    let (train, test) = letter_activations(&model, &tokenizer, hook, &prompts, &mut |done, n| {
        bar.set_length(n as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("reading the spelling prompts' activations at `{hook}`"))?;
    let cfg = AbsorptionConfig::default();
    let mut reports = Vec::new();
    for (dir, run) in std::iter::once((sae_dir.clone(), sae)).chain(others) {
        let figures = score_absorption(&train, &test, &run, &cfg, &mut |stage, done, n| {
            bar.set_message(stage);
            bar.set_length(n as u64);
            bar.set_position(done as u64);
        })
        .with_context(|| format!("scoring the SAE in {} for absorption", dir.display()))?;
        reports.push(AbsorptionReport {
            evaluated: EvaluatedSae::new(
                dir.display().to_string(),
                &run.cfg,
                run.cfg.architecture.to_string(),
                &model_path,
                model.config().name.clone(),
                hook,
            ),
            prompt_template: format!("{{word}}{TEMPLATE_SUFFIX}"),
            icl_examples: prompts.icl_examples,
            seed: prompts.seed,
            absorption: figures,
        });
    }
    bar.finish_and_clear();
    if reports.len() > 1 {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| sae_dir.join("eval_absorption_seeds.json"));
        let own = |r: &AbsorptionReport| Path::new(&r.evaluated.sae).join("eval_absorption.json");
        return super::eval::emit_seed_runs(reports, own, AbsorptionReport::write, &out, args.json);
    }
    let Some(report) = reports.pop() else {
        bail!("no SAE was scored");
    };
    let out: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| sae_dir.join("eval_absorption.json"));
    super::eval::emit_report(
        &report,
        |p| report.write(p),
        report.table(),
        &out,
        args.json,
    )
}

fn progress_bar(global: &Global) -> ProgressBar {
    if !global.show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
