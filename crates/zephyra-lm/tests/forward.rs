//! Forward-pass parity with Hugging Face transformers on SmolLM2-135M-Instruct (the oracle in
//! `testdata/smollm2`), batched and one prompt at a time, plus early stopping.
//!
//! Per prompt: every hook tensor of the oracle, row by row at its 12 kept positions; the last position's
//! logits; the log-probability of each next token; the mean next-token CE; the top-1 next token at every
//! position.

mod common;

use common::{flat, log_softmax_at, mean_ce, prompts, rel_err, rows, smollm2, Oracle};
use zephyra_lm::{HookPoint, Hooks, Logits};

const TOL: f64 = 1e-4;

/// The hook points the oracle holds.
fn oracle_hooks(n_layers: usize) -> Vec<HookPoint> {
    let mut hooks: Vec<HookPoint> = (0..n_layers).map(HookPoint::ResidPre).collect();
    hooks.push(HookPoint::ResidPost(n_layers - 1));
    for l in [0, 7, 15, 29] {
        hooks.push(HookPoint::AttnOut(l));
        hooks.push(HookPoint::MlpOut(l));
    }
    hooks
}

/// Compares prompt `p`'s activations (row `b` of a `[batch, seq, …]` output) with the oracle.
fn check_prompt(p: usize, b: usize, out: &zephyra_lm::ForwardOutput, oracle: &Oracle) {
    let model = smollm2();
    let cfg = model.config();
    let prompt = &prompts()[p];
    let n = prompt.ids.len();
    let positions = oracle.positions(p);
    assert!(
        positions.len() == 12 && positions[0] == 0 && positions[11] == n - 1,
        "prompt {p}: the oracle keeps 12 positions from 0 to {}: {positions:?}",
        n - 1
    );
    let mut worst = (0.0f64, String::new());
    for hook in oracle_hooks(cfg.n_layers) {
        let name = format!("prompt{p}.{hook}");
        let (shape, want) = oracle.f32(&name);
        assert_eq!(shape, [positions.len(), cfg.d_model], "{name}");
        let got = out.activations.get(hook).expect("captured");
        let got = got.get(b).unwrap().narrow(0, 0, n).unwrap();
        let got = rows(&flat(&got), cfg.d_model, &positions);
        // Row by row: over a whole tensor the attention sink at position 0 (norm ≈ 23,000 against a few
        // hundred elsewhere) would hide an error at every other position.
        for (i, &t) in positions.iter().enumerate() {
            let row = i * cfg.d_model..(i + 1) * cfg.d_model;
            let err = rel_err(&got[row.clone()], &want[row]);
            assert!(
                err <= TOL,
                "{name} at position {t}: relative error {err:.2e} > {TOL:.0e}"
            );
            if err > worst.0 {
                worst = (err, format!("{name} position {t}"));
            }
        }
    }
    eprintln!(
        "prompt {p}: worst activation row error {:.2e} at {}",
        worst.0, worst.1
    );

    let vocab = cfg.vocab_size;
    let logits = out.logits.as_ref().expect("logits");
    let logits = logits.get(b).unwrap().narrow(0, 0, n).unwrap();
    let logits = flat(&logits);
    let (_, want_last) = oracle.f32(&format!("prompt{p}.logits_last"));
    let err = rel_err(&logits[(n - 1) * vocab..], &want_last);
    eprintln!("prompt {p}: logits_last relative error {err:.2e}");
    assert!(
        err <= TOL,
        "prompt {p} logits_last: relative error {err:.2e}"
    );

    let (shape, want_logprob) = oracle.f32(&format!("prompt{p}.next_token_logprob"));
    assert_eq!(shape, [n - 1]);
    let worst_logprob = (0..n - 1)
        .map(|t| {
            let got = log_softmax_at(&logits[t * vocab..(t + 1) * vocab], prompt.ids[t + 1]);
            (got - f64::from(want_logprob[t])).abs()
        })
        .fold(0.0f64, f64::max);
    eprintln!("prompt {p}: next-token log p within {worst_logprob:.1e} nats of the reference");
    assert!(
        worst_logprob <= 1e-3,
        "prompt {p}: next-token log p off by {worst_logprob:.2e} nats"
    );

    let ce = mean_ce(&logits, vocab, &prompt.ids);
    eprintln!(
        "prompt {p}: mean CE {ce:.6} vs reference {:.6}",
        prompt.mean_ce
    );
    assert!(
        (ce - prompt.mean_ce).abs() <= 1e-3,
        "prompt {p}: mean CE {ce} vs reference {}",
        prompt.mean_ce
    );

    let (shape, top5) = oracle.i64(&format!("prompt{p}.top5_ids"));
    assert_eq!(shape, [n, 5]);
    let agree = (0..n)
        .filter(|&t| {
            let row = &logits[t * vocab..(t + 1) * vocab];
            zephyra_lm::generate::argmax(row) as i64 == top5[t * 5]
        })
        .count();
    eprintln!("prompt {p}: top-1 agrees at {agree}/{n} positions");
    assert!(
        agree as f64 >= 0.99 * n as f64,
        "prompt {p}: top-1 agrees at {agree}/{n} positions"
    );
}

#[test]
fn batched_forward_matches_transformers() {
    let model = smollm2();
    let oracle = Oracle::load();
    let ps = prompts();
    assert_eq!(ps.len(), 3);
    let seqs: Vec<Vec<u32>> = ps.iter().map(|p| p.ids.clone()).collect();
    let mut hooks = Hooks::capturing(oracle_hooks(model.config().n_layers));
    let out = model.forward(&seqs, &mut hooks, Logits::All).unwrap();
    assert_eq!(out.lengths, vec![96, 96, 96]);
    for p in 0..3 {
        check_prompt(p, p, &out, &oracle);
    }
}

#[test]
fn single_prompts_match_transformers() {
    let model = smollm2();
    let oracle = Oracle::load();
    for (p, prompt) in prompts().iter().enumerate() {
        let mut hooks = Hooks::capturing(oracle_hooks(model.config().n_layers));
        let out = model
            .forward(&[prompt.ids.as_slice()], &mut hooks, Logits::All)
            .unwrap();
        check_prompt(p, 0, &out, &oracle);
    }
}

#[test]
fn ragged_batch_pads_without_changing_real_positions() {
    let model = smollm2();
    let ps = prompts();
    let short = &ps[1].ids[..50];
    let seqs = [ps[0].ids.as_slice(), short];
    let hook = HookPoint::ResidPost(29);
    let mut hooks = Hooks::capturing([hook]);
    let out = model.forward(&seqs, &mut hooks, Logits::Last).unwrap();
    assert_eq!(out.lengths, vec![96, 50]);
    let mut hooks1 = Hooks::capturing([hook]);
    let alone = model.forward(&[short], &mut hooks1, Logits::Last).unwrap();
    let a = out
        .activations
        .get(hook)
        .unwrap()
        .get(1)
        .unwrap()
        .narrow(0, 0, 50)
        .unwrap();
    let b = alone.activations.get(hook).unwrap().get(0).unwrap();
    let err = rel_err(&flat(&a), &flat(&b));
    assert!(err < 1e-5, "padded vs alone: {err:.2e}");
    // Logits::Last picks each sequence's own last position.
    let last_row = |out: zephyra_lm::ForwardOutput, i: usize| -> Vec<f32> {
        let logits = out.logits.expect("Logits::Last returns logits");
        logits.get(i).unwrap().to_vec1().unwrap()
    };
    let (last, last_alone) = (last_row(out, 1), last_row(alone, 0));
    assert!(rel_err(&last, &last_alone) < 1e-5);
}

#[test]
fn early_stop_gives_the_same_values() {
    let model = smollm2();
    let ps = prompts();
    let seqs = [ps[2].ids.as_slice()];
    let hook = HookPoint::ResidPre(15);
    let mut early = Hooks::capturing([hook]);
    let early = model.forward(&seqs, &mut early, Logits::None).unwrap();
    assert!(early.logits.is_none());
    let mut full = Hooks::capturing([hook, HookPoint::ResidPost(29)]);
    let full = model.forward(&seqs, &mut full, Logits::All).unwrap();
    let a = flat(early.activations.get(hook).unwrap());
    let b = flat(full.activations.get(hook).unwrap());
    assert_eq!(a, b);
    assert_eq!(early.activations.len(), 1);
}
