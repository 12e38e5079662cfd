//! A real small SAE trained in the test on real SmolLM2 activations (default corpus: the Rust docs), then
//! evaluated on later, disjoint contexts: CE loss recovered and FVE must both exceed 0.5.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use zephyra_analysis::eval::{evaluate, EvalConfig};
use zephyra_data::corpus::Corpus;
use zephyra_data::pack::{ContextStream, PackOptions, TextEncoder};
use zephyra_data::ExclusionRule;
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Llama, Tokenizer};
use zephyra_sae::train::{MemorySource, TrainConfig, TrainSession};
use zephyra_sae::Architecture;

use common::{forward_flat, kept_rows};

const HOOK: HookPoint = HookPoint::ResidPre(6);
const CTX: usize = 128;
const TRAIN_CONTEXTS: usize = 64; // 8192 tokens
const EVAL_CONTEXTS: usize = 24; // 3072 tokens, the first 1024 also for CE/KL

#[test]
fn small_topk_sae_on_smollm2_recovers_most_of_the_loss() {
    let path = zephyra_lm::fetch::resolve_model("smollm2").unwrap();
    let model = Llama::load_gguf(&path).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&path).unwrap());
    // The toolchain's Rust docs (rustup's default profile): without them this fails with the install command.
    let mut corpus = Corpus::default_rust_docs().unwrap_or_else(|err| panic!("{err}"));
    corpus.shuffle_inputs(11);
    let encoder: Arc<dyn TextEncoder> = tok.clone();
    let opts = PackOptions {
        ctx: CTX,
        seed: 11,
        shuffle_contexts: 64,
    };
    let mut stream = ContextStream::new(corpus.documents(), encoder, opts).unwrap();
    let train: Vec<Vec<u32>> = stream
        .by_ref()
        .take(TRAIN_CONTEXTS)
        .collect::<Result<_, _>>()
        .unwrap();
    let eval: Vec<Vec<u32>> = stream
        .by_ref()
        .take(EVAL_CONTEXTS)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(eval.len(), EVAL_CONTEXTS, "the default corpus is too small");
    let is_special = |id: u32| tok.is_special(id);

    // Harvest training rows with the data crate's rule.
    let d = model.config().d_model;
    let mut rows = Vec::new();
    for batch in train.chunks(8) {
        let (x, _) = forward_flat(&model, batch, HOOK, Logits::None);
        let keep = kept_rows(&x, d, &batch.concat(), CTX, &is_special);
        for (r, &k) in keep.iter().enumerate() {
            if k {
                rows.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
        }
    }
    let n_rows = rows.len() / d;

    // Train a 4x TopK k=32 SAE for a few epochs over those rows.
    let mut cfg = TrainConfig::new(d, 4 * d, Architecture::TopK { k: 32 }, 256, 60_000).unwrap();
    cfg.init_rows = 4096;
    let mut source = MemorySource::new(rows, d, true).unwrap();
    let mut session = TrainSession::start(cfg, &mut source, None, None).unwrap();
    let outcome = session
        .run(&mut source, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let sae = session.trainer().inference_sae();

    // Evaluate on the later contexts.
    let cfg = EvalConfig {
        hook: HOOK,
        batch_contexts: 4,
        max_tokens: (EVAL_CONTEXTS * CTX) as u64,
        downstream_tokens: 1024,
        rule: ExclusionRule::default(),
    };
    let mut it = eval.into_iter().map(Ok);
    let f = evaluate(&model, &sae, &is_special, &mut it, &cfg, &mut |_| {}).unwrap();
    let dn = f.downstream.unwrap();
    eprintln!(
        "trained on {n_rows} rows ({} steps); eval: FVE {:.4}, MSE {:.4}, cosine {:.4}, L0 {:.2}, dead {:.3}, \
         CE clean {:.4} sae {:.4} zero {:.4} mean {:.4}, CE recovered (zero) {:?} (mean) {:?}, delta {:.4}, \
         KL {:.4}, KL score (zero) {:?}",
        outcome.steps,
        f.reconstruction.fve,
        f.reconstruction.mse,
        f.reconstruction.cosine,
        f.sparsity.l0,
        f.sparsity.dead_fraction,
        dn.ce_clean,
        dn.ce_sae,
        dn.ce_zero_abl,
        dn.ce_mean_abl,
        dn.ce_recovered_zero,
        dn.ce_recovered_mean,
        dn.delta_lm_loss,
        dn.kl_sae,
        dn.kl_score_zero
    );
    assert!(f.reconstruction.fve > 0.5, "FVE {}", f.reconstruction.fve);
    let rec = dn.ce_recovered_zero.unwrap();
    assert!(rec > 0.5, "CE recovered {rec}");
    assert!(f.sparsity.l0 <= 32.0 + 1e-9);
    assert!(
        dn.ce_clean < dn.ce_sae && dn.ce_sae < dn.ce_zero_abl,
        "{dn:?}"
    );
}
