//! BPE tokenizers rebuilt from a GGUF file's `tokenizer.ggml.*` metadata: byte-level (`gpt2`, SmolLM2;
//! described here) and SentencePiece-style (`llama`, Gemma; see `spm.rs`).
//!
//! llama.cpp stores the Hugging Face tokenizer of a model as plain metadata: the vocabulary
//! (`tokenizer.ggml.tokens`, byte-level strings such as `Ġquick`), the merge rules
//! (`tokenizer.ggml.merges`, `"Ġ q"`), a type per token (`tokenizer.ggml.token_type`, 3 = control) and a
//! pre-tokenizer name (`tokenizer.ggml.pre`). [`Tokenizer`] turns that back into a `tokenizers` pipeline:
//!
//! - model: BPE over the vocabulary and merges, no unknown token, no byte fallback;
//! - pre-tokenizer for `smollm` (and other GPT-2 style vocabularies): digits split one by one, then the
//!   GPT-2 byte-level split (`add_prefix_space = false`);
//! - control tokens (type 3) registered as special tokens, so `<|im_start|>` written in a text is parsed
//!   as one token;
//! - no BOS/EOS added (SmolLM2 says `add_bos_token = false`);
//! - byte-level decoder, so `decode(encode(text)) == text`.
//!
//! The result reproduces Hugging Face's `tokenizer.json` for SmolLM2 token for token (see the tests
//! against `testdata/smollm2/tokens.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
};

use crate::error::LmError;

/// `tokenizer.ggml.token_type` value of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// `tokenizer.ggml.token_type` value of user-defined tokens (added tokens that are not special).
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Pre-tokenizer names (`tokenizer.ggml.pre`) that use "individual digits, then the GPT-2 split".
const DIGITS_THEN_GPT2: &[&str] = &["smollm"];
/// Pre-tokenizer names that use the plain GPT-2 byte-level split.
const GPT2_ONLY: &[&str] = &["gpt2", "default"];

type Inner = tokenizers::TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A byte-level BPE tokenizer built from GGUF metadata.
///
/// ```no_run
/// # fn main() -> Result<(), zephyra_lm::LmError> {
/// let tok = zephyra_lm::Tokenizer::from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let ids = tok.encode("Hello world")?;
/// assert_eq!(tok.decode(&ids)?, "Hello world");
/// # Ok(()) }
/// ```
pub struct Tokenizer {
    inner: Inner,
    /// Byte-level string of every id (`Ġquick`), indexed by id.
    tokens: Vec<String>,
    /// Whether each id is a control (special) token.
    special: Vec<bool>,
    eos_token_id: Option<u32>,
    bos_token_id: Option<u32>,
    /// The BOS id that [`Tokenizer::encode`] puts first (`tokenizer.ggml.add_bos_token`).
    add_bos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("eos_token_id", &self.eos_token_id)
            .field("bos_token_id", &self.bos_token_id)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Reads the GGUF header of `path` and builds the tokenizer from its metadata.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self, LmError> {
        let path = path.as_ref();
        let (content, _file) = crate::gguf::read_content(path)?;
        Self::build(&content.metadata, path)
    }

    /// Builds the tokenizer from already-read GGUF metadata (`tokenizer.ggml.*` keys).
    pub fn from_gguf_metadata(
        metadata: &HashMap<String, gguf_file::Value>,
    ) -> Result<Self, LmError> {
        Self::build(metadata, Path::new("the GGUF metadata"))
    }

    fn build(metadata: &HashMap<String, gguf_file::Value>, path: &Path) -> Result<Self, LmError> {
        let meta = Metadata { metadata, path };
        let model_kind = meta.string("tokenizer.ggml.model")?;
        let sentencepiece = match model_kind {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(LmError::Tokenizer {
                    detail: format!(
                        "tokenizer.ggml.model is `{other}`; supported: byte-level BPE (`gpt2`) and \
                         SentencePiece-style BPE (`llama`)"
                    ),
                })
            }
        };
        let tokens = meta.string_array("tokenizer.ggml.tokens")?;
        let token_types = match metadata.get("tokenizer.ggml.token_type") {
            Some(value) => value
                .to_vec()
                .and_then(|values| {
                    values
                        .iter()
                        .map(|v| v.to_i32())
                        .collect::<Result<Vec<i32>, _>>()
                })
                .map_err(|err| meta.bad("tokenizer.ggml.token_type", err.to_string()))?,
            None => vec![1; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(meta.bad(
                "tokenizer.ggml.token_type",
                format!(
                    "it has {} entries but tokenizer.ggml.tokens has {}",
                    token_types.len(),
                    tokens.len()
                ),
            ));
        }
        let optional_id = |key: &str| -> Result<Option<u32>, LmError> {
            match metadata.get(key) {
                None => Ok(None),
                Some(value) => {
                    let id = value
                        .to_u32()
                        .map_err(|err| meta.bad(key, err.to_string()))?;
                    if id as usize >= tokens.len() {
                        return Err(meta.bad(
                            key,
                            format!("id {id} is outside the vocabulary of {}", tokens.len()),
                        ));
                    }
                    Ok(Some(id))
                }
            }
        };
        let eos_token_id = optional_id("tokenizer.ggml.eos_token_id")?;
        let bos_token_id = optional_id("tokenizer.ggml.bos_token_id")?;
        // llama.cpp's default: SentencePiece vocabularies add BOS, byte-level ones do not.
        let add_bos = match metadata.get("tokenizer.ggml.add_bos_token") {
            Some(value) => value
                .to_bool()
                .map_err(|err| meta.bad("tokenizer.ggml.add_bos_token", err.to_string()))?,
            None => sentencepiece,
        };
        let add_bos = match (add_bos, bos_token_id) {
            (false, _) => None,
            (true, Some(id)) => Some(id),
            (true, None) => {
                return Err(meta.bad(
                    "tokenizer.ggml.add_bos_token",
                    "it asks for a BOS token but tokenizer.ggml.bos_token_id is missing".into(),
                ))
            }
        };
        let mut inner = if sentencepiece {
            spm::pipeline(&meta, &tokens, &token_types)?
        } else {
            byte_level_pipeline(&meta, &tokens)?
        };

        let special: Vec<bool> = token_types
            .iter()
            .map(|&t| t == TOKEN_TYPE_CONTROL)
            .collect();
        let special_tokens: Vec<AddedToken> = tokens
            .iter()
            .zip(&special)
            .filter(|(_, &is_special)| is_special)
            .map(|(token, _)| AddedToken::from(token.clone(), true))
            .collect();
        let n_special = special_tokens.len();
        inner
            .add_special_tokens(special_tokens)
            .map_err(|err| LmError::Tokenizer {
                detail: format!("registering the control tokens: {err}"),
            })?;
        let user_tokens: Vec<AddedToken> = tokens
            .iter()
            .zip(&token_types)
            .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
            // SentencePiece user-defined pieces (whitespace runs) are matched in the raw text.
            .map(|(token, _)| AddedToken::from(token.clone(), false).normalized(!sentencepiece))
            .collect();
        inner
            .add_tokens(user_tokens)
            .map_err(|err| LmError::Tokenizer {
                detail: format!("registering the user-defined tokens: {err}"),
            })?;

        tracing::debug!(
            vocab_size = tokens.len(),
            n_special,
            sentencepiece,
            "tokenizer built from GGUF metadata"
        );
        Ok(Self {
            inner,
            add_bos,
            tokens,
            special,
            eos_token_id,
            bos_token_id,
        })
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become their ids. BOS
    /// comes first when the model asks for it ([`Self::adds_bos`]: Gemma yes, SmolLM2 no). An empty
    /// text gives an empty vector (or just BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LmError> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|err| LmError::Tokenizer {
                detail: err.to_string(),
            })?;
        Ok(self
            .add_bos
            .into_iter()
            .chain(encoding.get_ids().iter().copied())
            .collect())
    }

    /// The BOS id that [`Self::encode`] puts first, if it adds one.
    pub fn adds_bos(&self) -> Option<u32> {
        self.add_bos
    }

    /// The text of `ids`, special tokens included, except the BOS that [`Self::encode`] adds at the
    /// start (so `decode(encode(text)) == text`).
    ///
    /// Fails on an id outside the vocabulary. A sequence that ends in the middle of a multi-byte
    /// character decodes the incomplete bytes as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LmError> {
        self.check_ids(ids)?;
        let ids = match (self.add_bos, ids.split_first()) {
            (Some(bos), Some((&first, rest))) if first == bos => rest,
            _ => ids,
        };
        self.inner
            .decode(ids, false)
            .map_err(|err| LmError::Tokenizer {
                detail: err.to_string(),
            })
    }

    /// A decoder for generation: feed ids one at a time, get text as soon as it forms whole characters.
    pub fn decode_stream(&self) -> DecodeStream<'_> {
        DecodeStream {
            tokenizer: self,
            inner: self.inner.decode_stream(false),
        }
    }

    /// The byte-level string of a token (`Ġquick` for " quick"), or `None` outside the vocabulary.
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The end-of-sequence token, if the GGUF names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// The tokens that end generation: the end-of-sequence token, and `<|endoftext|>` (among the first
    /// 64 ids) where the vocabulary has it, since it ends a document in SmolLM2's pre-training data.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stop: Vec<u32> = self.eos_token_id.into_iter().collect();
        if let Some(id) = (0..self.vocab_size() as u32)
            .take(64)
            .find(|&id| self.token_str(id) == Some("<|endoftext|>"))
        {
            if !stop.contains(&id) {
                stop.push(id);
            }
        }
        stop
    }

    /// The beginning-of-sequence token, if the GGUF names one (it is never added by [`Self::encode`]).
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Whether `id` is a control token (`tokenizer.ggml.token_type` 3), e.g. `<|im_end|>`.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Number of tokens in the vocabulary (special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), LmError> {
        match ids.iter().find(|&&id| id as usize >= self.tokens.len()) {
            Some(&id) => Err(LmError::TokenOutOfRange {
                id,
                vocab_size: self.tokens.len(),
            }),
            None => Ok(()),
        }
    }
}

/// The byte-level BPE pipeline of a `gpt2` vocabulary: BPE over `tokenizer.ggml.merges`, the
/// pre-tokenizer named by `tokenizer.ggml.pre`, byte-level decoder.
fn byte_level_pipeline(meta: &Metadata<'_>, tokens: &[String]) -> Result<Inner, LmError> {
    let pre = match meta.metadata.get("tokenizer.ggml.pre") {
        Some(_) => meta.string("tokenizer.ggml.pre")?.to_string(),
        None => "default".to_string(),
    };
    let merges = meta.string_array("tokenizer.ggml.merges")?;
    let pre_tokenizer: PreTokenizerWrapper = if DIGITS_THEN_GPT2.contains(&pre.as_str()) {
        Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into()
    } else if GPT2_ONLY.contains(&pre.as_str()) {
        ByteLevel::new(false, true, true).into()
    } else {
        return Err(LmError::Tokenizer {
            detail: format!(
                "pre-tokenizer `{pre}` (tokenizer.ggml.pre) is not supported; supported: {}",
                DIGITS_THEN_GPT2
                    .iter()
                    .chain(GPT2_ONLY)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            merge
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    meta.bad(
                        "tokenizer.ggml.merges",
                        format!("merge {i} (`{merge}`) is not two tokens separated by a space"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges)
        .build()
        .map_err(|err| LmError::Tokenizer {
            detail: format!("building the BPE model: {err}"),
        })?;
    let mut inner = Inner::new(bpe.into());
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    Ok(inner)
}

/// Token string → id (a duplicated string keeps its first id).
fn vocab_of(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(id as u32);
    }
    vocab
}

/// Incremental decoder returned by [`Tokenizer::decode_stream`].
pub struct DecodeStream<'a> {
    tokenizer: &'a Tokenizer,
    inner: tokenizers::DecodeStream<
        'a,
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >,
}

impl DecodeStream<'_> {
    /// Adds one token; returns the new text once it forms complete characters (`None` while a
    /// multi-byte character is still incomplete).
    pub fn step(&mut self, id: u32) -> Result<Option<String>, LmError> {
        self.tokenizer.check_ids(&[id])?;
        self.inner.step(id).map_err(|err| LmError::Tokenizer {
            detail: err.to_string(),
        })
    }
}

/// GGUF metadata plus the file it came from (for error messages).
struct Metadata<'a> {
    metadata: &'a HashMap<String, gguf_file::Value>,
    path: &'a Path,
}

impl<'a> Metadata<'a> {
    fn get(&self, key: &str) -> Result<&'a gguf_file::Value, LmError> {
        self.metadata
            .get(key)
            .ok_or_else(|| LmError::MissingMetadata {
                path: self.path.to_path_buf(),
                key: key.to_string(),
            })
    }

    fn bad(&self, key: &str, detail: String) -> LmError {
        LmError::BadMetadata {
            path: PathBuf::from(self.path),
            key: key.to_string(),
            detail,
        }
    }

    fn string(&self, key: &str) -> Result<&'a str, LmError> {
        self.get(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|err| self.bad(key, err.to_string()))
    }

    fn string_array(&self, key: &str) -> Result<Vec<String>, LmError> {
        self.get(key)?
            .to_vec()
            .and_then(|values| values.iter().map(|v| v.to_string().cloned()).collect())
            .map_err(|err| self.bad(key, err.to_string()))
    }
}

mod spm;

#[cfg(test)]
mod tests {
    use super::*;
    use gguf_file::Value;

    /// A minimal byte-level vocabulary: the bytes of "ab 12<|x|>", two merges and one control token.
    fn fixture() -> HashMap<String, Value> {
        let tokens = ["<|x|>", "a", "b", "Ġ", "1", "2", "ab", "Ġab", "c"];
        let types = [3, 1, 1, 1, 1, 1, 1, 1, 1];
        let merges = ["a b", "Ġ ab"];
        let strings = |items: &[&str]| {
            Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
        };
        HashMap::from([
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".to_string(),
                Value::String("smollm".into()),
            ),
            ("tokenizer.ggml.tokens".to_string(), strings(&tokens)),
            ("tokenizer.ggml.merges".to_string(), strings(&merges)),
            (
                "tokenizer.ggml.token_type".to_string(),
                Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
            ),
            ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(0)),
        ])
    }

    #[test]
    fn merges_digits_and_special_tokens() {
        let tok = Tokenizer::from_gguf_metadata(&fixture()).expect("fixture builds");
        // "ab" merges, " ab" merges with the space, digits stay single, <|x|> is one special token.
        let ids = tok.encode("ab ab12<|x|>c").expect("encode");
        assert_eq!(ids, [6, 7, 4, 5, 0, 8]);
        assert_eq!(tok.decode(&ids).expect("decode"), "ab ab12<|x|>c");
        assert!(tok.is_special(0) && !tok.is_special(6));
        assert_eq!(tok.token_str(7), Some("Ġab"));
        assert_eq!(tok.token_str(9), None);
        assert_eq!(tok.eos_token_id(), Some(0));
        assert_eq!(tok.stop_tokens(), [0], "no `<|endoftext|>`: EOS alone");
        assert_eq!(tok.vocab_size(), 9);
    }

    #[test]
    fn tiny_llama_tokenizer_merges_bytes_and_parses_chat_markup() {
        use crate::testing::{tiny_llama, TINY_EOS_ID};
        let tiny = tiny_llama(1).expect("tiny model");
        let tok = Tokenizer::from_gguf(&tiny.path).expect("tokenizer from the tiny GGUF");
        let byte = |b: u8| 3 + u32::from(b);
        // `Ġ t` → `Ġt`, `h e` → `he`, `Ġt he` → `Ġthe` (ids 259.. follow the merges); the leading
        // `the` has no space, so only `h e` applies.
        let ids = tok.encode("the the").expect("encode");
        assert_eq!(ids, [byte(b't'), 260, 261]);
        assert_eq!(tok.token_str(261), Some("Ġthe"));
        // Control tokens are parsed out of the text; bytes of é (c3 a9) stay separate symbols.
        let ids = tok.encode("<|im_start|>hé<|im_end|>").expect("encode");
        assert_eq!(ids, [1, byte(b'h'), byte(0xc3), byte(0xa9), 2]);
        assert_eq!(
            tok.decode(&ids).expect("decode"),
            "<|im_start|>hé<|im_end|>"
        );
        assert!(tok.is_special(1) && !tok.is_special(byte(b'h')));
        assert_eq!(tok.eos_token_id(), Some(TINY_EOS_ID));
        // `<|endoftext|>` is id 0: generation stops at it as well as at EOS.
        assert_eq!(tok.stop_tokens(), [TINY_EOS_ID, 0]);
        assert_eq!(tok.vocab_size(), tiny.config.vocab_size);
        // Digits are split one by one even where a merge could join them (none here, but no crash).
        assert_eq!(tok.encode("42").expect("encode"), [byte(b'4'), byte(b'2')]);
    }

    /// The error of building from the fixture metadata with `changes` applied (`None` removes the key).
    fn refusal(changes: &[(&str, Option<Value>)]) -> LmError {
        let mut meta = fixture();
        for (key, value) in changes {
            match value {
                Some(v) => meta.insert(key.to_string(), v.clone()),
                None => meta.remove(*key),
            };
        }
        Tokenizer::from_gguf_metadata(&meta).expect_err("the changed metadata must be refused")
    }

    #[test]
    fn missing_tokens_key_is_named() {
        let err = refusal(&[("tokenizer.ggml.tokens", None)]);
        assert!(
            matches!(&err, LmError::MissingMetadata { key, .. } if key == "tokenizer.ggml.tokens")
        );
    }

    #[test]
    fn unknown_pre_tokenizer_is_refused() {
        let msg =
            refusal(&[("tokenizer.ggml.pre", Some(Value::String("qwen2".into())))]).to_string();
        assert!(msg.contains("qwen2") && msg.contains("smollm"), "{msg}");
    }

    #[test]
    fn unknown_tokenizer_model_is_refused() {
        let msg =
            refusal(&[("tokenizer.ggml.model", Some(Value::String("bert".into())))]).to_string();
        assert!(msg.contains("`bert`") && msg.contains("`llama`"), "{msg}");
    }

    #[test]
    fn sentencepiece_without_scores_is_refused() {
        let err = refusal(&[
            ("tokenizer.ggml.model", Some(Value::String("llama".into()))),
            ("tokenizer.ggml.add_bos_token", Some(Value::Bool(false))),
        ]);
        assert!(
            matches!(&err, LmError::MissingMetadata { key, .. } if key == "tokenizer.ggml.scores"),
            "{err}"
        );
    }

    #[test]
    fn token_type_length_mismatch_is_refused() {
        let types = Value::Array(vec![Value::I32(1)]);
        let err = refusal(&[("tokenizer.ggml.token_type", Some(types))]);
        assert!(
            matches!(&err, LmError::BadMetadata { key, .. } if key == "tokenizer.ggml.token_type")
        );
    }

    #[test]
    fn malformed_merge_is_refused() {
        let merges = Value::Array(vec![Value::String("ab".into())]);
        let err = refusal(&[("tokenizer.ggml.merges", Some(merges))]);
        assert!(err.to_string().contains("merge 0"), "{err}");
    }

    #[test]
    fn eos_outside_vocabulary_is_refused() {
        let err = refusal(&[("tokenizer.ggml.eos_token_id", Some(Value::U32(99)))]);
        assert!(err.to_string().contains("99"), "{err}");
    }

    #[test]
    fn from_gguf_refuses_a_text_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.gguf");
        std::fs::write(&path, "hello, not a model").expect("write");
        let err = Tokenizer::from_gguf(&path).expect_err("not GGUF");
        assert!(matches!(err, LmError::NotGguf { .. }), "{err}");
    }

    #[test]
    fn from_gguf_refuses_a_truncated_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cut.gguf");
        // Magic and version 3, then the file ends inside the tensor count.
        std::fs::write(&path, b"GGUF\x03\x00\x00\x00\x01\x00").expect("write");
        let err = Tokenizer::from_gguf(&path).expect_err("truncated");
        assert!(matches!(err, LmError::CorruptGguf { .. }), "{err}");
    }
}
