//! `zephyra inspect`: a model's architecture, sizes, tensor count and hook points.
//!
//! Reads only the GGUF header (no weights are dequantized), so it is instant. With `--json` it prints
//! one JSON object: the fields of the text report plus `"hook_points": ["blocks.0.hook_resid_pre", ...]`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use zephyra_lm::gguf;
use zephyra_lm::HookPoint;

use super::Global;
use crate::args::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    path: String,
    file_bytes: u64,
    architecture: String,
    name: Option<String>,
    n_layers: usize,
    d_model: usize,
    d_mlp: usize,
    n_heads: usize,
    n_kv_heads: usize,
    d_head: usize,
    vocab_size: usize,
    context_length: usize,
    rope_theta: f32,
    rms_norm_eps: f32,
    tied_embeddings: bool,
    n_tensors: usize,
    n_params: u64,
    hook_points: Vec<String>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let path = args.model.model.resolve(global)?;
    let (content, file) =
        gguf::read_content(&path).with_context(|| format!("inspecting {}", path.display()))?;
    let cfg = gguf::read_config(&path, &content)?;
    let file_bytes = file
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    let data_end = tensor_data_end(&content);
    if file_bytes < data_end {
        anyhow::bail!(
            "{} is truncated: its header describes {data_end} bytes of tensors but the file holds {file_bytes}; download it again (`zephyra fetch-model`)",
            path.display()
        );
    }
    let n_params: u64 = content
        .tensor_infos
        .values()
        .map(|info| info.shape.elem_count() as u64)
        .sum();
    let report = Report {
        path: path.display().to_string(),
        file_bytes,
        architecture: cfg.architecture.clone(),
        name: cfg.name.clone(),
        n_layers: cfg.n_layers,
        d_model: cfg.d_model,
        d_mlp: cfg.d_mlp,
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        d_head: cfg.d_head,
        vocab_size: cfg.vocab_size,
        context_length: cfg.context_length,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        tied_embeddings: cfg.tied_embeddings,
        n_tensors: content.tensor_infos.len(),
        n_params,
        hook_points: HookPoint::all(cfg.n_layers)
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    if args.json {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string(&report)?
        )?;
    } else {
        print_text(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the last tensor's data ends, by the header: the least size of a complete file.
fn tensor_data_end(content: &candle_core::quantized::gguf_file::Content) -> u64 {
    content
        .tensor_infos
        .values()
        .map(|t| {
            let blocks = t.shape.elem_count() / t.ggml_dtype.block_size().max(1);
            let bytes = (blocks as u64).saturating_mul(t.ggml_dtype.type_size() as u64);
            content
                .tensor_data_offset
                .saturating_add(t.offset)
                .saturating_add(bytes)
        })
        .max()
        .unwrap_or(content.tensor_data_offset)
}

fn print_text(r: &Report) -> std::io::Result<()> {
    let mut rows = vec![(
        "file",
        format!("{} ({:.1} MB)", r.path, r.file_bytes as f64 / 1e6),
    )];
    if let Some(name) = &r.name {
        rows.push(("name", name.clone()));
    }
    let embeddings = if r.tied_embeddings {
        "tied"
    } else {
        "separate"
    };
    rows.extend([
        ("architecture", r.architecture.clone()),
        ("blocks", r.n_layers.to_string()),
        ("d_model", r.d_model.to_string()),
        ("d_mlp", r.d_mlp.to_string()),
        (
            "attention",
            format!(
                "{} heads, {} KV heads, head_dim {}",
                r.n_heads, r.n_kv_heads, r.d_head
            ),
        ),
        ("vocab", r.vocab_size.to_string()),
        ("context", r.context_length.to_string()),
        ("rope theta", r.rope_theta.to_string()),
        ("rms norm eps", format!("{:e}", r.rms_norm_eps)),
        ("embeddings", embeddings.to_string()),
        ("tensors", r.n_tensors.to_string()),
        (
            "parameters",
            format!("{} ({:.1} M)", r.n_params, r.n_params as f64 / 1e6),
        ),
        ("hook points", r.hook_points.len().to_string()),
    ]);
    let mut out = std::io::stdout().lock();
    for (label, value) in rows {
        writeln!(out, "{label:<15} {value}")?;
    }
    for hook in &r.hook_points {
        writeln!(out, "  {hook}")?;
    }
    Ok(())
}
