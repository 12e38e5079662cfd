//! The Rust calls `model.run_with_cache(prompt, names=[hook], logits=…)` makes, timed alone (tokenize,
//! forward with one capture, the capture and the logits copied out), for `bench/python_run_with_cache.sh`:
//!
//! `cargo run --release -p zephyra-py --example short_prompt -- MODE REPEATS`
//! (with `LD_LIBRARY_PATH` naming the folder of libpython, which the crate links outside a wheel).
//!
//! MODE `embed`: capture `blocks.0.hook_resid_pre`, no logits (the pass stops after the embedding);
//! `full`: capture `blocks.15.hook_resid_pre` and the last position's logits. Prints the median and
//! minimum microseconds per call over REPEATS calls (after 3 warm-up calls).

use std::time::Instant;

use zephyra_lm::{HookPoint, Hooks, Llama, Logits, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "full".into());
    let repeats: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let (hook, logits) = match mode.as_str() {
        "embed" => (HookPoint::ResidPre(0), Logits::None),
        "full" => (HookPoint::ResidPre(15), Logits::Last),
        other => return Err(format!("mode {other:?}: use `embed` or `full`").into()),
    };
    let path = zephyra_lm::fetch::resolve_model("smollm2")?;
    let model = Llama::load_gguf(&path)?;
    let tokenizer = Tokenizer::from_gguf(&path)?;
    let prompt = "The capital of France is";
    let once = || -> Result<usize, Box<dyn std::error::Error>> {
        let ids = tokenizer.encode(prompt)?;
        let mut hooks = Hooks::capturing([hook]);
        let out = model.forward(&[ids.as_slice()], &mut hooks, logits)?;
        let acts = out
            .activations
            .get(hook)
            .ok_or("not captured")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let n_logits = match out.logits {
            Some(t) => t.flatten_all()?.to_vec1::<f32>()?.len(),
            None => 0,
        };
        Ok(acts.len() + n_logits)
    };
    for _ in 0..3 {
        once()?;
    }
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        once()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "rust {mode}: median {:.1} us, min {:.1} us over {repeats}",
        1e6 * times[times.len() / 2],
        1e6 * times[0]
    );
    Ok(())
}
