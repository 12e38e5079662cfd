//! The two conventions of zero-ablation CE loss recovered, on a tiny bias-free Llama: ours zeroes the kept
//! positions only (sinks and excluded tokens stay clean); SAELens / SAEBench zero every position, so every
//! layer after a residual hook sees zeros, the logits are 0 and the CE is exactly ln(vocab).

use rand::{Rng, SeedableRng};
use zephyra_analysis::eval::{evaluate, Dictionary, EvalConfig, EvalFigures, ReferenceDictionary};
use zephyra_analysis::DownstreamStats;
use zephyra_data::ExclusionRule;
use zephyra_lm::{HookPoint, Llama};

fn run(model: &Llama, dict: &dyn Dictionary, hook: HookPoint) -> EvalFigures {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let vocab = model.config().vocab_size as u32;
    let ctxs: Vec<Vec<u32>> = (0..5)
        .map(|_| (0..20).map(|_| rng.random_range(1..vocab)).collect())
        .collect();
    let tokens = ctxs.iter().map(|c| c.len() as u64).sum();
    let cfg = EvalConfig {
        hook,
        batch_contexts: 2,
        max_tokens: tokens,
        downstream_tokens: tokens,
        rule: ExclusionRule::default(),
    };
    let mut it = ctxs.into_iter().map(Ok);
    evaluate(model, dict, &|_| false, &mut it, &cfg, &mut |_| {}).unwrap()
}

/// `(CE_zero_all − CE_sae) / (CE_zero_all − CE_clean)` from the reported CE figures.
fn recovered_all(d: &DownstreamStats) -> f64 {
    let z = d.ce_zero_abl_all_positions.unwrap();
    (z - d.ce_sae) / (z - d.ce_clean)
}

#[test]
fn zeroing_every_position_gives_ln_vocab_and_the_saelens_recovered_figure() {
    let tiny = zephyra_lm::testing::tiny_llama(5).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let (d_model, vocab) = (model.config().d_model, model.config().vocab_size);
    let ln_vocab = (vocab as f64).ln();
    for hook in [HookPoint::ResidPre(1), HookPoint::ResidPost(0)] {
        let zero = run(&model, &ReferenceDictionary::Zero(d_model), hook)
            .downstream
            .unwrap();
        let z_all = zero.ce_zero_abl_all_positions.unwrap();
        assert!(
            (z_all - ln_vocab).abs() < 1e-9,
            "{hook}: CE with every position zeroed is {z_all}, ln({vocab}) = {ln_vocab}"
        );
        // Ours keeps position 0 clean, which every later position attends to: not uniform.
        assert!(
            (zero.ce_zero_abl - ln_vocab).abs() > 1e-3,
            "{hook}: our zero ablation {} should differ from ln(vocab)",
            zero.ce_zero_abl
        );
        // The zero dictionary is our zero ablation: recovered is 0 by ours, and by SAELens' formula
        // (z_all − z_ours) / (z_all − clean).
        assert_eq!(zero.ce_recovered_zero, Some(0.0));
        let want = (z_all - zero.ce_zero_abl) / (z_all - zero.ce_clean);
        let got = zero.ce_recovered_zero_all_positions.unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((got - recovered_all(&zero)).abs() < 1e-12);

        let identity = run(&model, &ReferenceDictionary::Identity(d_model), hook)
            .downstream
            .unwrap();
        assert_eq!(identity.ce_zero_abl_all_positions, Some(z_all));
        assert_eq!(identity.ce_recovered_zero_all_positions, Some(1.0));
    }
}

#[test]
fn the_figure_is_in_the_json_and_older_reports_still_read() {
    let tiny = zephyra_lm::testing::tiny_llama(5).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let d = run(
        &model,
        &ReferenceDictionary::Zero(model.config().d_model),
        HookPoint::ResidPre(1),
    )
    .downstream
    .unwrap();
    let json = serde_json::to_value(d).unwrap();
    assert_eq!(
        json["ce_recovered_zero_all_positions"].as_f64(),
        d.ce_recovered_zero_all_positions
    );
    // An eval.json written before the figure existed: the field is absent, the report reads.
    let mut old = json.clone();
    old.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.ends_with("_all_positions"));
    let back: DownstreamStats = serde_json::from_value(old).unwrap();
    assert_eq!(back.ce_recovered_zero_all_positions, None);
}
