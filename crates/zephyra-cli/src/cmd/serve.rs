//! `zephyra serve`: the feature browser, explainer, steering playground and run page on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use axum::serve::ListenerExt;
use zephyra_analysis::features::FeatureStore;
use zephyra_web::{router, AppState};

use super::Global;
use crate::args::SaeArgs;

#[derive(Debug, clap::Args)]
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
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sae = &args.stack.sae;
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
    serve(
        AppState::new(store, engine)
            .with_run_dir(sae)
            .with_steer_work_limit(args.max_steer_work),
        SocketAddr::new(args.host, args.port),
        |url| println!("{url}"),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `addr` and serves until the process is stopped; `on_ready` gets the URL once listening.
pub fn serve(state: AppState, addr: SocketAddr, on_ready: impl FnOnce(&str)) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (is the port in use? try --port)"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        on_ready(&format!("http://{local}"));
        // Small responses go out at once (no Nagle delay).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY");
            }
        });
        axum::serve(listener, router(state))
            .await
            .context("serving")
    })
}
