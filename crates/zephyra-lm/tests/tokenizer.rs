//! Tokenizer parity with Hugging Face: every text in `testdata/smollm2/tokens.json` must encode to the
//! reference ids and tokens exactly and decode back to the text.

mod common;

use std::sync::OnceLock;

use common::reference_tokens;
use serde_json::Value;
use zephyra_lm::testing::stream_pieces;
use zephyra_lm::Tokenizer;

/// The SmolLM2 tokenizer, built once for all tests of this file.
fn smollm2_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = zephyra_lm::fetch::resolve_model("smollm2").expect("fetching SmolLM2");
        Tokenizer::from_gguf(&path).expect("building the tokenizer from the GGUF")
    })
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("ids is an array")
        .iter()
        .map(|v| v.as_u64().expect("id is an integer") as u32)
        .collect()
}

#[test]
fn every_reference_text_matches_hugging_face() {
    let reference = reference_tokens();
    let tok = smollm2_tokenizer();
    let texts = reference["texts"].as_array().expect("texts array");
    assert!(texts.len() >= 12, "expected the 12 reference texts");
    for (i, entry) in texts.iter().enumerate() {
        let text = entry["text"].as_str().expect("text");
        let want_ids = ids_of(&entry["ids"]);
        let ids = tok.encode(text).expect("encode");
        assert_eq!(ids, want_ids, "texts[{i}] {text:?}: ids differ");

        let want_tokens: Vec<&str> = entry["tokens"]
            .as_array()
            .expect("tokens array")
            .iter()
            .map(|t| t.as_str().expect("token string"))
            .collect();
        let tokens: Vec<&str> = ids
            .iter()
            .map(|&id| tok.token_str(id).expect("id in vocabulary"))
            .collect();
        assert_eq!(
            tokens, want_tokens,
            "texts[{i}] {text:?}: token strings differ"
        );

        assert_eq!(
            tok.decode(&ids).expect("decode"),
            text,
            "texts[{i}]: decode"
        );
        assert_eq!(
            entry["decoded"].as_str().expect("decoded"),
            text,
            "texts[{i}]: the reference itself round-trips"
        );
    }
}

#[test]
fn every_reference_prompt_matches_hugging_face() {
    let reference = reference_tokens();
    let tok = smollm2_tokenizer();
    let prompts = reference["prompts"].as_array().expect("prompts array");
    assert_eq!(prompts.len(), 3);
    for (p, entry) in prompts.iter().enumerate() {
        let text = entry["text"].as_str().expect("text");
        let want_ids = ids_of(&entry["ids"]);
        let ids = tok.encode(text).expect("encode");
        // The reference cut each prompt to at most 96 tokens (README): compare that prefix.
        assert_eq!(want_ids.len(), ids.len().min(96), "prompts[{p}]: length");
        assert_eq!(
            ids[..want_ids.len()],
            want_ids[..],
            "prompts[{p}]: ids differ"
        );
        assert_eq!(
            tok.decode(&ids).expect("decode"),
            text,
            "prompts[{p}]: decode"
        );
        let decoded_prefix = tok.decode(&want_ids).expect("decode");
        assert!(
            text.starts_with(&decoded_prefix),
            "prompts[{p}]: the cut ids decode to a prefix of the text"
        );
    }
}

#[test]
fn chat_markup_is_parsed_as_special_tokens() {
    let tok = smollm2_tokenizer();
    let ids = tok
        .encode("<|im_start|>user\nHi<|im_end|>")
        .expect("encode");
    let first = ids[0];
    let last = *ids.last().expect("non-empty");
    assert_eq!(tok.token_str(first), Some("<|im_start|>"));
    assert_eq!(tok.token_str(last), Some("<|im_end|>"));
    assert!(tok.is_special(first) && tok.is_special(last));
    assert!(!tok.is_special(ids[1]), "`user` is an ordinary token");
    // The GGUF's EOS is <|im_end|> for the instruct model (id 2).
    assert_eq!(tok.eos_token_id(), Some(2));
    assert_eq!(tok.token_str(2), Some("<|im_end|>"));
    assert_eq!(tok.vocab_size(), 49152);
}

#[test]
fn no_bos_is_added_and_empty_text_is_empty() {
    let tok = smollm2_tokenizer();
    assert_eq!(tok.encode("").expect("encode"), Vec::<u32>::new());
    let ids = tok.encode("Hello").expect("encode");
    assert_eq!(
        ids.len(),
        1,
        "`Hello` is one token and nothing is prepended"
    );
}

#[test]
fn digits_are_split_one_by_one() {
    let tok = smollm2_tokenizer();
    let ids = tok.encode("12345").expect("encode");
    let tokens: Vec<&str> = ids.iter().filter_map(|&id| tok.token_str(id)).collect();
    assert_eq!(tokens, ["1", "2", "3", "4", "5"]);
}

#[test]
fn decode_rejects_ids_outside_the_vocabulary() {
    let tok = smollm2_tokenizer();
    let err = tok
        .decode(&[1, 49152])
        .expect_err("id 49152 is out of range");
    assert!(err.to_string().contains("49152"), "{err}");
}

#[test]
fn streaming_decode_waits_for_whole_characters() {
    let tok = smollm2_tokenizer();
    let text = "稀疏 🦀 café";
    let ids = tok.encode(text).expect("encode");
    let pieces = stream_pieces(tok, &ids).expect("step");
    for piece in &pieces {
        assert!(!piece.contains('\u{FFFD}'), "no half characters: {piece:?}");
    }
    assert_eq!(pieces.concat(), text);
}
