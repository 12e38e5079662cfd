//! `zephyra serve`: the feature browser, explainer, steering playground and run page on 127.0.0.1; with
//! `--transcoders DIR`, the attribution graphs too (`/graphs`, `/graph/{name}`), and without `--sae`, only
//! them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use zephyra_analysis::features::FeatureStore;
use zephyra_web::graph::GraphSite;
use zephyra_web::{router, AppState};

use super::Global;
use crate::args::transcoders::TranscodersArgs;
use crate::args::SaeArgs;

/// What `--sae` holds when it is not given.
const NO_SAE: &str = "\u{0}";

#[derive(Debug, clap::Args)]
// `--sae` is optional here (`--transcoders` alone serves the graphs): absent, it holds `NO_SAE`, a path no
// command line can give (argv cannot hold a NUL byte).
#[command(mut_arg("sae", |a| a.required(false).default_value(NO_SAE).hide_default_value(true)))]
pub struct Args {
    // The SAE's directory is also the run shown on /run (eval.json, metrics.jsonl, plots/).
    #[command(flatten)]
    pub stack: SaeArgs,
    /// Features directory written by `zephyra features` [default: SAE/features].
    #[arg(long, value_name = "DIR")]
    pub features: Option<PathBuf>,
    /// Address to bind (other than 127.0.0.1 exposes the app to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0: any free port).
    #[arg(long, default_value_t = 7878)]
    pub port: u16,
    /// Serve the feature pages only, without loading the model (explain and steer answer 503).
    #[arg(long)]
    pub no_model: bool,
    /// Most token steps one steering request may take, `max_tokens × (prompt tokens + max_tokens)`;
    /// larger requests are refused with a 400 that says so.
    #[arg(long, value_name = "N", default_value_t = zephyra_web::jobs::DEFAULT_STEER_WORK,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steer_work: u64,
    /// Per-layer transcoders (`layer-{l}/`, each with its `features/` from `zephyra features --sae
    /// DIR/layer-{l}`): serves the attribution graphs, runs interventions and makes graphs.
    #[arg(long, value_name = "DIR")]
    pub transcoders: Option<PathBuf>,
    /// Directory of the graphs (`zephyra attribute --out DIR/NAME.json`; graphs made in the app go
    /// there too) [default: TRANSCODERS/graphs].
    #[arg(long, value_name = "DIR", requires = "transcoders")]
    pub graphs: Option<PathBuf>,
    /// As `attribute --allow-missing-layers`: layers without a transcoder keep their MLP as error nodes.
    #[arg(long, requires = "transcoders")]
    pub allow_missing_layers: bool,
}

/// The graph pages over `--transcoders` (with the model unless `--no-model`).
fn graph_site(args: &Args, dir: &std::path::Path) -> anyhow::Result<GraphSite> {
    let graphs = args.graphs.clone().unwrap_or_else(|| dir.join("graphs"));
    let n_layers = (0..)
        .take_while(|l| dir.join(format!("layer-{l}")).join("cfg.json").is_file())
        .count();
    if n_layers == 0 {
        anyhow::bail!(
            "--transcoders {} holds no layer-0/cfg.json: give the directory `zephyra train --transcoder --layers all --out` wrote",
            dir.display()
        );
    }
    let layers = (0..n_layers)
        .map(|l| {
            let store = dir.join(format!("layer-{l}")).join("features");
            if !store.is_dir() {
                tracing::info!(
                    layer = l,
                    "no features store: hover cards and feature pages are off for this layer"
                );
                return Ok(None);
            }
            FeatureStore::open(&store).map(Some).with_context(|| {
                format!(
                    "opening {} (rerun `zephyra features --sae {}`)",
                    store.display(),
                    dir.join(format!("layer-{l}")).display()
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tracer = if args.no_model {
        None
    } else {
        let model = args
            .stack
            .model
            .clone()
            .unwrap_or_else(crate::args::model::ModelSpec::smollm2);
        let (llama, tokenizer, _) =
            super::source::load_model(&model.to_string(), args.stack.precision.precision)?;
        let tcs = TranscodersArgs {
            transcoders: dir.to_path_buf(),
        };
        Some(std::sync::Arc::new(super::attribute::tracer(
            llama,
            tokenizer,
            &tcs,
            args.allow_missing_layers,
        )?))
    };
    Ok(GraphSite::new(graphs, tracer, layers))
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sae = &args.stack.sae;
    let site = match &args.transcoders {
        Some(dir) => Some(graph_site(&args, dir)?),
        None => None,
    };
    if sae.as_os_str() == NO_SAE {
        let Some(site) = site else {
            anyhow::bail!("give --sae DIR (an SAE and its features) or --transcoders DIR (attribution graphs)");
        };
        serve(
            AppState::graphs_only(site),
            SocketAddr::new(args.host, args.port),
            |url| println!("{url}/graphs"),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let dir = args
        .features
        .clone()
        .unwrap_or_else(|| sae.join("features"));
    let store = FeatureStore::open(&dir).with_context(|| {
        format!(
            "opening the features in {} (run `zephyra features --sae {}` first)",
            dir.display(),
            sae.display()
        )
    })?;
    let engine = if args.no_model {
        None
    } else {
        Some(args.stack.engine(global)?)
    };
    let mut state = AppState::new(store, engine)
        .with_run_dir(sae)
        .with_steer_work_limit(args.max_steer_work);
    if let Some(site) = site {
        state = state.with_graphs(site);
    }
    serve(state, SocketAddr::new(args.host, args.port), |url| {
        println!("{url}")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `addr` and serves until the process is stopped; `on_ready` gets the URL once listening.
pub fn serve(state: AppState, addr: SocketAddr, on_ready: impl FnOnce(&str)) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding {addr} (is the port in use? try --port)"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    on_ready(&format!("http://{local}"));
    zephyra_web::serve_blocking(listener, router(state)).context("serving")
}
