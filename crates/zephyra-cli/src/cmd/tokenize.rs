//! `zephyra tokenize`: print the token ids and byte-level token strings of a text.
//!
//! Output (stdout, one JSON object): `{"ids": [u32, ...], "tokens": ["Hello", "Ġworld", ...]}`.
//! Also home of [`TextInput`], the `--text` / `--file` pair shared by the LM commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::fetch_model::{self, ModelSpec};
use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `smollm2` (downloaded on first use) or the path of a llama.cpp .gguf file.
    #[arg(long, default_value = "smollm2")]
    model: ModelSpec,
    #[command(flatten)]
    input: TextInput,
}

/// A text given inline (`--text`) or as a UTF-8 file (`--file`).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TextInput {
    /// The text.
    #[arg(long)]
    pub text: Option<String>,
    /// A UTF-8 file holding the text.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

impl TextInput {
    /// The text, refusing empty input and files that are not UTF-8.
    pub fn read(&self) -> anyhow::Result<String> {
        let text = match (&self.text, &self.file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => {
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                String::from_utf8(bytes).map_err(|err| {
                    anyhow::anyhow!(
                        "{} is not UTF-8 text (invalid byte at offset {}); convert it, e.g. `iconv -t UTF-8`",
                        path.display(),
                        err.utf8_error().valid_up_to()
                    )
                })?
            }
            (None, None) => anyhow::bail!("give the text with --text or --file"),
        };
        if text.is_empty() {
            anyhow::bail!("the text is empty; give at least one character with --text or --file");
        }
        Ok(text)
    }
}

#[derive(serde::Serialize)]
struct Tokens<'a> {
    ids: &'a [u32],
    tokens: Vec<&'a str>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let text = args.input.read()?;
    let path = fetch_model::resolve(&args.model, global)?;
    let tokenizer = fetch_model::load_tokenizer(&path)?;
    let ids = tokenizer.encode(&text).context("tokenizing the text")?;
    let tokens = ids
        .iter()
        .map(|&id| tokenizer.token_str(id).unwrap_or(""))
        .collect();
    let out = Tokens { ids: &ids, tokens };
    println!("{}", serde_json::to_string(&out)?);
    Ok(ExitCode::SUCCESS)
}
