//! `zephyra demo`: the whole path on defaults, sized for about 20 minutes on 2 cores: fetch the model,
//! harvest the default corpus (the Rust documentation), train a TopK SAE, evaluate it, plot its training
//! curves and feature density, compute feature statistics, print a summary and serve the app (whose run
//! page shows the eval table and the plots: `eval.json` and `plots/` are written into the SAE's directory,
//! the run directory `serve` reads).
//!
//! Each step runs the same code as its subcommand (`fetch-model`, `harvest`, `train`, `eval`, `plot`,
//! `features`, `serve`), in this process, with the arguments printed so every step can be rerun by hand. A finished
//! step is skipped when the demo is run again on the same directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use zephyra_analysis::features::FeatureStore;
use zephyra_lm::HookPoint;
use zephyra_web::AppState;

use super::{eval, features, fetch_model, harvest, plot, train, Global};
use crate::args::{ModelSpec, SaeArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for everything the demo writes.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub out: PathBuf,
    /// Hook point the SAE reads.
    #[arg(long, default_value = "blocks.15.hook_resid_pre")]
    pub hook: HookPoint,
    /// Tokens harvested and trained on.
    #[arg(long, default_value_t = 300_000)]
    pub tokens: u64,
    /// Tokens read for the feature statistics.
    #[arg(long, default_value_t = 100_000)]
    pub feature_tokens: u64,
    /// Port of the app.
    #[arg(long, default_value_t = 7878)]
    pub port: u16,
    /// Stop after the summary instead of serving the app.
    #[arg(long)]
    pub no_serve: bool,
}

/// Runs one subcommand in this process, as `zephyra ARGV…` would: `argv` is parsed by the subcommand's own
/// argument struct `A` and handed to its `run`.
fn step<A: clap::Args + clap::FromArgMatches>(
    n: usize,
    total: usize,
    what: &str,
    argv: &[String],
    done: bool,
    global: &Global,
    run: fn(A, &Global) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<()> {
    eprintln!("[{n}/{total}] {what}: zephyra {}", argv.join(" "));
    if done {
        eprintln!("        already done, skipped");
        return Ok(());
    }
    let args =
        parse::<A>(argv).with_context(|| format!("demo step {n} ({what}): bad arguments"))?;
    match run(args, global).with_context(|| {
        format!("demo step {n} ({what}) failed; rerun it alone with the command above")
    })? {
        code if code == ExitCode::SUCCESS => Ok(()),
        _ => bail!("demo step {n} ({what}) did not succeed"),
    }
}

/// `argv` (the subcommand's name, then its arguments) parsed by the subcommand's argument struct.
fn parse<A: clap::Args + clap::FromArgMatches>(argv: &[String]) -> Result<A, clap::Error> {
    let rest = argv.get(1..).unwrap_or_default();
    let matches = A::augment_args(clap::Command::new("zephyra").no_binary_name(true))
        .try_get_matches_from(rest)?;
    A::from_arg_matches(&matches)
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// The command line of each step (without `zephyra`), from the demo's options.
struct Steps {
    harvest: Vec<String>,
    train: Vec<String>,
    eval: Vec<String>,
    plot: Vec<String>,
    features: Vec<String>,
}

/// Where the demo's outputs go under `--out`: the store, the SAE (the run directory), the features.
fn dirs(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sae = out.join("sae");
    (out.join("acts"), sae.clone(), sae.join("features"))
}

fn steps(args: &Args) -> Steps {
    let (acts, sae, features) = dirs(&args.out);
    let (acts, sae, features) = (s(acts.display()), s(sae.display()), s(features.display()));
    let (hook, tokens) = (s(args.hook), s(args.tokens));
    Steps {
        harvest: [
            "harvest", "--hook", &hook, "--tokens", &tokens, "--out", &acts,
        ]
        .map(s)
        .to_vec(),
        train: [
            "train",
            "--acts",
            &acts,
            "--arch",
            "topk",
            "--k",
            "32",
            "--expansion",
            "8",
            "--tokens",
            &tokens,
            "--out",
            &sae,
        ]
        .map(s)
        .to_vec(),
        eval: [
            "eval",
            "--sae",
            &sae,
            "--hook",
            &hook,
            "--tokens",
            "50000",
            "--ce-tokens",
            "8192",
        ]
        .map(s)
        .to_vec(),
        plot: ["plot", "--run", &sae].map(s).to_vec(),
        features: [
            "features",
            "--sae",
            &sae,
            "--hook",
            &hook,
            "--tokens",
            &s(args.feature_tokens),
            "--out",
            &features,
        ]
        .map(s)
        .to_vec(),
    }
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (acts, sae, features) = dirs(out);
    let argv = steps(&args);
    let total = 7;
    step(
        1,
        total,
        "fetch the model",
        &[s("fetch-model")],
        false,
        global,
        fetch_model::run,
    )?;
    step(
        2,
        total,
        "harvest activations from the Rust documentation",
        &argv.harvest,
        acts.join("manifest.json").exists(),
        global,
        harvest::run,
    )?;
    step(
        3,
        total,
        "train a TopK SAE (k = 32, 8 × 576 latents)",
        &argv.train,
        sae.join("cfg.json").exists(),
        global,
        train::run,
    )?;
    step(
        4,
        total,
        "evaluate it",
        &argv.eval,
        false,
        global,
        eval::run,
    )?;
    // The plots only decorate the run page: a failure is reported, not fatal.
    if let Err(e) = step(
        5,
        total,
        "plot the training curves and the feature density",
        &argv.plot,
        false,
        global,
        plot::run,
    ) {
        eprintln!("        {e:#}; the run page will show the command to retry");
    }
    step(
        6,
        total,
        "compute feature statistics",
        &argv.features,
        features.join("index.json").exists(),
        global,
        features::run,
    )?;
    print_examples(&features)?;
    if args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("[7/{total}] serve the app (Ctrl-C to stop)");
    let stack = SaeArgs {
        sae: sae.clone(),
        model: Some(ModelSpec::smollm2()),
        precision: Default::default(),
        hook: Some(args.hook),
    };
    let engine = stack.engine(global)?;
    let store =
        FeatureStore::open(&features).with_context(|| format!("opening {}", features.display()))?;
    let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), args.port);
    let state = AppState::new(store, Some(engine)).with_run_dir(&sae);
    super::serve::serve(state, addr, |url| {
        println!("\nThe app: {url} (the run page with the eval and plots: {url}/run)")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints five example features: the densest ones firing on under 10 % of tokens.
fn print_examples(features: &Path) -> anyhow::Result<()> {
    let store =
        FeatureStore::open(features).with_context(|| format!("opening {}", features.display()))?;
    let mut alive: Vec<_> = store
        .index()
        .features
        .iter()
        .filter(|f| f.stats.n_fires > 0 && f.stats.density < 0.1)
        .collect();
    alive.sort_by(|a, b| b.stats.density.total_cmp(&a.stats.density));
    println!("\nExample features (id, density, top tokens → promoted tokens):");
    for f in alive.iter().step_by((alive.len() / 5).max(1)).take(5) {
        println!(
            "  {:>6}  {:.4}  {:?} → {:?}",
            f.stats.id, f.stats.density, f.top_tokens, f.top_logits
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_parses_with_its_subcommand_arguments() {
        let demo: Args = parse(&["demo", "--out", "runs/my demo", "--tokens", "1000"].map(s))
            .expect("demo arguments");
        let argv = steps(&demo);
        let harvest: harvest::Args = parse(&argv.harvest).expect("harvest");
        assert_eq!(harvest.out, Path::new("runs/my demo/acts"));
        assert_eq!(harvest.tokens, 1000);
        let train: train::Args = parse(&argv.train).expect("train");
        assert_eq!(train.out.as_deref(), Some(Path::new("runs/my demo/sae")));
        let eval: eval::Args = parse(&argv.eval).expect("eval");
        assert_eq!(eval.stack.hook, Some(demo.hook));
        parse::<plot::Args>(&argv.plot).expect("plot");
        let features: features::Args = parse(&argv.features).expect("features");
        assert_eq!(
            features.out.as_deref(),
            Some(Path::new("runs/my demo/sae/features"))
        );
    }
}
