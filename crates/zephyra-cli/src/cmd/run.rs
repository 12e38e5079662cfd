//! `zephyra run`: run the model over a text and save the activations at hook points.
//!
//! `--out X.safetensors` holds one float32 tensor `[n_tokens, d_model]` per hook, named by the hook
//! (`blocks.15.hook_resid_pre`), plus `token_ids` (int64 `[n_tokens]`); the file's metadata records the
//! model path and the hook names. `--out X.npy` holds one float32 array `[n_tokens, d_model]` and takes
//! exactly one `--hook`. Files are written atomically (temp file in the same directory, then rename).
//! stdout gets one line per saved tensor: `name [n_tokens, d_model]`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Hooks};

use super::Global;
use crate::args::ModelText;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    src: ModelText,
    /// Hook point to save, e.g. `blocks.15.hook_resid_pre` (repeatable); `zephyra inspect` lists them.
    #[arg(long = "hook", required = true, value_name = "HOOK")]
    hooks: Vec<HookPoint>,
    /// Output file: `.safetensors` (any number of hooks) or `.npy` (one hook).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

/// The output formats, chosen by the extension of `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutFormat {
    Safetensors,
    Npy,
}

impl OutFormat {
    fn from_path(path: &Path) -> anyhow::Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(OutFormat::Safetensors),
            Some("npy") => Ok(OutFormat::Npy),
            _ => anyhow::bail!(
                "--out {}: unknown format; use a `.safetensors` or `.npy` file name",
                path.display()
            ),
        }
    }
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let format = OutFormat::from_path(&args.out)?;
    let mut hooks = args.hooks.clone();
    hooks.sort_by_key(|h| h.depth());
    hooks.dedup();
    if format == OutFormat::Npy && hooks.len() != 1 {
        anyhow::bail!(
            "--out {}: a .npy file holds one array but {} hooks were given; give one --hook or write .safetensors",
            args.out.display(),
            hooks.len()
        );
    }
    let text = args.src.input.read()?;

    let model = args.src.model.load(global)?;
    let n_layers = model.llama.config().n_layers;
    for hook in &hooks {
        hook.validate(n_layers)?;
    }
    let ids = model
        .tokenizer
        .encode(&text)
        .context("tokenizing the text")?;
    if ids.is_empty() {
        anyhow::bail!("the text has no tokens");
    }
    tracing::info!(
        n_tokens = ids.len(),
        n_hooks = hooks.len(),
        "running the model"
    );
    let mut capture = Hooks::capturing(hooks.iter().copied());
    let out = model
        .llama
        .forward(&[ids.as_slice()], &mut capture, Logits::None)
        .context("running the model")?;

    let d_model = model.llama.config().d_model;
    let mut arrays: Vec<(String, Vec<f32>)> = Vec::with_capacity(hooks.len());
    for hook in &hooks {
        let tensor = out
            .activations
            .get(*hook)
            .with_context(|| format!("the forward pass did not capture {hook}"))?;
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        anyhow::ensure!(
            values.len() == ids.len() * d_model,
            "{hook}: captured {} values, expected {} × {d_model}",
            values.len(),
            ids.len()
        );
        arrays.push((hook.to_string(), values));
    }

    match format {
        OutFormat::Npy => zephyra_sae::npy::write_f32_matrix(&args.out, &arrays[0].1, d_model)
            .with_context(|| format!("writing --out {}", args.out.display()))?,
        OutFormat::Safetensors => {
            let mut metadata = HashMap::new();
            metadata.insert("model".to_string(), model.path.display().to_string());
            metadata.insert(
                "hooks".to_string(),
                arrays
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            write_safetensors(&args.out, &arrays, &ids, d_model, metadata)?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    for (name, _) in &arrays {
        writeln!(stdout, "{name} [{}, {d_model}]", ids.len())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn write_safetensors(
    path: &Path,
    arrays: &[(String, Vec<f32>)],
    ids: &[u32],
    d_model: usize,
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let n_tokens = ids.len();
    let buffers: Vec<(String, Vec<u8>)> = arrays
        .iter()
        .map(|(name, values)| (name.clone(), f32_bytes(values)))
        .collect();
    let id_bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| i64::from(id).to_le_bytes())
        .collect();
    let mut views = Vec::with_capacity(buffers.len() + 1);
    for (name, bytes) in &buffers {
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, vec![n_tokens, d_model], bytes)?,
        ));
    }
    views.push((
        "token_ids".to_string(),
        TensorView::new(Dtype::I64, vec![n_tokens], &id_bytes)?,
    ));
    let bytes = safetensors::tensor::serialize(views, Some(metadata))?;
    zephyra_io::write_atomic(path, &bytes)
        .with_context(|| format!("writing --out {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_format_follows_the_extension() {
        assert_eq!(
            OutFormat::from_path(Path::new("a.npy")).expect("npy"),
            OutFormat::Npy
        );
        assert_eq!(
            OutFormat::from_path(Path::new("x/a.safetensors")).expect("st"),
            OutFormat::Safetensors
        );
        assert!(OutFormat::from_path(Path::new("a.pt")).is_err());
    }
}
