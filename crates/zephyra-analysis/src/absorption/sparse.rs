//! k-sparse probing: the SAE latents that carry a letter (SAEBench's `k_sparse_probing.py`).
//!
//! An L1-penalised one-vs-rest probe on the SAE codes of the training words ranks the latents of each
//! letter by weight; for `k = 1..=max_k` a logistic regression on the top `k` latents alone is fitted on the
//! training words and scored (F1 of `score > 0`) on the test words. The letter's *main latents* are the top
//! `k` for the last `k` whose F1 beats the best so far by more than `f1_jump` (feature splitting: a second
//! latent that adds recall counts as part of the letter, not as an absorber).

use serde::{Deserialize, Serialize};

use super::probe::{fit_logistic, train_probe, ProbeTraining, Rows};
use super::{AbsorptionConfig, N_LETTERS};
use crate::error::Result;

/// Sparse SAE codes of a set of rows: each row's firing `(latent, activation)` pairs.
pub type Codes = Vec<Vec<(u32, f32)>>;

/// Turns dense codes `[n, d_sae]` into [`Codes`].
pub fn sparse_codes(dense: &[f32], d_sae: usize) -> Codes {
    dense
        .chunks_exact(d_sae.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(j, &v)| (j as u32, v))
                .collect()
        })
        .collect()
}

/// The k-sparse probe of one letter at one `k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KSparse {
    /// Number of latents.
    pub k: usize,
    /// The latents, by decreasing L1-probe weight.
    pub latents: Vec<u32>,
    /// F1 on the test words.
    pub f1: f64,
}

/// One letter's main latents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LetterSplit {
    /// The probes for `k = 1..=max_k` (fewer when the letter has too few training words).
    pub probes: Vec<KSparse>,
    /// The main (feature-splitting) latents.
    pub main_latents: Vec<u32>,
}

/// F1 of predictions against truth (0 when there are no true or predicted positives).
pub fn f1_score(pred: &[bool], truth: &[bool]) -> f64 {
    let tp = pred.iter().zip(truth).filter(|(p, t)| **p && **t).count() as f64;
    let fp = pred.iter().zip(truth).filter(|(p, t)| **p && !**t).count() as f64;
    let fnn = pred.iter().zip(truth).filter(|(p, t)| !**p && **t).count() as f64;
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fnn)
    }
}

/// Values of `latents` in each row of `codes` (`[n, latents.len()]`).
fn gather(codes: &Codes, latents: &[u32]) -> Vec<f64> {
    let mut out = vec![0.0; codes.len() * latents.len()];
    for (i, row) in codes.iter().enumerate() {
        for &(j, v) in row {
            if let Some(a) = latents.iter().position(|&l| l == j) {
                out[i * latents.len() + a] = f64::from(v);
            }
        }
    }
    out
}

/// The SAE codes of a set of words and each word's letter (`0..26`).
#[derive(Debug, Clone, Copy)]
pub struct LetterCodes<'a> {
    /// One row of codes per word.
    pub codes: &'a Codes,
    /// Each word's first letter.
    pub letters: &'a [usize],
}

/// Finds every letter's main latents among the `d_sae` latents: probes fitted on `train`, scored on
/// `test`, with `cfg`'s `max_k`, `f1_jump` and `seed`.
pub fn letter_splits(
    train: LetterCodes<'_>,
    test: LetterCodes<'_>,
    d_sae: usize,
    cfg: &AbsorptionConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LetterSplit>> {
    let (max_k, f1_jump) = (cfg.max_k, cfg.f1_jump);
    let rows = Rows::Sparse {
        rows: train.codes,
        d: d_sae,
    };
    let l1 = train_probe(
        &rows,
        train.letters,
        N_LETTERS,
        &ProbeTraining::sparse_latent_probe(cfg.seed),
        &mut |_, _| {},
    )?;
    let mut out = Vec::with_capacity(N_LETTERS);
    for c in 0..N_LETTERS {
        let y_train: Vec<bool> = train.letters.iter().map(|&l| l == c).collect();
        let y_test: Vec<bool> = test.letters.iter().map(|&l| l == c).collect();
        let mut ranked: Vec<u32> = (0..d_sae as u32).collect();
        let w = l1.weight(c);
        let top = max_k.min(d_sae);
        if top > 0 && top < ranked.len() {
            ranked.select_nth_unstable_by(top - 1, |&a, &b| {
                w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b))
            });
        }
        ranked.truncate(top);
        ranked.sort_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b)));
        let mut split = LetterSplit {
            probes: Vec::new(),
            main_latents: Vec::new(),
        };
        let both = y_train.iter().any(|&v| v) && y_train.iter().any(|&v| !v);
        if both {
            let mut best = f64::NEG_INFINITY;
            let mut growing = true;
            for k in 1..=top {
                let latents = ranked[..k].to_vec();
                let probe = fit_logistic(&gather(train.codes, &latents), k, &y_train)?;
                let pred: Vec<bool> = gather(test.codes, &latents)
                    .chunks_exact(k)
                    .map(|row| probe.score(row) > 0.0)
                    .collect();
                let f1 = f1_score(&pred, &y_test);
                if growing && f1 > best + f1_jump {
                    best = f1;
                    split.main_latents.clone_from(&latents);
                } else {
                    growing = false;
                }
                split.probes.push(KSparse { k, latents, f1 });
            }
        }
        out.push(split);
        progress(c + 1, N_LETTERS);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_by_hand() {
        let truth = [true, true, false, false];
        assert_eq!(f1_score(&[true, false, true, false], &truth), 0.5);
        assert_eq!(f1_score(&truth, &truth), 1.0);
        assert_eq!(f1_score(&[false; 4], &truth), 0.0);
    }

    #[test]
    fn codes_keep_only_firing_latents() {
        let c = sparse_codes(&[0.0, 2.0, 0.0, 1.5, 0.0, 0.0], 3);
        assert_eq!(c, vec![vec![(1, 2.0)], vec![(0, 1.5)]]);
        assert_eq!(gather(&c, &[0, 1]), vec![0.0, 2.0, 1.5, 0.0]);
    }
}
