//! CE / KL / CE recovered / KL score against hand-computed values.

use zephyra_analysis::downstream::{cross_entropy, kl_divergence};
use zephyra_analysis::{LossAccumulator, PositionLogits};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
}

const LN2: f64 = std::f64::consts::LN_2;

/// Adds one position whose logits are `[clean, sae, zero, mean]` and whose next token is `target`.
fn add(acc: &mut LossAccumulator, [clean, sae, zero, mean]: [&[f32]; 4], target: usize) {
    acc.add(
        PositionLogits {
            clean,
            sae,
            zero,
            mean,
        },
        target,
    )
    .unwrap();
}

#[test]
fn one_position_by_hand() {
    // vocab 3, target 0. clean: uniform -> CE ln 3. sae: p = (1/2,1/4,1/4) -> CE ln 2.
    // zero: p = (1/6,4/6,1/6) -> CE ln 6. mean: p = (1/4,1/2,1/4) -> CE ln 4.
    let clean = [0.0f32, 0.0, 0.0];
    let sae = [LN2 as f32, 0.0, 0.0];
    let zero = [0.0f32, 4f64.ln() as f32, 0.0];
    let mean = [0.0f32, LN2 as f32, 0.0];
    let mut acc = LossAccumulator::new();
    add(&mut acc, [&clean, &sae, &zero, &mean], 0);
    let s = acc.finish().unwrap();
    close(s.ce_clean, 3f64.ln());
    close(s.ce_sae, LN2);
    close(s.ce_zero_abl, 6f64.ln());
    close(s.ce_mean_abl, 4f64.ln());
    close(s.delta_lm_loss, LN2 - 3f64.ln());
    // (ln6 - ln2)/(ln6 - ln3) = ln3/ln2; (ln4 - ln2)/(ln4 - ln3) = ln2/ln(4/3).
    close(s.ce_recovered_zero.unwrap(), 3f64.ln() / LN2);
    close(s.ce_recovered_mean.unwrap(), LN2 / (4.0f64 / 3.0).ln());
    // KL(u ‖ q) = (1/3) Σ ln((1/3)/q_v).
    let kl_sae = ((2.0f64 / 3.0).ln() + 2.0 * (4.0f64 / 3.0).ln()) / 3.0;
    let kl_zero = (2f64.ln() + 0.5f64.ln() + 2f64.ln()) / 3.0;
    let kl_mean = (32.0f64 / 27.0).ln() / 3.0;
    close(s.kl_sae, kl_sae);
    close(s.kl_zero_abl, kl_zero);
    close(s.kl_mean_abl, kl_mean);
    close(s.kl_score_zero.unwrap(), (kl_zero - kl_sae) / kl_zero);
    close(s.kl_score_mean.unwrap(), (kl_mean - kl_sae) / kl_mean);
}

#[test]
fn averages_over_positions() {
    let clean = [0.0f32, 0.0, 0.0];
    let sae = [LN2 as f32, 0.0, 0.0];
    let same = [1.0f32, 2.0, 3.0];
    let mut acc = LossAccumulator::new();
    add(&mut acc, [&clean, &sae, &clean, &clean], 0);
    add(&mut acc, [&same, &same, &same, &same], 2);
    let s = acc.finish().unwrap();
    assert_eq!(s.n_positions, 2);
    let ce2 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0;
    close(s.ce_clean, (3f64.ln() + ce2) / 2.0);
    close(s.ce_sae, (LN2 + ce2) / 2.0);
    close(s.kl_zero_abl, 0.0);
    // The ablations equal clean: no baseline to recover against.
    assert_eq!(s.ce_recovered_zero, None);
    assert_eq!(s.kl_score_mean, None);
}

#[test]
fn identity_gives_full_recovery_and_zero_kl() {
    let clean = [0.3f32, -1.0, 2.0, 0.5];
    let zero = [0.0f32, 0.0, 0.0, 0.0];
    let mut acc = LossAccumulator::new();
    add(&mut acc, [&clean, &clean, &zero, &zero], 1);
    let s = acc.finish().unwrap();
    assert_eq!(s.kl_sae, 0.0);
    assert_eq!(s.delta_lm_loss, 0.0);
    close(s.ce_recovered_zero.unwrap(), 1.0);
    close(s.kl_score_zero.unwrap(), 1.0);
}

#[test]
fn stable_for_large_logits_and_bad_targets() {
    // logits 1000 apart: softmax in f32 without max subtraction would overflow.
    close(cross_entropy(&[1000.0, 0.0], 1).unwrap(), 1000.0);
    assert!(kl_divergence(&[1000.0, 0.0], &[1000.0, 0.0]).unwrap() < 1e-12);
    assert!(cross_entropy(&[0.0, 0.0], 2).is_err());
    assert!(kl_divergence(&[0.0, 0.0], &[0.0]).is_err());
    assert!(LossAccumulator::new().finish().is_err());
}
