//! A tiny Gemma-3-shaped GGUF written by `zephyra_lm::testing::tiny_gemma` (random weights in Q8_0,
//! Q5_0, Q4_K and Q6_K): it loads and runs, the sliding window hides exactly what it should, KV-cache
//! generation equals full forward passes past the window, its SentencePiece tokenizer merges by
//! score, and broken files give typed errors. The sliding blocks' KV cache keeps only the window
//! (bounded memory) and generation far past it still equals full passes.

use zephyra_lm::config::Family;
use zephyra_lm::testing::{tiny_gemma, tiny_gemma_with, TinyOptions, TINY_GEMMA_FIRST_PIECE};
use zephyra_lm::{GenerateConfig, HookPoint, Hooks, Llama, LmError, Logits, Tensor, Tokenizer};

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 tensor")
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn model() -> (zephyra_lm::testing::TinyLlama, Llama) {
    let tiny = tiny_gemma(7).expect("tiny gemma");
    let model = Llama::load_gguf(&tiny.path).expect("load tiny gemma");
    (tiny, model)
}

const IDS: [u32; 12] = [2, 265, 272, 7, 274, 270, 6, 265, 272, 264, 273, 203];

#[test]
fn loads_as_gemma3_and_runs_a_padded_batch() {
    let (tiny, model) = model();
    let cfg = model.config();
    assert_eq!(cfg, &tiny.config);
    assert_eq!(cfg.family, Family::Gemma3);
    let windows: Vec<Option<usize>> = (0..3).map(|l| cfg.layer_window(l)).collect();
    assert_eq!(windows, [Some(4), Some(4), None]);
    let short = &IDS[..7];
    let out = model
        .forward(&[&IDS[..], short], &mut Hooks::new(), Logits::Last)
        .expect("forward");
    let logits = flat(out.logits.as_ref().expect("logits"));
    assert!(logits.iter().all(|x| x.is_finite()));
    let vocab = cfg.vocab_size;
    for (b, seq) in [&IDS[..], short].iter().enumerate() {
        let alone = model
            .forward(&[*seq], &mut Hooks::new(), Logits::Last)
            .expect("forward");
        let alone = flat(alone.logits.as_ref().expect("logits"));
        let err = rel(&logits[b * vocab..(b + 1) * vocab], &alone);
        assert!(err < 1e-5, "sequence {b}: {err}");
    }
}

#[test]
fn the_sliding_window_hides_exactly_the_far_past() {
    let (_tiny, model) = model();
    let d = model.config().d_model;
    let mut changed = IDS;
    changed[1] = 275; // another token at position 1
    let hooks = [HookPoint::ResidPost(0), HookPoint::ResidPost(2)];
    let run = |ids: &[u32]| {
        let mut h = Hooks::capturing(hooks);
        let out = model
            .forward(&[ids], &mut h, Logits::None)
            .expect("forward");
        hooks.map(|p| flat(out.activations.get(p).expect("captured")))
    };
    let (a, b) = (run(&IDS), run(&changed));
    let row = |x: &[f32], s: usize| x[s * d..(s + 1) * d].to_vec();
    // Block 0 has a window of 4: position p sees p-3..=p, so position 1 reaches positions 1..=4 only.
    for s in 1..=4 {
        assert!(rel(&row(&a[0], s), &row(&b[0], s)) > 1e-3, "position {s}");
    }
    for s in 5..IDS.len() {
        assert!(rel(&row(&a[0], s), &row(&b[0], s)) < 1e-6, "position {s}");
    }
    // After two local blocks and a global one, the last position has seen the change.
    let last = IDS.len() - 1;
    assert!(rel(&row(&a[1], last), &row(&b[1], last)) > 1e-3);
}

/// Greedy generation with the KV cache capturing `points`, and the same number of tokens chosen
/// by full forward passes over the growing sequence (prompt included).
fn generate_and_recompute(
    model: &Llama,
    prompt: &[u32],
    n_new: usize,
    points: &[HookPoint],
) -> (zephyra_lm::GenerateOutput, Vec<u32>) {
    let mut hooks = Hooks::capturing(points.iter().copied());
    let greedy = GenerateConfig::greedy(n_new, vec![]);
    let out = model
        .generate(prompt, &greedy, &mut hooks, |_| {})
        .expect("generate");
    let mut seq = prompt.to_vec();
    for _ in 0..n_new {
        let o = model
            .forward(&[&seq], &mut Hooks::new(), Logits::Last)
            .expect("forward");
        let logits = flat(o.logits.as_ref().expect("logits"));
        seq.push(zephyra_lm::generate::argmax(&logits));
    }
    (out, seq)
}

#[test]
fn kv_cache_generation_matches_full_passes_past_the_window() {
    let (_tiny, model) = model();
    let prompt = &IDS[..6];
    let n_new = 8;
    let (out, seq) = generate_and_recompute(&model, prompt, n_new, &[HookPoint::ResidPost(1)]);
    assert_eq!(out.tokens.len(), n_new);
    assert_eq!(out.tokens, seq[prompt.len()..]);
    // Cached activations at every fed position equal a full pass (the last token is never fed).
    let fed = &seq[..seq.len() - 1];
    let mut h = Hooks::capturing([HookPoint::ResidPost(1)]);
    let full = model
        .forward(&[fed], &mut h, Logits::None)
        .expect("forward");
    let cached = flat(
        out.activations
            .get(HookPoint::ResidPost(1))
            .expect("captured"),
    );
    let full = flat(
        full.activations
            .get(HookPoint::ResidPost(1))
            .expect("captured"),
    );
    assert_eq!(cached.len(), full.len());
    assert!(rel(&cached, &full) < 1e-5);
}

#[test]
fn sliding_window_cache_generates_far_past_the_window() {
    // Window 4, 60 new tokens: the sliding blocks' cache drops old positions many times over.
    let (_tiny, model) = model();
    let prompt = &IDS[..6];
    let n_new = 60;
    let patterns = [HookPoint::AttnPattern(0), HookPoint::AttnPattern(2)];
    let (out, seq) = generate_and_recompute(&model, prompt, n_new, &patterns);
    assert_eq!(out.tokens, seq[prompt.len()..]);
    // The patterns captured step by step (keys at absolute positions) equal one full pass's.
    let fed = &seq[..seq.len() - 1];
    let mut h = Hooks::capturing(patterns);
    let full = model
        .forward(&[fed], &mut h, Logits::None)
        .expect("forward");
    for p in patterns {
        let cached = out.activations.get(p).expect("captured");
        let whole = full.activations.get(p).expect("captured");
        assert_eq!(cached.dims(), whole.dims(), "{p}");
        let e = rel(&flat(cached), &flat(whole));
        assert!(e < 1e-5, "{p}: {e}");
    }
}

#[test]
fn sentencepiece_tokenizer_merges_by_score_and_falls_back_to_bytes() {
    let tiny = tiny_gemma(1).expect("tiny gemma");
    let tok = Tokenizer::from_gguf(&tiny.path).expect("tokenizer");
    let piece = |i: u32| TINY_GEMMA_FIRST_PIECE + i;
    let (space, t, a, d) = (piece(0), piece(1), piece(4), piece(6));
    let (he, the, an) = (piece(8), piece(9), piece(10));
    let byte = |b: u8| 8 + u32::from(b);
    // "▁t" (-7) merges first, then "he" (-8), then "▁the" (-9); "▁and" has no two-piece split.
    assert_eq!(
        tok.encode(" the and").expect("encode"),
        [2, the, space, an, d]
    );
    // Whitespace runs and newlines are cut out of the raw text before BPE.
    let ids = tok.encode("the  and\nthe").expect("encode");
    assert_eq!(ids, [2, t, he, 7, an, d, 6, t, he]);
    assert_eq!(tok.decode(&ids).expect("decode"), "the  and\nthe");
    // é is not a piece: its UTF-8 bytes c3 a9.
    let ids = tok.encode("<start_of_turn>aé").expect("encode");
    assert_eq!(ids, [2, 4, a, byte(0xc3), byte(0xa9)]);
    assert_eq!(tok.decode(&ids).expect("decode"), "<start_of_turn>aé");
}

/// The error loading a tiny Gemma written without the tensor `skip_tensor` or the metadata key
/// `skip_metadata`; panics if it loads.
fn load_error(skip_tensor: Option<&str>, skip_metadata: Option<&str>) -> LmError {
    let options = TinyOptions {
        skip_tensor: skip_tensor.map(String::from),
        skip_metadata: skip_metadata.map(String::from),
        ..TinyOptions::default()
    };
    let tiny = tiny_gemma_with(3, &options).expect("write");
    Llama::load_gguf(&tiny.path).expect_err("a tiny Gemma missing a part must not load")
}

#[test]
fn missing_tensors_and_keys_are_typed_errors() {
    for name in ["blk.1.post_ffw_norm.weight", "blk.0.attn_q_norm.weight"] {
        let err = load_error(Some(name), None);
        assert!(
            matches!(&err, LmError::MissingTensor { name: n, .. } if n == name),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    for key in ["gemma3.attention.sliding_window", "gemma3.block_count"] {
        let err = load_error(None, Some(key));
        assert!(
            matches!(&err, LmError::MissingMetadata { key: k, .. } if k == key),
            "{err}"
        );
    }
}
