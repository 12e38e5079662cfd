//! `zephyra bench forward|train|stream`: throughput figures for the README.

use std::process::ExitCode;

use clap::Subcommand;

use super::Global;

mod forward;
mod stream;
mod train;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Tokens/s of the language model's forward pass.
    Forward(forward::Args),
    /// Tokens/s of SAE training steps.
    Train(train::Args),
    /// Training straight from the model: harvest alone, SAE steps alone, and both overlapped.
    Stream(stream::Args),
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Forward(args) => forward::run(args, global),
        What::Train(args) => train::run(args, global),
        What::Stream(args) => stream::run(args, global),
    }
}

/// The process's peak resident set size in MB (`VmHWM` in `/proc/self/status`; Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets `VmHWM` to the current RSS (Linux: writing 5 to `/proc/self/clear_refs`), so each workload
/// reports its own peak. Best effort: elsewhere the peak is the process's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
