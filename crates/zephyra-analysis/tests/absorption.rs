//! First-letter absorption on a planted case (no LM): activations built from 26 known letter directions, and
//! hand-made ReLU SAEs — one whose token latent provably takes letter a's direction for a known subset of
//! the test words (the letter latent is silent there), one that keeps the letter latent firing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zephyra_analysis::absorption::probe::{train_probe, ProbeTraining, Rows};
use zephyra_analysis::absorption::{
    score_absorption, AbsorptionConfig, AbsorptionFigures, LetterSet,
};
use zephyra_sae::{Architecture, Sae, SaeConfig};

const D: usize = 64;
/// The token direction the absorbing latent owns (dims 0..26 are the letters, 27.. noise).
const TOKEN_DIM: usize = 26;
const D_SAE: usize = 27;
const TRAIN_PER_LETTER: usize = 20;
const TEST_PER_LETTER: usize = 10;
/// Test words of letter a that carry the token direction (and are absorbed by the absorbing SAE).
const ABSORBED: usize = 4;

/// `per_letter` words per letter: `x = 3·e_letter + noise` (norm 0.5, in dims 27..64); the first
/// `with_token` words of letter a also get `2·e_token`.
fn words(per_letter: usize, with_token: usize, rng: &mut ChaCha8Rng, tag: &str) -> LetterSet {
    let mut set = LetterSet {
        words: Vec::new(),
        letters: Vec::new(),
        x: Vec::new(),
        d: D,
    };
    for letter in 0..26 {
        for i in 0..per_letter {
            let mut x = [0.0f32; D];
            x[letter] = 3.0;
            if letter == 0 && i < with_token {
                x[TOKEN_DIM] = 2.0;
            }
            let noise: Vec<f32> = (TOKEN_DIM + 1..D)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let norm = noise.iter().map(|v| v * v).sum::<f32>().sqrt();
            for (j, v) in noise.iter().enumerate() {
                x[TOKEN_DIM + 1 + j] = 0.5 * v / norm;
            }
            set.x.extend_from_slice(&x);
            set.letters.push(letter);
            set.words
                .push(format!("{}{tag}{i}", char::from(b'a' + letter as u8)));
        }
    }
    set
}

/// A ReLU SAE: latent `l < 26` reads `e_l` (bias `-1`) and writes `e_l`; latent 26 reads the token
/// direction. `absorbing`: latent 0 is inhibited by the token direction and latent 26 writes
/// `(3·e_0 + 2·e_token)/√13` with activation √13, reconstructing those words alone; otherwise latent 26
/// writes `e_token` only.
fn planted_sae(absorbing: bool) -> Sae {
    let cfg = SaeConfig::new(D, D_SAE, Architecture::Relu).unwrap();
    let mut sae = Sae::zeros(cfg).unwrap();
    let enc = |sae: &mut Sae, i: usize, j: usize, v: f32| sae.w_enc[i * D_SAE + j] = v;
    for l in 0..26 {
        enc(&mut sae, l, l, 1.0);
        sae.b_enc[l] = -1.0;
        sae.w_dec[l * D + l] = 1.0;
    }
    let s13 = 13f32.sqrt();
    if absorbing {
        enc(&mut sae, TOKEN_DIM, 0, -2.0);
        enc(&mut sae, TOKEN_DIM, 26, s13 / 2.0);
        sae.w_dec[26 * D] = 3.0 / s13;
        sae.w_dec[26 * D + TOKEN_DIM] = 2.0 / s13;
    } else {
        enc(&mut sae, TOKEN_DIM, 26, 1.0);
        sae.w_dec[26 * D + TOKEN_DIM] = 1.0;
    }
    sae
}

fn data() -> (LetterSet, LetterSet) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let train = words(TRAIN_PER_LETTER, 0, &mut rng, "train");
    let test = words(TEST_PER_LETTER, ABSORBED, &mut rng, "test");
    (train, test)
}

#[test]
fn a_latent_that_takes_the_letter_direction_is_scored_as_absorbed() {
    let (train, test) = data();
    let cfg = AbsorptionConfig::default();
    let f = score_absorption(&train, &test, &planted_sae(true), &cfg, &mut |_, _, _| {}).unwrap();
    assert_eq!(f.n_letters_scored, 26);
    for l in &f.letters {
        // The letter probe recognises every test word, and the letter's own latent is its main latent.
        assert_eq!(l.probe_f1, 1.0, "letter {}", l.letter);
        assert_eq!(l.n_probe_true_positives, TEST_PER_LETTER);
        let own = u32::from(l.letter as u8 - b'a');
        assert_eq!(l.main_latents, vec![own], "letter {}", l.letter);
        if l.letter != 'a' {
            assert_eq!(l.mean_absorption_fraction, 0.0, "letter {}", l.letter);
            assert_eq!(l.n_full_absorption, 0);
            assert!(l.absorbed.is_empty());
        }
    }
    let a = &f.letters[0];
    let expected = ABSORBED as f64 / TEST_PER_LETTER as f64;
    assert_eq!(a.n_full_absorption, ABSORBED);
    assert!((a.full_absorption_rate - expected).abs() < 1e-12);
    assert!((a.mean_absorption_fraction - expected).abs() < 1e-12);
    // k = 1 misses the absorbed words: recall 6/10, F1 12/16.
    assert!(
        (a.k_sparse[0].f1 - 0.75).abs() < 1e-12,
        "{:?}",
        a.k_sparse[0]
    );
    assert_eq!(a.absorbed.len(), ABSORBED);
    let expected_cos = {
        let probe = train_probe(
            &Rows::Dense { x: &train.x, d: D },
            &train.letters,
            26,
            &ProbeTraining::letter_probe(cfg.seed),
            &mut |_, _| {},
        )
        .unwrap();
        let p = probe.weight(0);
        let norm = p.iter().map(|v| v * v).sum::<f64>().sqrt();
        (3.0 * p[0] + 2.0 * p[TOKEN_DIM]) / (13f64.sqrt() * norm)
    };
    for w in &a.absorbed {
        assert!(
            w.word.starts_with("atest") && w.full && w.fraction == 1.0,
            "{w:?}"
        );
        assert_eq!(w.latent, 26);
        // cos(decoder row, probe of a): the row is (3·e_0 + 2·e_token)/√13, and a one-vs-rest probe also
        // weighs the 25 other letters' directions (negatively), so the cosine is computed here from the same
        // probe trained independently of the scorer
        // (on the raw activations, as the scorer's and SAEBench's).
        assert!(
            (w.cos - expected_cos).abs() < 1e-6,
            "{w:?} vs {expected_cos}"
        );
        assert!(w.cos > 0.1, "{w:?}");
        // The latent carries ≈ all the projection: its part is the word's letter + token part, and the
        // word's x·p also holds the noise dimensions' part (the probe has small weights there: measured
        // shares 0.98–1.12 on these words).
        assert!((w.share - 1.0).abs() < 0.2, "{w:?}");
    }
    let words: Vec<&str> = a.absorbed.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(words, ["atest0", "atest1", "atest2", "atest3"]);
    assert!((f.mean_full_absorption_rate - expected / 26.0).abs() < 1e-12);
    assert!((f.mean_absorption_fraction - expected / 26.0).abs() < 1e-12);
    assert_eq!(f.mean_num_split_features, 1.0);
}

/// [`score_absorption`] of the planted SAE (`absorbing`: with its absorbing latents) with the default settings.
fn score_default(
    train: &LetterSet,
    test: &LetterSet,
    absorbing: bool,
) -> zephyra_analysis::Result<AbsorptionFigures> {
    let cfg = AbsorptionConfig::default();
    score_absorption(
        train,
        test,
        &planted_sae(absorbing),
        &cfg,
        &mut |_, _, _| {},
    )
}

#[test]
fn an_sae_whose_letter_latent_keeps_firing_scores_no_absorption() {
    let (train, test) = data();
    let f = score_default(&train, &test, false).unwrap();
    assert_eq!(f.n_letters_scored, 26);
    assert_eq!(f.mean_absorption_fraction, 0.0);
    assert_eq!(f.mean_full_absorption_rate, 0.0);
    assert!(f.letters.iter().all(|l| l.absorbed.is_empty()));
}

#[test]
fn mismatched_widths_are_refused() {
    let (train, mut test) = data();
    test.x.pop();
    let e = score_default(&train, &test, true).unwrap_err();
    assert!(e.to_string().contains("absorption test set"), "{e}");
}
