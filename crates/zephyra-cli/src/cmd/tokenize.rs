//! `zephyra tokenize`: print the token ids and byte-level token strings of a text.
//!
//! Output (stdout, one JSON object): `{"ids": [u32, ...], "tokens": ["Hello", "Ġworld", ...]}`.

use std::process::ExitCode;

use anyhow::Context;

use super::Global;
use crate::args::model::load_tokenizer;

/// `--model` and the text to tokenize.
pub type Args = crate::args::ModelText;

#[derive(serde::Serialize)]
struct Tokens<'a> {
    ids: &'a [u32],
    tokens: Vec<&'a str>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let text = args.input.read()?;
    let path = args.model.model.resolve(global)?;
    let tokenizer = load_tokenizer(&path)?;
    let ids = tokenizer.encode(&text).context("tokenizing the text")?;
    let tokens = ids
        .iter()
        .map(|&id| tokenizer.token_str(id).unwrap_or(""))
        .collect();
    let out = Tokens { ids: &ids, tokens };
    println!("{}", serde_json::to_string(&out)?);
    Ok(ExitCode::SUCCESS)
}
