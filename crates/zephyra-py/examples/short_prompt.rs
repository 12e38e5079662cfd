//! The Rust calls `model.run_with_cache(prompt, names=[hook])` makes, timed alone (tokenize, forward with
//! one capture and the last position's logits, both copied out), for `bench/run_with_cache_overhead.py`:
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p zephyra-py --example short_prompt [-- REPEATS]`
//! (with `LD_LIBRARY_PATH` naming the folder of libpython, which the crate links outside a wheel).

use std::time::Instant;

use zephyra_lm::{HookPoint, Hooks, Llama, Logits, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let path = zephyra_lm::fetch::resolve_model("smollm2")?;
    let model = Llama::load_gguf(&path)?;
    let tokenizer = Tokenizer::from_gguf(&path)?;
    let hook = HookPoint::ResidPre(15);
    let prompt = "The capital of France is";
    let once = || -> Result<usize, Box<dyn std::error::Error>> {
        let ids = tokenizer.encode(prompt)?;
        let mut hooks = Hooks::capturing([hook]);
        let out = model.forward(&[ids.as_slice()], &mut hooks, Logits::Last)?;
        let acts = out
            .activations
            .get(hook)
            .ok_or("not captured")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let logits = out
            .logits
            .ok_or("no logits")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(acts.len() + logits.len())
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
        "Rust forward ({prompt:?}, {hook}): median {:.2} ms, min {:.2} ms over {repeats}",
        1e3 * times[times.len() / 2],
        1e3 * times[0]
    );
    Ok(())
}
