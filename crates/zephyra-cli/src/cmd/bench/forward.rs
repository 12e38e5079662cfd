//! `zephyra bench forward`: tokens/s of the language model's forward pass over a batch of real text.
//!
//! Two workloads, as in issue 2:
//! - `resid` (a): run up to `blocks.15.hook_resid_pre` and capture it, no logits (the pass stops
//!   there, so blocks 15..29, the final norm and the unembedding are skipped);
//! - `logits` (b): the full forward with logits at every position (`[batch, seq, vocab]`).
//!
//! The batch is `--batch-contexts` rows of `--seq` tokens cut from real English text (a built-in passage, or
//! `--file`), each row starting at a different offset of the token stream. Each workload runs
//! `--warmup` untimed passes, then `--iters` timed passes; tokens/s = batch × seq × iters / time.
//! Peak RSS is the kernel's high-water mark (`VmHWM`), reset before each workload.
//!
//! `--json` prints one line per workload:
//! `{"bench": "forward", "workload": "resid"|"logits", "hook": "blocks.15.hook_resid_pre"|null,
//!   "batch", "seq", "threads", "iters", "tokens_per_s", "best_iter_s", "mean_iter_s", "peak_rss_mb",
//!   "model", "precision": "f32"|"bf16", "bf16_kernel": "avx512bf16"|"portable"|null}`.
//!
//! `--precision bf16` times the bfloat16 linear layers; `bf16_kernel` says which kernel ran them
//! (`ZEPHYRA_BF16_PORTABLE=1` forces the portable one for comparison).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use zephyra_lm::model::Bf16Kernel;
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Hooks, Llama, Precision};

use super::super::Global;
use crate::args::model::load_tokenizer;
use crate::args::renamed::OldBatchContexts;
use crate::args::ModelArgs;
use crate::rss::{peak_rss_mb, reset_peak_rss};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Workloads to time.
    #[arg(long, value_enum, num_args = 1.., default_values_t = [Workload::Resid, Workload::Logits])]
    workload: Vec<Workload>,
    /// Hook point that ends the `resid` workload.
    #[arg(long, default_value = "blocks.15.hook_resid_pre")]
    hook: HookPoint,
    /// Sequences (contexts) per forward pass.
    #[arg(long = "batch-contexts", default_value_t = 16, value_name = "N")]
    batch: usize,
    #[command(flatten)]
    old_batch: OldBatchContexts,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed passes per workload.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Untimed warm-up passes per workload.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Text to cut the batch from (UTF-8); a built-in English passage when absent.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
    /// Only print the benchmark's token stream as `{"ids": [...]}` and exit (for
    /// `bench/transformers_forward.py --token-file`, so both sides run the same tokens).
    #[arg(long)]
    print_tokens: bool,
}

/// What one timed pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// (a) up to the hook, no logits.
    Resid,
    /// (b) full forward, logits at every position.
    Logits,
}

#[derive(Debug, serde::Serialize)]
struct Measurement {
    bench: &'static str,
    workload: &'static str,
    hook: Option<String>,
    batch: usize,
    seq: usize,
    threads: usize,
    iters: usize,
    tokens_per_s: f64,
    best_iter_s: f64,
    mean_iter_s: f64,
    peak_rss_mb: Option<f64>,
    model: String,
    precision: Precision,
    bf16_kernel: Option<&'static str>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(
        args.batch > 0 && args.seq > 0,
        "--batch-contexts and --seq must be at least 1"
    );
    anyhow::ensure!(args.iters > 0, "--iters must be at least 1");
    // candle sizes its own thread use from the same variable as rayon; nothing has started yet.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("starting the worker threads")?;

    let text = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (UTF-8 text)", path.display()))?,
        None => BUILT_IN_TEXT.to_string(),
    };
    if args.print_tokens {
        let path = args.model.model.resolve(global)?;
        let stream = load_tokenizer(&path)?
            .encode(&text)
            .context("tokenizing the benchmark text")?;
        println!("{}", serde_json::json!({ "ids": stream }));
        return Ok(ExitCode::SUCCESS);
    }
    let model = args.model.load(global)?;
    args.hook.validate(model.llama.config().n_layers)?;
    let stream = model
        .tokenizer
        .encode(&text)
        .context("tokenizing the benchmark text")?;
    let rows = cut_rows(&stream, args.batch, args.seq)?;
    tracing::info!(
        batch = args.batch,
        seq = args.seq,
        threads = args.threads,
        text_tokens = stream.len(),
        "benchmarking the forward pass"
    );

    for &workload in &args.workload {
        reset_peak_rss();
        let m = pool.install(|| measure(&model.llama, &rows, workload, &args))?;
        let m = Measurement {
            peak_rss_mb: peak_rss_mb(),
            model: model.path.display().to_string(),
            ..m
        };
        super::print_result(args.json, &m, || {
            let what = match workload {
                Workload::Resid => format!("(a) up to {}, no logits", args.hook),
                Workload::Logits => "(b) full forward, logits at every position".to_string(),
            };
            let precision = match m.bf16_kernel {
                Some(kernel) => format!("{} ({kernel})", m.precision),
                None => m.precision.to_string(),
            };
            format!(
                "{what}, {precision}: {:.0} tok/s  (batch {} x {} tokens, {} threads, best {:.3} s, mean {:.3} s over {} iters, peak RSS {})",
                m.tokens_per_s,
                m.batch,
                m.seq,
                m.threads,
                m.best_iter_s,
                m.mean_iter_s,
                m.iters,
                m.peak_rss_mb
                    .map_or_else(|| "n/a".to_string(), |mb| format!("{mb:.0} MB")),
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(
    llama: &Llama,
    rows: &[Vec<u32>],
    workload: Workload,
    args: &Args,
) -> anyhow::Result<Measurement> {
    let pass = || -> anyhow::Result<()> {
        let (mut hooks, logits) = match workload {
            Workload::Resid => (Hooks::capturing([args.hook]), Logits::None),
            Workload::Logits => (Hooks::new(), Logits::All),
        };
        let out = llama.forward(rows, &mut hooks, logits)?;
        std::hint::black_box(&out);
        Ok(())
    };
    for _ in 0..args.warmup {
        pass().context("warm-up pass")?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        pass().context("timed pass")?;
        times.push(start.elapsed().as_secs_f64());
    }
    let total: f64 = times.iter().sum();
    let tokens = (args.batch * args.seq * args.iters) as f64;
    Ok(Measurement {
        bench: "forward",
        workload: match workload {
            Workload::Resid => "resid",
            Workload::Logits => "logits",
        },
        hook: (workload == Workload::Resid).then(|| args.hook.to_string()),
        batch: args.batch,
        seq: args.seq,
        threads: args.threads,
        iters: args.iters,
        tokens_per_s: tokens / total,
        best_iter_s: times.iter().copied().fold(f64::INFINITY, f64::min),
        mean_iter_s: total / args.iters as f64,
        peak_rss_mb: None,
        model: String::new(),
        precision: llama.precision(),
        bf16_kernel: (llama.precision() == Precision::Bf16).then(|| Bf16Kernel::active().name()),
    })
}

/// `batch` rows of `seq` tokens from the token stream, row `i` starting `i × stride` tokens in
/// (wrapping around), so rows differ even when the text is shorter than `batch × seq` tokens.
fn cut_rows(stream: &[u32], batch: usize, seq: usize) -> anyhow::Result<Vec<Vec<u32>>> {
    anyhow::ensure!(
        stream.len() >= seq,
        "the benchmark text has {} tokens, fewer than --seq {seq}; give a longer --file",
        stream.len()
    );
    let stride = (stream.len() / batch).max(1);
    Ok((0..batch)
        .map(|i| {
            (0..seq)
                .map(|j| stream[(i * stride + j) % stream.len()])
                .collect()
        })
        .collect())
}

/// Built-in benchmark text (original prose, about 1,100 tokens).
const BUILT_IN_TEXT: &str = "\
A river that reaches the sea through a wide delta rarely keeps a single channel for long. Each flood \
drops sand where the current slows, the bed rises, and the water finds a lower path to one side. Over \
decades the main stream swings back and forth across the plain like a loose hose, and the old channels \
fill with silt and reeds. Farmers who live on such land learn to read the signs: a bank that crumbles \
faster than usual, a new sandbar at a bend, willows dying where the ground stays wet all summer.

The first maps of these regions were drawn by surveyors who walked the levees with chains and compasses. \
Their notebooks record distances to the nearest link, the depth of every ford, and the names that local \
people gave to each bend. Many of those names survive today even where the water has long gone, so a \
village called Ferry Landing may stand three miles from any river. Historians use the notebooks to date \
the shifts, comparing them with church records of floods and with the rings of old trees.

Modern engineers try to hold the channel in place with concrete walls, dredging and spillways that open \
when the water rises above a mark. The walls protect towns and fields, but they also stop the sand from \
spreading, and without new sediment the delta slowly sinks. Some planners now argue for controlled \
breaches: gaps in the levee that let part of the flood spread over marshland, building new ground the way \
the river always did. The debate is not only technical. Land that floods on purpose cannot be farmed in \
the usual way, and the families who own it want to know who will pay.

In a small workshop at the edge of the city, a clockmaker repairs instruments that measured the river a \
century ago. One is a float gauge: a copper drum on a wire, a pen that traced the water level on a roll \
of paper turning once a week. The paper records show the daily rhythm of the tide far upstream, the slow \
swell of spring melt, and the sudden spikes of summer storms. Digitised, they give researchers a record \
of water levels long before electronic sensors, and they show that the largest floods of the last fifty \
years were not unusual by the standards of the first fifty.

Learning to program has something in common with learning a river. A newcomer sees only the surface: \
a function that returns the wrong number, a loop that never ends. With time one learns where the current \
runs fast and where it pools, which parts of a system change every week and which have not been touched \
in years. Good engineers leave notes for the next person, the way surveyors left their notebooks: why \
this check exists, which input once broke everything, what was tried and did not work. The code itself \
says what happens; the notes say why.

Consider a simple task: counting how often each word appears in a long document. The direct approach \
reads the text, splits it on spaces, lowercases each piece and adds one to a counter in a hash map. It \
works, but details matter. Punctuation sticks to words unless it is removed, numbers may or may not \
count as words, and text in other languages may not use spaces at all. A careful program states these \
choices plainly, tests them on small examples with known answers, and only then runs on the full data. \
When the result looks surprising, the first suspect is the program, not the document.

Measurements deserve the same care. A benchmark that runs once on a busy machine tells little; one that \
warms up, repeats the work several times and reports the spread tells more. The numbers should come \
with the command that produced them, the hardware, and the version of every library involved, so that \
someone else can run the same test next year and see whether anything changed. Most surprises in \
performance come from the memory system rather than from arithmetic: data that does not fit in the \
cache, copies that nobody noticed, or threads that wait on each other.

At dusk the delta is quiet. Herons stand in the shallows, a tug pushes a line of barges upstream, and \
the lights of the pumping stations come on one by one along the levee. The water keeps moving, carrying \
a little more of the continent out to sea, and somewhere a bank gives way a few inches, starting the \
next channel that a surveyor will one day write down in a notebook.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_the_requested_shape_and_differ() {
        let stream: Vec<u32> = (0..100).collect();
        let rows = cut_rows(&stream, 4, 30).expect("rows");
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.len() == 30));
        assert_eq!(rows[0][0], 0);
        assert_eq!(rows[1][0], 25);
        // Row 3 starts at 75 and wraps around after 99.
        assert_eq!(rows[3][24], 99);
        assert_eq!(rows[3][25], 0);
    }

    #[test]
    fn short_text_is_refused() {
        assert!(cut_rows(&[1, 2, 3], 2, 8).is_err());
    }
}
