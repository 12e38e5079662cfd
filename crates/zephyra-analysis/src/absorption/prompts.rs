//! The spelling task on the model: single-token alphabetic words, in-context prompts, activations at the
//! word's token (SAEBench's `vocab.py`, `prompting.py` and `probing.py`).
//!
//! Words are the vocabulary's tokens whose text is one or more ASCII letters, optionally after one leading
//! space (`Ġcat` → " cat"). `n_words` of them are drawn with the seed and split 80/20 into train and test
//! words. A prompt is built from token ids, so the word is always exactly its one token:
//! `[BOS] ex₁ " has the first letter:" " E₁" "\n" … ex₁₀ … "\n" word " has the first letter:"`, its
//! examples drawn from the same split (never the word itself); all prompts have the same length, and the
//! activation is read at the word's position.

use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use zephyra_data::harvest::capture_rows;
use zephyra_lm::{HookPoint, Llama, Tokenizer};

use super::{LetterSet, N_LETTERS};
use crate::error::{AnalysisError, Result};

/// SAEBench's template: `{word} has the first letter:` then ` L`.
pub const TEMPLATE_SUFFIX: &str = " has the first letter:";

/// Fewest words the eval runs on (10 per letter).
pub const MIN_WORDS: usize = 10 * N_LETTERS;

/// How the prompts are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbsorptionPrompts {
    /// Words drawn from the vocabulary (train + test).
    pub n_words: usize,
    /// Share of the words used for training the probes.
    pub train_fraction: f64,
    /// In-context examples per prompt.
    pub icl_examples: usize,
    /// Prompts per forward pass.
    pub batch: usize,
    /// Seed of the word draw, the split and the examples.
    pub seed: u64,
}

impl Default for AbsorptionPrompts {
    fn default() -> Self {
        Self {
            n_words: 3000,
            train_fraction: 0.8,
            icl_examples: 10,
            batch: 16,
            seed: 42,
        }
    }
}

/// The first letter (`0..26`) of a token's text when the text is letters only, after at most one space.
pub fn alpha_word_letter(text: &str) -> Option<usize> {
    let word = text.strip_prefix(' ').unwrap_or(text);
    let first = word.bytes().next()?;
    word.bytes()
        .all(|b| b.is_ascii_alphabetic())
        .then(|| usize::from(first.to_ascii_lowercase() - b'a'))
}

/// Every single-token alphabetic word of `tokenizer`: (id, text, letter), by id.
pub fn alpha_words(tokenizer: &Tokenizer) -> Vec<(u32, String, usize)> {
    (0..tokenizer.vocab_size() as u32)
        .filter(|&id| !tokenizer.is_special(id))
        .filter_map(|id| {
            let text = tokenizer.decode(&[id]).ok()?;
            alpha_word_letter(&text).map(|l| (id, text, l))
        })
        .collect()
}

/// The fixed pieces of a prompt, as token ids.
struct Pieces {
    bos: Option<u32>,
    suffix: Vec<u32>,
    answers: Vec<Vec<u32>>,
    separator: Vec<u32>,
}

fn encode_piece(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(text).map_err(AnalysisError::model)?;
    if let (Some(bos), Some(&first)) = (tokenizer.adds_bos(), ids.first()) {
        if first == bos {
            ids.remove(0);
        }
    }
    Ok(ids)
}

impl Pieces {
    fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let answers = (b'A'..=b'Z')
            .map(|c| encode_piece(tokenizer, &format!(" {}", char::from(c))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            bos: tokenizer.adds_bos(),
            suffix: encode_piece(tokenizer, TEMPLATE_SUFFIX)?,
            answers,
            separator: encode_piece(tokenizer, "\n")?,
        })
    }

    /// The prompt for `word` with `examples` (ids and letters), and the word's position in it.
    fn prompt(&self, word: u32, examples: &[(u32, usize)]) -> (Vec<u32>, usize) {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        for &(id, letter) in examples {
            ids.push(id);
            ids.extend_from_slice(&self.suffix);
            ids.extend_from_slice(&self.answers[letter]);
            ids.extend_from_slice(&self.separator);
        }
        let pos = ids.len();
        ids.push(word);
        ids.extend_from_slice(&self.suffix);
        (ids, pos)
    }
}

/// Draws the words, builds the prompts and reads each word's activation at `hook`: (train, test).
/// `progress(done, total)` counts prompts.
pub fn letter_activations(
    model: &Llama,
    tokenizer: &Tokenizer,
    hook: HookPoint,
    cfg: &AbsorptionPrompts,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(LetterSet, LetterSet)> {
    let vocab = alpha_words(tokenizer);
    let needed = MIN_WORDS;
    if vocab.len() < needed {
        return Err(AnalysisError::InvalidArgument(format!(
            "first-letter absorption needs at least {needed} single-token alphabetic words (10 per letter) \
             but the model's vocabulary has {}: use a model with a larger vocabulary",
            vocab.len()
        )));
    }
    if cfg.n_words < needed {
        return Err(AnalysisError::InvalidArgument(format!(
            "--absorption-words {} is too few: at least {needed} (10 per letter), e.g. 3000",
            cfg.n_words
        )));
    }
    if cfg.batch == 0 || !(0.0..1.0).contains(&cfg.train_fraction) || cfg.train_fraction == 0.0 {
        return Err(AnalysisError::InvalidArgument(format!(
            "absorption prompts: batch {} must be ≥ 1 and the train fraction {} inside (0, 1)",
            cfg.batch, cfg.train_fraction
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = cfg.n_words.min(vocab.len());
    let mut chosen: Vec<usize> = index::sample(&mut rng, vocab.len(), n).into_vec();
    chosen.shuffle(&mut rng);
    let n_train = ((n as f64) * cfg.train_fraction).round() as usize;
    if cfg.icl_examples >= n - n_train {
        return Err(AnalysisError::InvalidArgument(format!(
            "{} in-context examples need more than {} test words: ask for more words",
            cfg.icl_examples,
            n - n_train
        )));
    }
    let pieces = Pieces::new(tokenizer)?;
    let d = model.config().d_model;
    let mut done = 0usize;
    let mut run = |split: &[usize], rng: &mut ChaCha8Rng| -> Result<LetterSet> {
        let mut set = LetterSet {
            words: Vec::with_capacity(split.len()),
            letters: Vec::with_capacity(split.len()),
            x: Vec::with_capacity(split.len() * d),
            d,
        };
        for (b_idx, batch) in split.chunks(cfg.batch).enumerate() {
            let mut contexts = Vec::with_capacity(batch.len());
            let mut positions = Vec::with_capacity(batch.len());
            for (offset, &w) in batch.iter().enumerate() {
                // Examples from the same split, never the word itself (its index is skipped).
                let me = b_idx * cfg.batch + offset;
                let examples: Vec<(u32, usize)> =
                    index::sample(rng, split.len() - 1, cfg.icl_examples)
                        .into_iter()
                        .map(|j| {
                            let e = &vocab[split[if j >= me { j + 1 } else { j }]];
                            (e.0, e.2)
                        })
                        .collect();
                let (ids, pos) = pieces.prompt(vocab[w].0, &examples);
                contexts.push(ids);
                positions.push(pos);
            }
            let rows = capture_rows(model, &contexts, &[hook])?;
            let acts = rows.into_iter().next().unwrap_or_default();
            let seq = contexts[0].len();
            if acts.len() != batch.len() * seq * d {
                return Err(AnalysisError::ShapeMismatch {
                    what: "hook activation [batch, seq, d] of the spelling prompts",
                    expected: batch.len() * seq * d,
                    got: acts.len(),
                });
            }
            for (b, (&w, &pos)) in batch.iter().zip(&positions).enumerate() {
                let at = (b * seq + pos) * d;
                set.x.extend_from_slice(&acts[at..at + d]);
                set.words.push(vocab[w].1.clone());
                set.letters.push(vocab[w].2);
            }
            done += batch.len();
            progress(done, n);
        }
        Ok(set)
    };
    let train = run(&chosen[..n_train], &mut rng)?;
    let test = run(&chosen[n_train..], &mut rng)?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabetic_tokens_and_their_letters() {
        assert_eq!(alpha_word_letter(" cat"), Some(2));
        assert_eq!(alpha_word_letter("Zebra"), Some(25));
        assert_eq!(alpha_word_letter("  two"), None);
        assert_eq!(alpha_word_letter(" "), None);
        assert_eq!(alpha_word_letter("can't"), None);
        assert_eq!(alpha_word_letter("é"), None);
        assert_eq!(alpha_word_letter("x1"), None);
    }
}
