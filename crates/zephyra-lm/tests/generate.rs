//! Generation: KV-cache decoding equals recomputing the full forward each step (tiny model),
//! seeded sampling is deterministic, stop tokens end it, hooks apply, and SmolLM2 knows Paris.

mod common;

use zephyra_lm::generate::argmax;
use zephyra_lm::testing::tiny_llama;
use zephyra_lm::{
    GenerateConfig, GenerateOutput, HookPoint, Hooks, Llama, LmError, Logits, Sampling, StopReason,
    Tokenizer,
};

fn tiny(seed: u64) -> (zephyra_lm::testing::TinyLlama, Llama) {
    let t = tiny_llama(seed).unwrap();
    let m = Llama::load_gguf(&t.path).unwrap();
    (t, m)
}

/// Greedy generation of up to `n` tokens without hooks, ending early at any of `stop`.
fn greedy(model: &Llama, prompt: &[u32], n: usize, stop: Vec<u32>) -> GenerateOutput {
    model
        .generate(
            prompt,
            &GenerateConfig::greedy(n, stop),
            &mut Hooks::new(),
            |_| {},
        )
        .unwrap()
}

/// Greedy decoding without a cache: the whole sequence through the model at every step.
fn greedy_by_recompute(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    hooks: impl Fn() -> Hooks<'static>,
) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let out = model.forward(&[&seq], &mut hooks(), Logits::Last).unwrap();
        let logits = common::flat(&out.logits.unwrap());
        seq.push(argmax(&logits));
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn kv_cache_generation_equals_full_recompute() {
    let (_t, model) = tiny(11);
    let prompt = [40u32, 80, 120, 160, 200, 240];
    let cfg = GenerateConfig::greedy(24, vec![]);
    let mut streamed = Vec::new();
    let out = model
        .generate(&prompt, &cfg, &mut Hooks::new(), |t| streamed.push(t))
        .unwrap();
    assert_eq!(out.stop, StopReason::MaxTokens);
    assert_eq!(out.tokens.len(), 24);
    assert_eq!(streamed, out.tokens);
    assert_eq!(
        out.tokens,
        greedy_by_recompute(&model, &prompt, 24, Hooks::new)
    );
    // The tokens are not all the same (the test would be weak otherwise).
    assert!(out.tokens.iter().any(|&t| t != out.tokens[0]));
}

#[test]
fn hooks_apply_during_generation() {
    let (_t, model) = tiny(12);
    let prompt = [7u32, 70, 140, 210];
    let d = model.config().d_model;
    let steer: Vec<f32> = (0..d).map(|i| ((i * 13) % 5) as f32 - 2.0).collect();
    let make = || {
        let mut h = Hooks::new();
        h.add_vector(HookPoint::ResidMid(1), steer.clone());
        h
    };
    let cfg = GenerateConfig::greedy(16, vec![]);
    let steered = model.generate(&prompt, &cfg, &mut make(), |_| {}).unwrap();
    assert_eq!(
        steered.tokens,
        greedy_by_recompute(&model, &prompt, 16, make)
    );
    let plain = model
        .generate(&prompt, &cfg, &mut Hooks::new(), |_| {})
        .unwrap();
    assert_ne!(steered.tokens, plain.tokens, "steering changed nothing");

    // Captures during generation cover prompt + fed tokens and equal a full forward's.
    let hook = HookPoint::ResidPost(0);
    let mut hooks = Hooks::capturing([hook]);
    let out = model.generate(&prompt, &cfg, &mut hooks, |_| {}).unwrap();
    let got = out.activations.get(hook).unwrap();
    let n = prompt.len() + out.tokens.len() - 1;
    assert_eq!(got.dims(), [1, n, d]);
    let mut all = prompt.to_vec();
    all.extend_from_slice(&out.tokens[..out.tokens.len() - 1]);
    let mut full = Hooks::capturing([hook]);
    let full = model.forward(&[&all], &mut full, Logits::None).unwrap();
    let a = common::flat(got);
    let b = common::flat(full.activations.get(hook).unwrap());
    assert!(common::rel_err(&a, &b) < 1e-5);
}

#[test]
fn seeded_sampling_is_deterministic() {
    let (_t, model) = tiny(13);
    let prompt = [1u32, 50, 100];
    let cfg = |seed| GenerateConfig {
        max_new_tokens: 30,
        sampling: Sampling::TopP {
            temperature: 1.5,
            top_p: 0.95,
        },
        seed,
        stop_tokens: vec![],
    };
    let run = |seed| {
        model
            .generate(&prompt, &cfg(seed), &mut Hooks::new(), |_| {})
            .unwrap()
            .tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    assert_ne!(run(1), greedy(&model, &prompt, 30, vec![]).tokens);
}

#[test]
fn stops_at_a_stop_token() {
    let (_t, model) = tiny(14);
    let prompt = [9u32, 99, 199];
    let free = greedy(&model, &prompt, 10, vec![]);
    let stop = free.tokens[3];
    let first = free.tokens.iter().position(|&t| t == stop).unwrap();
    let out = greedy(&model, &prompt, 10, vec![stop]);
    assert_eq!(out.stop, StopReason::Stop(stop));
    assert_eq!(out.tokens, free.tokens[..first]);
}

#[test]
fn bad_generation_settings_are_rejected() {
    let (_t, model) = tiny(15);
    let mut cfg = GenerateConfig::greedy(5, vec![]);
    let err = model
        .generate(&[], &cfg, &mut Hooks::new(), |_| {})
        .unwrap_err();
    assert!(matches!(err, LmError::InvalidInput(_)), "{err:?}");
    cfg.sampling = Sampling::TopP {
        temperature: -1.0,
        top_p: 0.9,
    };
    let err = model
        .generate(&[1], &cfg, &mut Hooks::new(), |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("temperature"), "{err}");
    cfg.sampling = Sampling::TopP {
        temperature: 1.0,
        top_p: 0.0,
    };
    let err = model
        .generate(&[1], &cfg, &mut Hooks::new(), |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
    // Generation stops when the context is full: the last token is chosen from position n_ctx - 1,
    // so 4 tokens follow a prompt of n_ctx - 3.
    let n_ctx = model.config().context_length;
    let cfg = GenerateConfig::greedy(1000, vec![]);
    let out = model
        .generate(&vec![5; n_ctx - 3], &cfg, &mut Hooks::new(), |_| {})
        .unwrap();
    assert_eq!(out.stop, StopReason::ContextFull);
    assert_eq!(out.tokens.len(), 4);
}

#[test]
fn smollm2_says_paris() {
    let model = common::smollm2();
    let tok = Tokenizer::from_gguf(model.path()).unwrap();
    let prompt = tok.encode("The capital of France is").unwrap();
    let eos = tok.eos_token_id().into_iter().collect();
    let out = model
        .generate(
            &prompt,
            &GenerateConfig::greedy(6, eos),
            &mut Hooks::new(),
            |_| {},
        )
        .unwrap();
    let text = tok.decode(&out.tokens).unwrap();
    eprintln!("The capital of France is|{text}");
    assert!(text.starts_with(" Paris"), "{text:?}");
}
