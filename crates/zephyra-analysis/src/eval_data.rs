//! Keeping eval data apart from training data.
//!
//! `zephyra harvest` (and on-the-fly training) read the corpus files in the order of a seeded shuffle
//! (`Corpus::shuffle_inputs(seed)`, seed 0 by default) from the front. The default eval set is the
//! **held-out tail**: the same shuffled file order, reversed, so eval reads first the files a training run
//! reaches last; the two are disjoint unless training consumed (almost) the whole corpus. With `--data` the
//! given corpus is read as it is (the user chose held-out data).

use zephyra_data::corpus::{CorpusOptions, Input};
use zephyra_data::Corpus;

use crate::error::{AnalysisError, Result};

/// `corpus` with its files in the reverse of the training order for `train_seed`.
pub fn held_out_tail(corpus: &Corpus, train_seed: u64) -> Result<Corpus> {
    let mut shuffled = corpus.clone();
    shuffled.shuffle_inputs(train_seed);
    let mut specs = Vec::new();
    for input in shuffled.inputs().iter().rev() {
        match input {
            Input::File(path, _) => specs.push(path.display().to_string()),
            Input::Stdin => {
                return Err(AnalysisError::InvalidArgument(
                    "cannot hold out the tail of standard input: pass eval files with --data"
                        .into(),
                ))
            }
        }
    }
    Corpus::from_specs(
        &specs,
        CorpusOptions {
            text_field: corpus.text_field().to_string(),
        },
    )
    .map_err(AnalysisError::Data)
}
