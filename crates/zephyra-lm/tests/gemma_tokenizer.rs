//! The Gemma 3 tokenizer rebuilt from the GGUF metadata against Hugging Face's ids for every text of
//! `testdata/gemma3/tokens.json` (chat markers, whitespace runs, byte fallback, CJK, emoji).

mod gemma_common;

use std::sync::OnceLock;

use gemma_common::{gemma_path, reference};
use zephyra_lm::testing::stream_pieces;
use zephyra_lm::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_gguf(gemma_path()).expect("Gemma tokenizer"))
}

#[test]
fn every_reference_text_encodes_to_hf_ids_and_round_trips() {
    let tok = tokenizer();
    let reference = reference();
    assert!(reference.texts.len() >= 14);
    for t in &reference.texts {
        let ids = tok.encode(&t.text).expect("encode");
        assert_eq!(ids, t.ids, "text {:?}", t.text);
        assert_eq!(tok.decode(&ids).expect("decode"), t.text);
        // HF's decode keeps the BOS it added.
        assert_eq!(t.decoded, format!("<bos>{}", t.text));
    }
    // The reference cut its prompts at 96 (or 700) tokens: their ids are a prefix of the text's.
    for p in &reference.prompts {
        let ids = tok.encode(&p.text).expect("encode");
        assert!(ids.len() >= p.ids.len(), "prompt {:?}", p.text);
        assert_eq!(ids[..p.ids.len()], p.ids, "prompt {:?}", p.text);
    }
    let greedy = &reference.greedy;
    let prompt = tok.encode(&greedy.prompt).expect("encode");
    assert_eq!(prompt, greedy.ids[..prompt.len()]);
    let continuation = tok.decode(&greedy.ids[prompt.len()..]).expect("decode");
    assert_eq!(continuation, greedy.text);
}

#[test]
fn special_tokens_bos_and_whitespace_runs() {
    let tok = tokenizer();
    assert_eq!(tok.adds_bos(), Some(2));
    assert_eq!(tok.bos_token_id(), Some(2));
    assert_eq!(tok.eos_token_id(), Some(1));
    assert_eq!(tok.vocab_size(), 262_144);
    // <start_of_turn> (105) and <end_of_turn> (106) are one special token each.
    let ids = tok
        .encode("<start_of_turn>model\nHi<end_of_turn>")
        .expect("encode");
    assert_eq!(ids[..2], [2, 105]);
    assert_eq!(ids.last(), Some(&106));
    assert!(tok.is_special(105) && tok.is_special(106) && !tok.is_special(107));
    // Runs of newlines and spaces are single tokens: "\n\n" = 108, three spaces = 139.
    assert_eq!(tok.encode("\n\n").expect("encode"), [2, 108]);
    assert_eq!(tok.encode("   ").expect("encode"), [2, 139]);
    // An empty text is just BOS, and decodes back to nothing.
    assert_eq!(tok.encode("").expect("encode"), [2]);
    assert_eq!(tok.decode(&[2]).expect("decode"), "");
    // A BOS that is not first is text like any special token.
    assert_eq!(tok.decode(&[2, 2]).expect("decode"), "<bos>");
}

#[test]
fn streaming_decode_matches_whole_decode() {
    let tok = tokenizer();
    let text = "tabs\tand  double  spaces, ✓ 𝔽 日本語";
    let ids = tok.encode(text).expect("encode");
    let pieces = stream_pieces(tok, &ids[1..]).expect("step");
    assert_eq!(pieces.concat(), text);
}
