//! The eval driver on a tiny random Llama: identity and zero splices, and every reconstruction/sparsity/CE
//! figure against a plain recomputation from dumped activations, codes and logits.

mod common;

use rand::{Rng, SeedableRng};
use zephyra_analysis::eval::{evaluate, Dictionary, EvalConfig, EvalFigures, ReferenceDictionary};
use zephyra_analysis::AnalysisError;
use zephyra_data::ExclusionRule;
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Llama};
use zephyra_sae::{Architecture, Sae, SaeConfig};

use common::{forward_flat, kept_rows};

const HOOK: HookPoint = HookPoint::ResidPre(1);
const SPECIAL: u32 = 0;

fn contexts(vocab: usize, n: usize, len: usize) -> Vec<Vec<u32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|i| {
                    if i == 5 {
                        SPECIAL
                    } else {
                        rng.random_range(1..vocab as u32)
                    }
                })
                .collect()
        })
        .collect()
}

fn config(tokens: u64) -> EvalConfig {
    EvalConfig {
        hook: HOOK,
        batch_contexts: 3,
        max_tokens: tokens,
        downstream_tokens: tokens,
        rule: ExclusionRule::default(),
    }
}

/// Evaluates `dict` spliced into `model` over `ctxs`.
fn evaluate_contexts(
    model: &Llama,
    dict: &dyn Dictionary,
    is_special: &dyn Fn(u32) -> bool,
    ctxs: &[Vec<u32>],
    cfg: &EvalConfig,
) -> zephyra_analysis::Result<EvalFigures> {
    let mut it = ctxs.iter().cloned().map(Ok);
    evaluate(model, dict, is_special, &mut it, cfg, &mut |_| {})
}

/// Evaluates every token of `ctxs`, with [`SPECIAL`] as the only special token.
fn run(model: &Llama, dict: &dyn Dictionary, ctxs: &[Vec<u32>]) -> EvalFigures {
    let cfg = config(ctxs.iter().map(|c| c.len() as u64).sum());
    evaluate_contexts(model, dict, &|id| id == SPECIAL, ctxs, &cfg).unwrap()
}

fn tiny() -> (zephyra_lm::testing::TinyLlama, Llama) {
    let tiny = zephyra_lm::testing::tiny_llama(3).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    (tiny, model)
}

/// Evaluates the tiny model with the dictionary `make(d_model)` spliced in, on `n` random contexts of
/// `len` tokens.
fn splice_tiny<D: Dictionary>(make: impl FnOnce(usize) -> D, n: usize, len: usize) -> EvalFigures {
    let (_t, model) = tiny();
    let ctxs = contexts(model.config().vocab_size, n, len);
    run(&model, &make(model.config().d_model), &ctxs)
}

#[test]
fn identity_splice_recovers_everything() {
    let f = splice_tiny(ReferenceDictionary::Identity, 7, 24);
    let d = f.downstream.unwrap();
    assert_eq!(d.kl_sae, 0.0);
    assert_eq!(d.delta_lm_loss, 0.0);
    assert_eq!(d.ce_recovered_zero, Some(1.0));
    assert_eq!(d.ce_recovered_mean, Some(1.0));
    assert_eq!(d.kl_score_zero, Some(1.0));
    assert!(d.kl_zero_abl > 0.0 && d.kl_mean_abl > 0.0);
    assert!((f.reconstruction.fve - 1.0).abs() < 1e-12);
    // 7 contexts x 23 positions with a next token, minus position 0 and the special at position 5.
    assert_eq!(d.n_positions, 7 * 22 - 7);
    assert_eq!(f.exclusion.position_zero, 7);
    assert_eq!(f.exclusion.special, 7);
    eprintln!("identity splice: {d:?}");
}

#[test]
fn zero_splice_reproduces_zero_ablation() {
    let f = splice_tiny(ReferenceDictionary::Zero, 5, 20);
    let d = f.downstream.unwrap();
    assert_eq!(d.ce_sae, d.ce_zero_abl);
    assert_eq!(d.kl_sae, d.kl_zero_abl);
    assert_eq!(d.ce_recovered_zero, Some(0.0));
    assert_eq!(f.sparsity.l0, 0.0);
    assert_eq!(f.sparsity.dead_fraction, 1.0);
}

fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
    let s: f64 = logits.iter().map(|&z| (f64::from(z) - m).exp()).sum();
    f64::from(logits[target]) - m - s.ln()
}

#[test]
fn figures_match_a_plain_recomputation() {
    let (_t, model) = tiny();
    let d_model = model.config().d_model;
    let mut cfg = SaeConfig::new(d_model, 4 * d_model, Architecture::TopK { k: 6 }).unwrap();
    cfg.apply_b_dec_to_input = true;
    let sae = Sae::init(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap();
    let ctxs = contexts(model.config().vocab_size, 6, 16);
    let f = run(&model, &sae, &ctxs);

    // Plain recomputation: same batches of 3 contexts, same rule, codes from the SAE's own encode.
    let (mut x_all, mut xh_all, mut active, mut ce_sum, mut n_pos) =
        (vec![], vec![], 0usize, 0f64, 0usize);
    for batch in ctxs.chunks(3) {
        let (x, logits) = forward_flat(&model, batch, HOOK, Logits::All);
        let logits = logits.unwrap();
        let tokens: Vec<u32> = batch.concat();
        let keep = kept_rows(&x, d_model, &tokens, 16, &|id| id == SPECIAL);
        let vocab = logits.len() / tokens.len();
        for (r, &k) in keep.iter().enumerate() {
            if !k {
                continue;
            }
            let row = &x[r * d_model..(r + 1) * d_model];
            let codes = sae.encode(row, 1).unwrap();
            active += codes.iter().filter(|&&c| c != 0.0).count();
            xh_all.extend(sae.decode(&codes, 1).unwrap());
            x_all.extend_from_slice(row);
            if r % 16 != 15 {
                ce_sum -=
                    log_softmax_at(&logits[r * vocab..(r + 1) * vocab], tokens[r + 1] as usize);
                n_pos += 1;
            }
        }
    }
    let n = x_all.len() / d_model;
    let mut mean = vec![0f64; d_model];
    for row in x_all.chunks(d_model) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v) / n as f64;
        }
    }
    let (mut sse, mut sst) = (0f64, 0f64);
    for (row, rh) in x_all.chunks(d_model).zip(xh_all.chunks(d_model)) {
        for j in 0..d_model {
            sse += (f64::from(row[j]) - f64::from(rh[j])).powi(2);
            sst += (f64::from(row[j]) - mean[j]).powi(2);
        }
    }
    let r = &f.reconstruction;
    assert_eq!(r.n_tokens as usize, n);
    assert!(
        (r.fve - (1.0 - sse / sst)).abs() < 1e-6,
        "{} vs {}",
        r.fve,
        1.0 - sse / sst
    );
    assert!((r.mse - sse / (n * d_model) as f64).abs() < 1e-6 * r.mse.max(1.0));
    assert!((f.sparsity.l0 - active as f64 / n as f64).abs() < 1e-12);
    let d = f.downstream.unwrap();
    assert_eq!(d.n_positions as usize, n_pos);
    assert!(
        (d.ce_clean - ce_sum / n_pos as f64).abs() < 1e-9,
        "{} vs {}",
        d.ce_clean,
        ce_sum / n_pos as f64
    );
    assert!(d.kl_sae > 0.0 && d.ce_sae.is_finite());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (_t, model) = tiny();
    let d_model = model.config().d_model;
    let ctxs = contexts(model.config().vocab_size, 2, 8);
    let cfg = config(100);
    // Width mismatch.
    let sae = Sae::init(
        SaeConfig::new(d_model / 2, 64, Architecture::TopK { k: 2 }).unwrap(),
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap();
    let err = evaluate_contexts(&model, &sae, &|_| false, &ctxs, &cfg).unwrap_err();
    assert!(
        matches!(
            err,
            AnalysisError::WidthMismatch {
                hook_width: 64,
                sae_d_in: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("blocks.1.hook_resid_pre"), "{err}");
    // Zero usable tokens: one-token contexts are all position 0.
    let identity = ReferenceDictionary::Identity(d_model);
    let one: Vec<Vec<u32>> = vec![vec![5], vec![6]];
    let err = evaluate_contexts(&model, &identity, &|_| false, &one, &cfg).unwrap_err();
    assert!(matches!(err, AnalysisError::NoTokens { seen: 2 }), "{err}");
    // An empty corpus.
    let err = evaluate_contexts(&model, &identity, &|_| false, &[], &cfg).unwrap_err();
    assert!(matches!(err, AnalysisError::NoTokens { seen: 0 }), "{err}");
}
