//! The `zephyra` binary: thin argument parsing over the Zephyra crates.
//!
//! `main` parses the command line and hands it to [`run`]; every subcommand lives in its own module under
//! `cmd/` and only translates arguments into library calls.

mod args;
mod cmd;
mod dist;
mod dist_harvest;
mod output;
mod rss;

use std::io::{ErrorKind, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Zephyra: open up language models with sparse autoencoders.
#[derive(Debug, Parser)]
#[command(name = "zephyra", version, about, long_about = None)]
struct Cli {
    /// Hide progress bars (they are also hidden when stderr is not a terminal).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download SmolLM2-135M-Instruct into the cache and print the path of its .gguf file.
    FetchModel(cmd::fetch_model::Args),
    /// Show a model's architecture, tensor count and hook points.
    Inspect(cmd::inspect::Args),
    /// Tokenize text and print `{"ids": [...], "tokens": [...]}`.
    Tokenize(cmd::tokenize::Args),
    /// Run the model on a text and save the activations at the given hook points.
    Run(cmd::run::Args),
    /// Generate text from a prompt (greedy or sampled), streaming tokens to stdout.
    Generate(cmd::generate::Args),
    /// Walk through an autoencoder and a sparse autoencoder step by step, with real numbers.
    ByHand(cmd::by_hand::Args),
    /// Harvest activations at hook points over a corpus into a sharded activation store.
    Harvest(cmd::harvest::Args),
    /// Train a sparse autoencoder on activations.
    Train(Box<cmd::train::Args>),
    /// Encode activations with a trained SAE and save the feature activations.
    Encode(cmd::encode::Args),
    /// Evaluate an SAE: reconstruction, sparsity, dead latents, and the model's loss with the SAE spliced in.
    Eval(cmd::eval::Args),
    /// Plot training curves and feature-density histograms (PNG and SVG).
    Plot(cmd::plot::Args),
    /// Compute per-feature statistics (top contexts, histograms, logit effects) over a corpus.
    Features(cmd::features::Args),
    /// Serve the feature browser, text explainer and steering playground on 127.0.0.1.
    Serve(cmd::serve::Args),
    /// Generate with a feature's decoder direction added (or clamped) at the SAE's hook.
    Steer(cmd::steer::Args),
    /// Show which features fire where on a text.
    Explain(cmd::explain::Args),
    /// The whole path on defaults: fetch, harvest, train, evaluate, compute features, open the app.
    Demo(cmd::demo::Args),
    /// Measure throughput (forward pass, SAE training).
    Bench(cmd::bench::Args),
    /// Trace a prompt's attribution graph through per-layer transcoders (circuit-tracer's JSON).
    Attribute(cmd::attribute::Args),
    /// Convert an SAE between the SAELens layout and Gemma Scope (`--from gemma-scope`, `--to gemma-scope`).
    Convert(cmd::convert::Args),
    /// Write synthetic activations with known true features (SynthSAEBench design) as an activation store.
    Synth(cmd::synth::Args),
}

impl Command {
    /// The subcommand's name as typed (`fetch-model`, `train`, …).
    fn name(&self) -> &'static str {
        match self {
            Command::FetchModel(_) => "fetch-model",
            Command::Inspect(_) => "inspect",
            Command::Tokenize(_) => "tokenize",
            Command::Run(_) => "run",
            Command::Generate(_) => "generate",
            Command::ByHand(_) => "by-hand",
            Command::Harvest(_) => "harvest",
            Command::Train(_) => "train",
            Command::Encode(_) => "encode",
            Command::Eval(_) => "eval",
            Command::Plot(_) => "plot",
            Command::Features(_) => "features",
            Command::Serve(_) => "serve",
            Command::Steer(_) => "steer",
            Command::Explain(_) => "explain",
            Command::Demo(_) => "demo",
            Command::Bench(_) => "bench",
            Command::Convert(_) => "convert",
            Command::Attribute(_) => "attribute",
            Command::Synth(_) => "synth",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Under `mpirun` (feature `mpi`): MPI lives until the end of `main`.
    let _mpi = dist::init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            dist::abort_job_on_error(&err);
            eprintln!("error: {}", error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cmd::Global { quiet: cli.quiet };
    dist::check_parallel(
        cli.command.name(),
        matches!(cli.command, Command::Train(_) | Command::Harvest(_)),
    )?;
    match cli.command {
        Command::FetchModel(args) => cmd::fetch_model::run(args, &global),
        Command::Inspect(args) => cmd::inspect::run(args, &global),
        Command::Tokenize(args) => cmd::tokenize::run(args, &global),
        Command::Run(args) => cmd::run::run(args, &global),
        Command::Generate(args) => cmd::generate::run(args, &global),
        Command::ByHand(args) => cmd::by_hand::run(args, &global),
        Command::Harvest(args) => cmd::harvest::run(args, &global),
        Command::Train(args) => cmd::train::run(*args, &global),
        Command::Encode(args) => cmd::encode::run(args, &global),
        Command::Eval(args) => cmd::eval::run(args, &global),
        Command::Plot(args) => cmd::plot::run(args, &global),
        Command::Features(args) => cmd::features::run(args, &global),
        Command::Serve(args) => cmd::serve::run(args, &global),
        Command::Steer(args) => cmd::steer::run(args, &global),
        Command::Explain(args) => cmd::explain::run(args, &global),
        Command::Demo(args) => cmd::demo::run(args, &global),
        Command::Bench(args) => cmd::bench::run(args, &global),
        Command::Convert(args) => cmd::convert::run(args, &global),
        Command::Attribute(args) => cmd::attribute::run(args, &global),
        Command::Synth(args) => cmd::synth::run(args, &global),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("zephyra=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}

/// The error and its causes on one line, `outer: inner: …`. A cause whose message the previous one already
/// ends with is not repeated (error types that print their source in their own message), and candle's
/// errors lose the backtrace they capture under `RUST_BACKTRACE`.
fn error_message(err: &anyhow::Error) -> String {
    let backtraced: Vec<(String, String)> = err
        .chain()
        .filter_map(|cause| match cause.downcast_ref::<candle_core::Error>() {
            Some(candle_core::Error::WithBacktrace { inner, .. }) => {
                Some((cause.to_string(), inner.to_string()))
            }
            _ => None,
        })
        .collect();
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let mut message = cause.to_string();
        for (full, short) in &backtraced {
            message = message.replace(full.as_str(), short);
        }
        if parts.last().is_some_and(|prev| prev.ends_with(&message)) {
            continue;
        }
        parts.push(message);
    }
    parts.join(": ")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_is_a_consistent_clap_definition() {
        // Clap checks argument ids, names and groups only in debug builds; check them here in any build.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn the_command_name_comes_from_the_parsed_enum() {
        let cli = Cli::try_parse_from(["zephyra", "--quiet", "by-hand", "--json"]).expect("parses");
        assert_eq!(cli.command.name(), "by-hand");
        let cli = Cli::try_parse_from(["zephyra", "fetch-model"]).expect("parses");
        assert_eq!(cli.command.name(), "fetch-model");
    }

    #[test]
    fn a_cause_repeated_by_its_parent_is_printed_once() {
        let io = std::io::Error::new(
            ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        );
        let err = anyhow::Error::new(zephyra_sae::SaeError::Io {
            path: "run/cfg.json".into(),
            source: io,
        })
        .context("loading the SAE");
        assert_eq!(
            error_message(&err),
            "loading the SAE: run/cfg.json: No such file or directory (os error 2)"
        );
    }
}
