//! Per word: did another latent take the letter's direction? (SAEBench's `feature_absorption_calculator.py`.)
//!
//! For a test word of letter `c` that the letter probe recognises (score > 0), with `p` the probe's unit
//! direction, `x` the activation and `f` the SAE codes:
//! - `cos_j` = cosine of latent `j`'s decoder row with `p`; latent `j`'s *probe projection* is `f_j · cos_j`;
//!   the activation's is `x · p`;
//! - **absorption fraction**: `main` = the main latents' summed projection; the *absorbers* are the (at most
//!   three) other firing latents with `cos ≥ 0.1` and the largest positive projections, `T` their sum. It is
//!   0 when `main ≥ x·p` or `T < 0.4 · x·p`; 1 when `main ≤ 0`; else `a / (a + main)` with
//!   `a = min(T, x·p − main)`;
//! - **full absorption**: no main latent fires, the latent with the largest projection has `cos ≥ 0.025`
//!   and carries at least 0.4 of `x · p`.

use serde::{Deserialize, Serialize};

use super::sparse::Codes;

/// Thresholds of the absorption criteria (SAEBench's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// Minimum cosine of an absorbing latent with the probe (absorption fraction).
    pub fraction_min_cos: f64,
    /// Minimum cosine of the top-projecting latent with the probe (full absorption).
    pub full_min_cos: f64,
    /// Minimum share of the activation's probe projection the absorbers must carry (both).
    pub min_share: f64,
    /// Most latents that together count as absorbing one word (absorption fraction).
    pub max_absorbers: usize,
}

impl Default for Criteria {
    fn default() -> Self {
        Self {
            fraction_min_cos: 0.1,
            full_min_cos: 0.025,
            min_share: 0.4,
            max_absorbers: 3,
        }
    }
}

/// One absorbed word: which latent took the letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorbedWord {
    /// The word (the token's text).
    pub word: String,
    /// The latent with the largest probe projection.
    pub latent: u32,
    /// Cosine of its decoder row with the probe direction.
    pub cos: f64,
    /// Its probe projection over the activation's.
    pub share: f64,
    /// The word's absorption fraction.
    pub fraction: f64,
    /// Whether it is full absorption.
    pub full: bool,
}

/// The verdict on one word.
#[derive(Debug, Clone, PartialEq)]
pub struct WordScore {
    /// Absorption fraction in `[0, 1]`.
    pub fraction: f64,
    /// Full absorption by a single latent.
    pub full: bool,
    /// The top-projecting latent, its cosine and share (`None` when no latent fires).
    pub top: Option<(u32, f64, f64)>,
}

/// Cosine of each decoder row (`w_dec`, `[d_sae, d_in]`) with the unit vector `p`.
pub fn decoder_cosines(w_dec: &[f32], d_in: usize, p: &[f64]) -> Vec<f64> {
    w_dec
        .chunks_exact(d_in.max(1))
        .map(|row| {
            let dot: f64 = row.iter().zip(p).map(|(&a, b)| f64::from(a) * b).sum();
            let norm = row
                .iter()
                .map(|&a| f64::from(a).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                dot / norm
            } else {
                0.0
            }
        })
        .collect()
}

/// Scores one word: `act_proj` = `x · p`, `codes` its firing latents, `cos` every latent's cosine.
pub fn score_word(
    act_proj: f64,
    codes: &[(u32, f32)],
    main: &[u32],
    cos: &[f64],
    c: &Criteria,
) -> WordScore {
    let proj = |&(j, v): &(u32, f32)| f64::from(v) * cos[j as usize];
    let main_proj: f64 = codes
        .iter()
        .filter(|(j, _)| main.contains(j))
        .map(proj)
        .sum();
    let mut absorbers: Vec<f64> = codes
        .iter()
        .filter(|(j, _)| !main.contains(j) && cos[*j as usize] >= c.fraction_min_cos)
        .map(proj)
        .filter(|&p| p > 0.0)
        .collect();
    absorbers.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = absorbers.iter().take(c.max_absorbers).sum();
    let fraction = if act_proj <= 0.0 || main_proj >= act_proj || total < c.min_share * act_proj {
        0.0
    } else if main_proj <= 0.0 {
        1.0
    } else {
        let a = total.min(act_proj - main_proj);
        (a / (a + main_proj)).clamp(0.0, 1.0)
    };
    let top = codes
        .iter()
        .map(|e| (e.0, proj(e)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(j, p)| {
            let share = if act_proj != 0.0 { p / act_proj } else { 0.0 };
            (j, cos[j as usize], share)
        });
    let main_silent = codes
        .iter()
        .all(|(j, v)| !main.contains(j) || f64::from(*v) < 1e-8);
    let full = main_silent
        && act_proj >= 0.0
        && top.is_some_and(|(_, cj, share)| cj >= c.full_min_cos && share >= c.min_share);
    WordScore {
        fraction,
        full,
        top,
    }
}

/// Absorption over one letter's recognised test words.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterScore {
    /// Sum of the words' absorption fractions.
    pub fraction_sum: f64,
    /// Words fully absorbed.
    pub n_full: usize,
    /// The absorbed words (fraction > 0 or full).
    pub absorbed: Vec<AbsorbedWord>,
}

/// Scores the words `idx` of the test set (`codes`, `act_proj` per row, `words`).
pub fn score_letter(
    idx: &[usize],
    words: &[String],
    codes: &Codes,
    act_proj: &[f64],
    main: &[u32],
    cos: &[f64],
    c: &Criteria,
) -> LetterScore {
    let mut out = LetterScore {
        fraction_sum: 0.0,
        n_full: 0,
        absorbed: Vec::new(),
    };
    for &i in idx {
        let s = score_word(act_proj[i], &codes[i], main, cos, c);
        out.fraction_sum += s.fraction;
        out.n_full += usize::from(s.full);
        if let (true, Some((latent, cos, share))) = (s.fraction > 0.0 || s.full, s.top) {
            out.absorbed.push(AbsorbedWord {
                word: words[i].clone(),
                latent,
                cos,
                share,
                fraction: s.fraction,
                full: s.full,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_word_scores() {
        let c = Criteria::default();
        // Latent 0 is the main latent (cos 1), latent 1 an absorber (cos 0.5), latent 2 unaligned.
        let cos = [1.0, 0.5, 0.0];
        // Main latent fires fully: no absorption.
        let s = score_word(2.0, &[(0, 2.0)], &[0], &cos, &c);
        assert_eq!((s.fraction, s.full), (0.0, false));
        // Main silent, absorber projects 0.5·3 = 1.5 of 2 (share 0.75): fraction 1, full.
        let s = score_word(2.0, &[(1, 3.0), (2, 5.0)], &[0], &cos, &c);
        assert_eq!((s.fraction, s.full), (1.0, true));
        assert_eq!(s.top, Some((1, 0.5, 0.75)));
        // Partial: main projects 0.5, absorber 1.0 of 2: a = min(1, 1.5) = 1, fraction 1/1.5.
        let s = score_word(2.0, &[(0, 0.5), (1, 2.0)], &[0], &cos, &c);
        assert!((s.fraction - 1.0 / 1.5).abs() < 1e-12);
        assert!(!s.full);
        // Absorber share 0.25 < 0.4: nothing.
        let s = score_word(2.0, &[(1, 1.0)], &[0], &cos, &c);
        assert_eq!((s.fraction, s.full), (0.0, false));
    }

    #[test]
    fn cosines_ignore_the_decoder_norm() {
        let p = [0.6, 0.8];
        let cos = decoder_cosines(&[3.0, 0.0, 0.0, 0.0, 0.0, -2.0], 2, &p);
        assert!((cos[0] - 0.6).abs() < 1e-12 && cos[1] == 0.0 && (cos[2] + 0.8).abs() < 1e-12);
    }
}
