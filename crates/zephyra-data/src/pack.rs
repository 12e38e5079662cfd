//! Tokenization and packing: documents → fixed-length contexts, deterministically shuffled.
//!
//! Every document's tokens are followed by the end-of-sequence token; the resulting stream is cut into
//! contexts of exactly `ctx` tokens (a document may span contexts; the incomplete tail of the corpus is
//! dropped). A model whose tokenizer adds BOS (Gemma) gets BOS as the first token of *every* context, as
//! SAELens' `prepend_bos` does: such models put their attention sink on BOS and are far off their training
//! distribution without it (Gemma 3 270M's next-token loss on this README, contexts of 64, is 4.74 nats with it and 7.48 without).
//! The rest of such a context is the next `ctx − 1` tokens of the stream, a document's own leading BOS
//! dropped when it would come right after the prefix. Contexts then pass through a shuffle buffer of [`PackOptions::shuffle_contexts`] contexts driven
//! by a ChaCha8 generator seeded with [`PackOptions::seed`]: the output order depends only on the corpus, the
//! tokenizer and these options, which is what lets an interrupted harvest resume exactly.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::corpus::{Documents, ReadStats};
use crate::error::{DataError, Result};

/// What the packer needs from a tokenizer.
pub trait TextEncoder: Send + Sync {
    /// Token ids of `text` (no BOS/EOS added).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// The end-of-sequence token placed between documents.
    fn eos_token_id(&self) -> u32;
    /// Whether `id` is a special (control) token.
    fn is_special(&self, id: u32) -> bool;
    /// The token every context starts with (BOS for models whose tokenizer adds one), if any.
    fn context_prefix(&self) -> Option<u32> {
        None
    }
}

impl TextEncoder for zephyra_lm::Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(zephyra_lm::Tokenizer::encode(self, text)?)
    }

    fn eos_token_id(&self) -> u32 {
        // The GGUF of every Llama-family model we load names an EOS token; 0 is `<|endoftext|>` in SmolLM2's
        // vocabulary and the conventional fallback.
        zephyra_lm::Tokenizer::eos_token_id(self).unwrap_or(0)
    }

    fn is_special(&self, id: u32) -> bool {
        zephyra_lm::Tokenizer::is_special(self, id)
    }

    fn context_prefix(&self) -> Option<u32> {
        self.adds_bos()
    }
}

/// Packing options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackOptions {
    /// Tokens per context.
    pub ctx: usize,
    /// Seed of the context shuffle.
    pub seed: u64,
    /// Contexts held by the shuffle buffer (0 or 1: no shuffle).
    pub shuffle_contexts: usize,
}

/// Default size of the context shuffle buffer.
pub const DEFAULT_SHUFFLE_CONTEXTS: usize = 4096;

/// Iterator of packed, shuffled contexts (each exactly `ctx` token ids).
pub struct ContextStream {
    documents: Documents,
    encoder: Arc<dyn TextEncoder>,
    options: PackOptions,
    pending: VecDeque<u32>,
    buffer: Vec<Vec<u32>>,
    rng: ChaCha8Rng,
    draining: bool,
    n_tokens_read: u64,
}

impl std::fmt::Debug for ContextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextStream")
            .field("options", &self.options)
            .field("n_tokens_read", &self.n_tokens_read)
            .finish()
    }
}

impl ContextStream {
    /// Packs `documents` with `encoder`.
    pub fn new(
        documents: Documents,
        encoder: Arc<dyn TextEncoder>,
        options: PackOptions,
    ) -> Result<Self> {
        if options.ctx < 2 {
            return Err(DataError::InvalidOption {
                name: "--ctx",
                value: options.ctx.to_string(),
                reason: "a context needs at least 2 tokens".into(),
            });
        }
        let rng = ChaCha8Rng::seed_from_u64(options.seed);
        Ok(Self {
            documents,
            encoder,
            options,
            pending: VecDeque::new(),
            buffer: Vec::new(),
            rng,
            draining: false,
            n_tokens_read: 0,
        })
    }

    /// Reader counters so far.
    pub fn read_stats(&self) -> &ReadStats {
        self.documents.stats()
    }

    /// Tokens produced by the tokenizer so far (EOS tokens included).
    pub fn n_tokens_read(&self) -> u64 {
        self.n_tokens_read
    }

    /// The next context straight from the corpus (before shuffling), or `None` at its end.
    fn next_packed(&mut self) -> Result<Option<Vec<u32>>> {
        let ctx = self.options.ctx;
        while self.pending.len() < ctx {
            match self.documents.next() {
                Some(doc) => {
                    let doc = doc?;
                    let ids = self.encoder.encode(&doc.text)?;
                    self.n_tokens_read += ids.len() as u64;
                    self.pending.extend(ids);
                    if doc.ends_document {
                        self.pending.push_back(self.encoder.eos_token_id());
                        self.n_tokens_read += 1;
                    }
                }
                None => return Ok(None),
            }
        }
        let Some(prefix) = self.encoder.context_prefix() else {
            return Ok(Some(self.pending.drain(..ctx).collect()));
        };
        if self.pending.front() == Some(&prefix) {
            self.pending.pop_front();
        }
        let mut context = Vec::with_capacity(ctx);
        context.push(prefix);
        context.extend(self.pending.drain(..ctx - 1));
        Ok(Some(context))
    }
}

impl Iterator for ContextStream {
    type Item = Result<Vec<u32>>;

    fn next(&mut self) -> Option<Self::Item> {
        let cap = self.options.shuffle_contexts.max(1);
        if !self.draining {
            while self.buffer.len() < cap {
                match self.next_packed() {
                    Ok(Some(c)) => self.buffer.push(c),
                    Ok(None) => {
                        self.draining = true;
                        break;
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let j = self.rng.random_range(0..self.buffer.len());
        // Take a random context out and keep the buffer full (or shrinking while draining).
        Some(Ok(self.buffer.swap_remove(j)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{Corpus, CorpusOptions};

    /// One token per byte; EOS = 1000.
    struct Bytes;
    impl TextEncoder for Bytes {
        fn encode(&self, text: &str) -> Result<Vec<u32>> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn eos_token_id(&self) -> u32 {
            1000
        }
        fn is_special(&self, id: u32) -> bool {
            id == 1000
        }
    }

    /// A corpus of two files, `a.txt` = "abcde" and `b.txt` = `b`, in `dir`.
    fn two_files(dir: &std::path::Path, b: &str) -> Corpus {
        std::fs::write(dir.join("a.txt"), "abcde").unwrap();
        std::fs::write(dir.join("b.txt"), b).unwrap();
        Corpus::from_specs(&[dir.display().to_string()], CorpusOptions::default()).unwrap()
    }

    /// Every context of `corpus` in corpus order (no shuffle), `ctx` tokens each.
    fn unshuffled(corpus: &Corpus, encoder: Arc<dyn TextEncoder>, ctx: usize) -> Vec<Vec<u32>> {
        let opts = PackOptions {
            ctx,
            seed: 0,
            shuffle_contexts: 1,
        };
        ContextStream::new(corpus.documents(), encoder, opts)
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
    }

    #[test]
    fn packs_with_eos_and_shuffles_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = two_files(dir.path(), "fgh");
        let got = unshuffled(&corpus, Arc::new(Bytes), 4);
        // a b c d | e EOS f g | (h EOS dropped: incomplete)
        assert_eq!(got, vec![vec![97, 98, 99, 100], vec![101, 1000, 102, 103]]);
        let shuffled = |seed| -> Vec<Vec<u32>> {
            let o = PackOptions {
                ctx: 2,
                seed,
                shuffle_contexts: 8,
            };
            ContextStream::new(corpus.documents(), Arc::new(Bytes), o)
                .unwrap()
                .map(|c| c.unwrap())
                .collect()
        };
        let (a, b, c) = (shuffled(1), shuffled(1), shuffled(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort();
        let mut plain: Vec<Vec<u32>> = vec![
            vec![97, 98],
            vec![99, 100],
            vec![101, 1000],
            vec![102, 103],
            vec![104, 1000],
        ];
        plain.sort();
        assert_eq!(sorted, plain);
    }

    /// One token per byte, BOS = 999 before every document and first in every context.
    struct BytesWithBos;
    impl TextEncoder for BytesWithBos {
        fn encode(&self, text: &str) -> Result<Vec<u32>> {
            Ok(std::iter::once(999)
                .chain(text.bytes().map(u32::from))
                .collect())
        }
        fn eos_token_id(&self) -> u32 {
            1000
        }
        fn is_special(&self, id: u32) -> bool {
            id >= 999
        }
        fn context_prefix(&self) -> Option<u32> {
            Some(999)
        }
    }

    #[test]
    fn models_that_add_bos_get_it_first_in_every_context() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = two_files(dir.path(), "fghij");
        let got = unshuffled(&corpus, Arc::new(BytesWithBos), 4);
        // Stream: BOS a b c d e EOS BOS f g h i j EOS. The first context's prefix replaces the document's
        // own BOS; later ones take the next three tokens (d e EOS), dropping a document BOS that would
        // follow the prefix (BOS f g h → f g h); the incomplete tail (i j EOS) is dropped.
        assert_eq!(
            got,
            vec![
                vec![999, 97, 98, 99],
                vec![999, 100, 101, 1000],
                vec![999, 102, 103, 104],
            ]
        );
    }
}
