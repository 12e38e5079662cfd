//! First-letter feature absorption on a real model: Chanin et al. 2024, "A is for Absorption: Studying
//! Feature Splitting and Absorption in Sparse Autoencoders" (arXiv:2409.14507), as SAEBench implements it
//! (`sae_bench/evals/absorption/`, MIT licence; the procedure and thresholds are ported, the code is ours).
//!
//! 1. [`prompts`]: single-token alphabetic words of the model's vocabulary, split 80/20 into train and test
//!    words; each word in an in-context spelling prompt (`{word} has the first letter: {L}` examples, then
//!    `{word} has the first letter:`) whose activation at the SAE's hook is read at the word's token;
//! 2. [`probe`]: a logistic-regression probe per letter on the train activations (the ground truth of
//!    "this activation carries letter L");
//! 3. [`sparse`]: k-sparse probing on the SAE codes finds each letter's main (feature-splitting) latents;
//! 4. [`score`]: for each test word the probe recognises, the absorption fraction and full absorption.
//!
//! Per letter: mean absorption fraction and full-absorption rate (over the probe's true positives), the
//! main latents, the absorbing latents; overall: their means over the letters whose probe reaches F1 ≥ 0.6
//! on the test words and that have enough recognised words.

pub mod probe;
pub mod prompts;
pub mod report;
pub mod score;
pub mod sparse;

use serde::{Deserialize, Serialize};
use zephyra_sae::Sae;

use crate::error::{AnalysisError, Result};
use probe::{train_probe, ProbeTraining, Rows};
use score::{decoder_cosines, score_letter, AbsorbedWord, Criteria};
use sparse::{letter_splits, sparse_codes, KSparse, LetterCodes};

pub use prompts::{letter_activations, AbsorptionPrompts};
pub use report::AbsorptionReport;

/// Letters a to z.
pub const N_LETTERS: usize = 26;

/// Settings of the scoring (everything after the activations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionConfig {
    /// Largest `k` of the k-sparse probes.
    pub max_k: usize,
    /// F1 gain over the best smaller `k` that makes another latent a main latent.
    pub f1_jump: f64,
    /// Minimum letter-probe F1 on the test words for a letter to count.
    pub min_probe_f1: f64,
    /// Minimum recognised test words for a letter to count.
    pub min_words: usize,
    /// Absorption thresholds.
    pub criteria: Criteria,
    /// Seed of the probes' row order.
    pub seed: u64,
}

impl Default for AbsorptionConfig {
    fn default() -> Self {
        Self {
            max_k: 10,
            f1_jump: 0.03,
            min_probe_f1: 0.6,
            min_words: 10,
            criteria: Criteria::default(),
            seed: 42,
        }
    }
}

/// Words with their letter and their activation at the hook.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterSet {
    /// The words (token text).
    pub words: Vec<String>,
    /// Each word's first letter, `0..26`.
    pub letters: Vec<usize>,
    /// Activations `[words, d]`.
    pub x: Vec<f32>,
    /// Activation width.
    pub d: usize,
}

impl LetterSet {
    fn check(&self, what: &'static str) -> Result<()> {
        let n = self.words.len();
        if self.letters.len() != n {
            return Err(AnalysisError::ShapeMismatch {
                what,
                expected: n,
                got: self.letters.len(),
            });
        }
        if self.x.len() != n * self.d {
            return Err(AnalysisError::ShapeMismatch {
                what,
                expected: n * self.d,
                got: self.x.len(),
            });
        }
        if let Some(&l) = self.letters.iter().find(|&&l| l >= N_LETTERS) {
            return Err(AnalysisError::InvalidArgument(format!(
                "letter index {l} is not a letter (0..26)"
            )));
        }
        Ok(())
    }
}

/// One letter's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LetterAbsorption {
    /// The letter.
    pub letter: char,
    /// Test words of this letter.
    pub n_test_words: usize,
    /// F1 of the letter probe on the test words.
    pub probe_f1: f64,
    /// Test words of this letter the probe recognises (the denominator of both rates).
    pub n_probe_true_positives: usize,
    /// The main latents (k-sparse probing).
    pub main_latents: Vec<u32>,
    /// The k-sparse probes, `k = 1..=max_k`.
    pub k_sparse: Vec<KSparse>,
    /// Mean absorption fraction over the recognised words.
    pub mean_absorption_fraction: f64,
    /// Fully absorbed words.
    pub n_full_absorption: usize,
    /// Fully absorbed / recognised words.
    pub full_absorption_rate: f64,
    /// Whether the letter counts in the means (probe F1 and word count thresholds met).
    pub scored: bool,
    /// The absorbed words.
    pub absorbed: Vec<AbsorbedWord>,
}

/// Everything the absorption eval measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionFigures {
    /// Settings.
    pub config: AbsorptionConfig,
    /// Training words.
    pub n_train_words: usize,
    /// Test words.
    pub n_test_words: usize,
    /// Letters that count in the means.
    pub n_letters_scored: usize,
    /// Mean over scored letters of the mean absorption fraction (SAEBench's `mean_absorption_fraction_score`).
    pub mean_absorption_fraction: f64,
    /// Mean over scored letters of the full-absorption rate (`mean_full_absorption_score`).
    pub mean_full_absorption_rate: f64,
    /// Mean over scored letters of the number of main latents (`mean_num_split_features`).
    pub mean_num_split_features: f64,
    /// Per letter.
    pub letters: Vec<LetterAbsorption>,
}

/// Progress of [`score_absorption`]: stage name, steps done, steps in the stage.
pub type Progress<'a> = dyn FnMut(&'static str, usize, usize) + 'a;

/// Scores `sae` for first-letter absorption given the train and test words' activations.
pub fn score_absorption(
    train: &LetterSet,
    test: &LetterSet,
    sae: &Sae,
    cfg: &AbsorptionConfig,
    progress: &mut Progress<'_>,
) -> Result<AbsorptionFigures> {
    train.check("absorption train set")?;
    test.check("absorption test set")?;
    let d = sae.cfg.d_in;
    if train.d != d || test.d != d {
        return Err(AnalysisError::ShapeMismatch {
            what: "absorption activations width (the SAE's d_in)",
            expected: d,
            got: train.d,
        });
    }
    if train.words.is_empty() || test.words.is_empty() {
        return Err(AnalysisError::InvalidArgument(
            "absorption needs train and test words".into(),
        ));
    }
    // The probe trains on the raw activations, as SAEBench's: dividing them by their mean norm (as this
    // code first did) leaves the weights ~norm times too far for the same Adam steps and weight decay —
    // on SmolLM2's layer 15 (norm ≈ 169) it scored 8 letters' probes at F1 ≥ 0.6 instead of 20.
    let probe = train_probe(
        &Rows::Dense { x: &train.x, d },
        &train.letters,
        N_LETTERS,
        &ProbeTraining::letter_probe(cfg.seed),
        &mut |done, total| progress("letter probe", done, total),
    )?;
    let test_rows = Rows::Dense { x: &test.x, d };
    let test_scores: Vec<Vec<f64>> = (0..test.words.len())
        .map(|i| probe.scores(&test_rows, i))
        .collect();

    let d_sae = sae.cfg.d_sae;
    let encode = |x: &[f32]| -> Result<sparse::Codes> {
        let mut codes = Vec::with_capacity(x.len() / d);
        for chunk in x.chunks(256 * d) {
            let dense = sae.encode(chunk, chunk.len() / d)?;
            codes.extend(sparse_codes(&dense, d_sae));
        }
        Ok(codes)
    };
    progress("encoding", 0, 1);
    let (codes_train, codes_test) = (encode(&train.x)?, encode(&test.x)?);
    let splits = letter_splits(
        LetterCodes {
            codes: &codes_train,
            letters: &train.letters,
        },
        LetterCodes {
            codes: &codes_test,
            letters: &test.letters,
        },
        d_sae,
        cfg,
        &mut |done, total| progress("k-sparse probes", done, total),
    )?;

    let mut letters = Vec::with_capacity(N_LETTERS);
    for (c, split) in splits.into_iter().enumerate() {
        let w = probe.weight(c);
        let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
        let p: Vec<f64> = w.iter().map(|v| v / norm.max(f64::MIN_POSITIVE)).collect();
        let truth: Vec<bool> = test.letters.iter().map(|&l| l == c).collect();
        let pred: Vec<bool> = test_scores.iter().map(|z| z[c] > 0.0).collect();
        let probe_f1 = sparse::f1_score(&pred, &truth);
        let tp: Vec<usize> = (0..test.words.len())
            .filter(|&i| truth[i] && pred[i])
            .collect();
        let act_proj: Vec<f64> = test
            .x
            .chunks_exact(d)
            .map(|r| r.iter().zip(&p).map(|(&a, b)| f64::from(a) * b).sum())
            .collect();
        let cos = decoder_cosines(&sae.w_dec, d, &p);
        let scored_words = score_letter(
            &tp,
            &test.words,
            &codes_test,
            &act_proj,
            &split.main_latents,
            &cos,
            &cfg.criteria,
        );
        let n_tp = tp.len();
        let rate = |v: f64| if n_tp > 0 { v / n_tp as f64 } else { 0.0 };
        letters.push(LetterAbsorption {
            letter: char::from(b'a' + c as u8),
            n_test_words: truth.iter().filter(|&&t| t).count(),
            probe_f1,
            n_probe_true_positives: n_tp,
            main_latents: split.main_latents,
            k_sparse: split.probes,
            mean_absorption_fraction: rate(scored_words.fraction_sum),
            n_full_absorption: scored_words.n_full,
            full_absorption_rate: rate(scored_words.n_full as f64),
            scored: probe_f1 >= cfg.min_probe_f1 && n_tp >= cfg.min_words.max(1),
            absorbed: scored_words.absorbed,
        });
    }
    let scored: Vec<&LetterAbsorption> = letters.iter().filter(|l| l.scored).collect();
    let mean = |f: fn(&LetterAbsorption) -> f64| {
        if scored.is_empty() {
            0.0
        } else {
            scored.iter().map(|l| f(l)).sum::<f64>() / scored.len() as f64
        }
    };
    Ok(AbsorptionFigures {
        config: *cfg,
        n_train_words: train.words.len(),
        n_test_words: test.words.len(),
        n_letters_scored: scored.len(),
        mean_absorption_fraction: mean(|l| l.mean_absorption_fraction),
        mean_full_absorption_rate: mean(|l| l.full_absorption_rate),
        mean_num_split_features: mean(|l| l.main_latents.len() as f64),
        letters,
    })
}
