//! SentencePiece-style BPE (`tokenizer.ggml.model = llama`, as in Gemma): the GGUF stores pieces and
//! scores but no merge list, so the merges are rebuilt from them.
//!
//! Pipeline: control and user-defined pieces (whitespace runs such as `"\n\n"` or `"   "`) are cut
//! out of the raw text first (registered by the caller); each remaining span has its spaces replaced
//! by `▁` and is merged by BPE; characters no piece covers fall back to their UTF-8 bytes
//! (`<0xF0>` …). Decoding reverses it: `▁` → space, byte pieces → bytes, joined.
//!
//! Merges (as Hugging Face rebuilds them for a GGUF vocabulary): every split of a piece into two
//! pieces is a merge, ranked by the score of the merged piece (highest first), splits of one piece
//! ordered by the scores of their halves (highest first). BPE then repeatedly applies the
//! best-ranked merge present, which is SentencePiece's "merge the adjacent pair whose union scores
//! highest" rule (Kudo & Richardson 2018, arXiv:1808.06226; Sennrich et al. 2016, arXiv:1508.07909).

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;

use super::{vocab_of, Inner, Metadata};
use crate::error::LmError;

/// The SentencePiece word boundary that stands for a space.
const SPACE: &str = "\u{2581}";

/// Builds the model, normalizer and decoder of a SentencePiece-style vocabulary (special and
/// user-defined pieces are added by the caller).
pub(super) fn pipeline(
    meta: &Metadata<'_>,
    tokens: &[String],
    token_types: &[i32],
) -> Result<Inner, LmError> {
    let key = "tokenizer.ggml.scores";
    let scores: Vec<f32> = meta
        .get(key)?
        .to_vec()
        .and_then(|values| values.iter().map(|v| v.to_f32()).collect())
        .map_err(|err| meta.bad(key, err.to_string()))?;
    if scores.len() != tokens.len() {
        return Err(meta.bad(
            key,
            format!(
                "it has {} entries but tokenizer.ggml.tokens has {}",
                scores.len(),
                tokens.len()
            ),
        ));
    }
    let unk = meta
        .metadata
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.to_u32().ok())
        .and_then(|id| tokens.get(id as usize).cloned());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges(tokens, &scores, token_types))
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|err| LmError::Tokenizer {
        detail: format!("building the SentencePiece BPE model: {err}"),
    })?;
    let to_space = |a: &str, b: &str| {
        Replace::new(a, b).map_err(|err| LmError::Tokenizer {
            detail: format!("building the `{a}` → `{b}` replacement: {err}"),
        })
    };
    let mut inner = Inner::new(bpe.into());
    inner
        .with_normalizer(Some(to_space(" ", SPACE)?))
        .map_err(|err| LmError::Tokenizer {
            detail: format!("setting the space normalizer: {err}"),
        })?;
    inner.with_decoder(Some(DecoderSequence::new(vec![
        to_space(SPACE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    Ok(inner)
}

/// `tokenizer.ggml.token_type` of byte-fallback pieces (`<0x41>`), which never take part in merges.
const TOKEN_TYPE_BYTE: i32 = 6;

/// Every split of a piece into two pieces, best first (see the module docs).
fn merges(tokens: &[String], scores: &[f32], token_types: &[i32]) -> Vec<(String, String)> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        index.entry(token.as_str()).or_insert(id);
    }
    // (score of the piece, its id, score of the left half, of the right half, left id, right id)
    let mut found: Vec<(f32, usize, f32, f32, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if token_types[id] == TOKEN_TYPE_BYTE || index.get(piece.as_str()) != Some(&id) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                found.push((scores[id], id, scores[li], scores[ri], li, ri));
            }
        }
    }
    found.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(b.2.total_cmp(&a.2))
            .then(b.3.total_cmp(&a.3))
    });
    found
        .into_iter()
        .map(|(_, _, _, _, l, r)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_rank_by_the_merged_pieces_score() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc", "<0x61>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [-1.0, -2.0, -3.0, -10.0, -5.0, -4.0, 0.0];
        let types = [1, 1, 1, 1, 1, 1, TOKEN_TYPE_BYTE];
        let got = merges(&tokens, &scores, &types);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        // abc (-4) first, its splits by their halves' scores: (a, bc) = (-1, -5) before
        // (ab, c) = (-10, -3); then bc (-5), then ab (-10).
        assert_eq!(
            got,
            [
                pair("a", "bc"),
                pair("ab", "c"),
                pair("b", "c"),
                pair("a", "b")
            ]
        );
    }
}
