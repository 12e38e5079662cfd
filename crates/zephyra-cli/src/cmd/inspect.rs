//! `zephyra inspect`: a model's architecture, sizes, tensor count and hook points.
//!
//! Reads only the GGUF header (no weights are dequantized), so it is instant. With `--json` it prints
//! one JSON object: the fields of the text report plus `"hook_points": ["blocks.0.hook_resid_pre", ...]`.

use std::process::ExitCode;

use anyhow::Context;
use zephyra_lm::gguf;
use zephyra_lm::HookPoint;

use super::fetch_model::{self, ModelSpec};
use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `smollm2` (downloaded on first use) or the path of a llama.cpp .gguf file.
    #[arg(long, default_value = "smollm2")]
    model: ModelSpec,
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
    let path = fetch_model::resolve(&args.model, global)?;
    let (content, file) =
        gguf::read_content(&path).with_context(|| format!("inspecting {}", path.display()))?;
    let cfg = gguf::read_config(&path, &content)?;
    let file_bytes = file
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
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
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(r: &Report) {
    println!(
        "file            {} ({:.1} MB)",
        r.path,
        r.file_bytes as f64 / 1e6
    );
    if let Some(name) = &r.name {
        println!("name            {name}");
    }
    println!("architecture    {}", r.architecture);
    println!("blocks          {}", r.n_layers);
    println!("d_model         {}", r.d_model);
    println!("d_mlp           {}", r.d_mlp);
    println!(
        "attention       {} heads, {} KV heads, head_dim {}",
        r.n_heads, r.n_kv_heads, r.d_head
    );
    println!("vocab           {}", r.vocab_size);
    println!("context         {}", r.context_length);
    println!("rope theta      {}", r.rope_theta);
    println!("rms norm eps    {:e}", r.rms_norm_eps);
    println!(
        "embeddings      {}",
        if r.tied_embeddings {
            "tied"
        } else {
            "separate"
        }
    );
    println!("tensors         {}", r.n_tensors);
    println!(
        "parameters      {} ({:.1} M)",
        r.n_params,
        r.n_params as f64 / 1e6
    );
    println!("hook points     {}", r.hook_points.len());
    for hook in &r.hook_points {
        println!("  {hook}");
    }
}
