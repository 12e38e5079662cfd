//! `--text` / `--file`: a text given inline or as a UTF-8 file.

use std::path::PathBuf;

use anyhow::Context;

use super::ModelArgs;

/// A model and a text for it (`--model` with `--text` / `--file`).
#[derive(Debug, clap::Args)]
pub struct ModelText {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: TextInput,
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
