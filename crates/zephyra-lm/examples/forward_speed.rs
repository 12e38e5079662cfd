//! Forward-pass throughput on SmolLM2 or Gemma 3 270M (batch 16 × 128 tokens), for development:
//! (a) up to `resid_pre` of the middle block, (b) the full pass with logits at every position.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p zephyra-lm --example forward_speed [-- REPEATS [a|b|ab] [smollm2|gemma3-270m] [f32|bf16]]`
//! The user-facing benchmark is `zephyra bench forward`.

use std::time::Instant;

use zephyra_lm::{HookPoint, Hooks, Llama, Logits, Precision};

fn main() -> zephyra_lm::Result<()> {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let only = std::env::args().nth(2).unwrap_or_default(); // "a", "b" or both
    let name = std::env::args()
        .nth(3)
        .unwrap_or_else(|| "smollm2".to_string());
    let path = zephyra_lm::fetch::resolve_model(&name)?;
    let t = Instant::now();
    let precision: Precision = match std::env::args().nth(4) {
        Some(p) => p.parse()?,
        None => Precision::F32,
    };
    let model = Llama::load_gguf_with_precision(path, precision)?;
    eprintln!("load ({precision}): {:.2} s", t.elapsed().as_secs_f64());
    let (batch, seq) = (16, 128);
    let seqs: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|i| ((b * 7919 + i * 104_729) % 49_000) as u32 + 100)
                .collect()
        })
        .collect();
    let n_tokens = (batch * seq) as f64;
    let middle = model.config().n_layers / 2;
    let to_middle = format!("{name}: resid_pre {middle}, no logits");
    let full = format!("{name}: full, all logits");
    for (label, logits) in [(to_middle, Logits::None), (full, Logits::All)] {
        if (only == "a" && logits != Logits::None) || (only == "b" && logits == Logits::None) {
            continue;
        }
        for _ in 0..repeats {
            let mut hooks = Hooks::new();
            if logits == Logits::None {
                hooks.capture(HookPoint::ResidPre(middle));
            }
            let (t, cpu0) = (Instant::now(), cpu_seconds());
            let out = model.forward(&seqs, &mut hooks, logits)?;
            let (s, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
            drop(out);
            let threads = rayon::current_num_threads() as f64;
            eprintln!(
                "{label}: {:.0} tok/s wall ({s:.2} s), {:.0} tok/s per {threads} CPU-busy cores ({cpu:.2} CPU s)",
                n_tokens / s,
                n_tokens / (cpu / threads)
            );
        }
    }
    Ok(())
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 100 Hz ticks); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}
