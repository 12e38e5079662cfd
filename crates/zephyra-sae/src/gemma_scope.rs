//! Gemma Scope and Gemma Scope 2 JumpReLU SAEs (Lieberum et al. 2024, "Gemma Scope: Open Sparse
//! Autoencoders Everywhere All At Once on Gemma 2"; Rajamanoharan et al. 2024, "Jumping Ahead: Improving
//! Reconstruction Fidelity with JumpReLU Sparse Autoencoders"), in and out.
//!
//! # Layout
//! `params.safetensors` (float32; `params.npz` of Gemma Scope 1 holds the same arrays):
//! `w_enc` `[d_model, d_sae]`, `w_dec` `[d_sae, d_model]`, `b_enc` `[d_sae]`, `b_dec` `[d_model]`,
//! `threshold` `[d_sae]`. Codes are `f = z·H(z − θ)` with `z = x w_enc + b_enc`: the input is used as is
//! (no `b_dec` subtracted, SAELens' `apply_b_dec_to_input: false`) and not normalised.
//!
//! Gemma Scope 2 folders also hold a `config.json`: `architecture` (`jump_relu`), `model_name`
//! (`google/gemma-3-270m-pt`), `hf_hook_point_in` (`model.layers.6.output`), and for transcoders
//! `hf_hook_point_out` and `affine_connection` (refused here: a transcoder is not an SAE).
//!
//! # Mapping
//! Reading gives a [`crate::Architecture::JumpRelu`] SAE with `apply_b_dec_to_input = false`, the hook
//! named by the caller or derived from `hf_hook_point_in` ([`hook_from_hf`]), and the whole `config.json`
//! kept in `metadata.gemma_scope_config` so that [`write`] gives it back unchanged.
//!
//! Writing takes jumprelu SAEs as they are; batchtopk SAEs too (their inference rule is the same
//! `f = z·H(z − θ)`, exactly); relu SAEs with threshold 0, which is exactly `ReLU` (`z·H(z − 0) = max(z, 0)`).
//! An SAE that subtracts `b_dec` from its input has it folded into the encoder bias,
//! `b_enc' = b_enc − b_dec W_enc` (accumulated in f64): the same function up to float rounding. TopK and
//! gated SAEs are refused: no threshold reproduces them.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::sae::{Architecture, Sae, SaeConfig, SaeMetadata};
use crate::saelens::{read_f32_tensors, take_tensor, write_f32_tensors, NamedTensors};
use crate::{Result, SaeError};
use zephyra_io::write_atomic;

/// The weights file name.
pub const PARAMS_FILE: &str = "params.safetensors";
/// The optional configuration file name (Gemma Scope 2).
pub const CONFIG_FILE: &str = "config.json";
/// `metadata` key holding the original `config.json` object.
pub const CONFIG_KEY: &str = "gemma_scope_config";

const TENSORS: [&str; 5] = ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"];

fn format_err(path: &Path, message: impl Into<String>) -> SaeError {
    SaeError::format(path, message, None)
}

/// What [`read`] takes besides the weights file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// `config.json` (`None`: the one beside the weights file, if any).
    pub config: Option<std::path::PathBuf>,
    /// TransformerLens hook name (`None`: from the config's `hf_hook_point_in`).
    pub hook_name: Option<String>,
    /// Model name recorded in the SAE (`None`: the config's `model_name`).
    pub model_name: Option<String>,
}

/// The TransformerLens hook of a Hugging Face module path as Gemma Scope 2 names it:
/// `model.layers.N.output` → `blocks.N.hook_resid_post`, `…post_feedforward_layernorm.output` →
/// `blocks.N.hook_mlp_out`, `…post_attention_layernorm.output` → `blocks.N.hook_attn_out` (the hooks
/// Zephyra's models expose; `self_attn.o_proj.input`, TransformerLens' `attn.hook_z`, has none).
pub fn hook_from_hf(hf: &str) -> Option<String> {
    let (layer, tail) = split_layer(hf, "model.layers.")?;
    let (hook, _) = HOOKS.iter().find(|(_, m)| *m == tail)?;
    Some(format!("blocks.{layer}.{hook}"))
}

/// The inverse of [`hook_from_hf`].
pub fn hf_from_hook(hook: &str) -> Option<String> {
    let (layer, tail) = split_layer(hook, "blocks.")?;
    let (_, module) = HOOKS.iter().find(|(h, _)| *h == tail)?;
    Some(format!("model.layers.{layer}.{module}"))
}

/// (TransformerLens hook, Hugging Face module) suffixes after the layer number.
const HOOKS: [(&str, &str); 3] = [
    ("hook_resid_post", "output"),
    ("hook_mlp_out", "post_feedforward_layernorm.output"),
    ("hook_attn_out", "post_attention_layernorm.output"),
];

/// `prefix N.tail` → `(N, tail)`.
fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (layer, tail) = name.strip_prefix(prefix)?.split_once('.')?;
    Some((layer.parse().ok()?, tail))
}

fn read_config(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|source| SaeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format_err(path, format!("invalid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(format_err(path, "config.json must be a JSON object"));
    };
    if let Some(arch) = obj.get("architecture") {
        if arch.as_str() != Some("jump_relu") {
            return Err(format_err(
                path,
                format!("`architecture: {arch}` is not a Gemma Scope SAE: only `jump_relu` is supported"),
            ));
        }
    }
    if obj.contains_key("hf_hook_point_out") || obj.contains_key("affine_connection") {
        return Err(format_err(
            path,
            "this is a transcoder (it has `hf_hook_point_out`/`affine_connection`), not an SAE: only \
             Gemma Scope SAEs (resid_post, mlp_out, attn_out) can be converted",
        ));
    }
    Ok(obj)
}

/// Takes tensor `name` from `tensors`, checking its shape.
fn take(tensors: &mut NamedTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    take_tensor(tensors, path, "Gemma Scope jumprelu", name, shape)
}

/// Reads a Gemma Scope `params.safetensors` (and its `config.json`) as a jumprelu [`Sae`].
pub fn read(params: &Path, opts: &ReadOptions) -> Result<Sae> {
    let config_path = match &opts.config {
        Some(p) => Some(p.clone()),
        None => params
            .parent()
            .map(|d| d.join(CONFIG_FILE))
            .filter(|p| p.is_file()),
    };
    let config = config_path.as_deref().map(read_config).transpose()?;
    let mut tensors = read_f32_tensors(params)?;
    let (d_in, d_sae) = match tensors.get("w_enc") {
        Some((shape, _)) if shape.len() == 2 => (shape[0], shape[1]),
        Some((shape, _)) => {
            return Err(format_err(
                params,
                format!("tensor w_enc has shape {shape:?}: expected [d_model, d_sae]"),
            ))
        }
        None => {
            return Err(SaeError::MissingTensor {
                path: params.to_path_buf(),
                name: "w_enc".into(),
                architecture: "Gemma Scope jumprelu".into(),
            })
        }
    };
    let w_enc = take(&mut tensors, params, "w_enc", &[d_in, d_sae])?;
    let w_dec = take(&mut tensors, params, "w_dec", &[d_sae, d_in])?;
    let b_enc = take(&mut tensors, params, "b_enc", &[d_sae])?;
    let b_dec = take(&mut tensors, params, "b_dec", &[d_in])?;
    let threshold = take(&mut tensors, params, "threshold", &[d_sae])?;
    if let Some(extra) = tensors.keys().next() {
        return Err(format_err(
            params,
            format!(
                "unexpected tensor `{extra}`: a Gemma Scope SAE holds exactly {TENSORS:?} (a transcoder or \
                 another format?)"
            ),
        ));
    }
    for (name, v) in [
        ("w_enc", &w_enc),
        ("w_dec", &w_dec),
        ("b_enc", &b_enc),
        ("b_dec", &b_dec),
        ("threshold", &threshold),
    ] {
        if let Some(p) = v.iter().position(|x| !x.is_finite()) {
            return Err(format_err(
                params,
                format!("tensor {name} holds a non-finite value at index {p}"),
            ));
        }
    }
    if let Some((i, t)) = threshold
        .iter()
        .enumerate()
        .find(|(_, t)| t.is_nan() || **t < 0.0)
    {
        return Err(format_err(
            params,
            format!("threshold[{i}] = {t}: a JumpReLU threshold must be a number ≥ 0"),
        ));
    }
    let config_str = |key: &str| {
        config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let hook_name = match (&opts.hook_name, config_str("hf_hook_point_in")) {
        (Some(h), _) => h.clone(),
        (None, Some(hf)) => hook_from_hf(&hf).ok_or_else(|| {
            format_err(
                params,
                format!("config.json's hf_hook_point_in `{hf}` has no known hook: pass --hook"),
            )
        })?,
        (None, None) => {
            return Err(format_err(
                params,
                "no hook: there is no config.json with `hf_hook_point_in` beside it; pass --hook (e.g. \
                 blocks.6.hook_resid_post)",
            ))
        }
    };
    let model_name = opts.model_name.clone().or_else(|| config_str("model_name"));
    let mut extra = Map::new();
    extra.insert("converted_from".into(), json!("gemma-scope"));
    if let Some(c) = config {
        extra.insert(CONFIG_KEY.into(), Value::Object(c));
    }
    let cfg = SaeConfig {
        d_in,
        d_sae,
        architecture: Architecture::JumpRelu,
        apply_b_dec_to_input: false,
        normalization_factor: None,
        transcoder: None,
        metadata: SaeMetadata {
            model_name,
            hook_name: Some(hook_name),
            context_size: None,
            hook_name_out: None,
            extra,
        },
    };
    let mut sae = Sae::zeros(cfg)?;
    (sae.w_enc, sae.w_dec, sae.b_enc, sae.b_dec, sae.threshold) =
        (w_enc, w_dec, b_enc, b_dec, threshold);
    tracing::info!(path = %params.display(), d_in, d_sae, "read Gemma Scope SAE");
    Ok(sae)
}

/// The encoder bias with `b_dec` folded in when the SAE subtracts it from its input.
fn folded_b_enc(sae: &Sae) -> Vec<f32> {
    if !sae.cfg.apply_b_dec_to_input {
        return sae.b_enc.clone();
    }
    let d_sae = sae.cfg.d_sae;
    let mut acc: Vec<f64> = sae.b_enc.iter().map(|&b| f64::from(b)).collect();
    for (row, &b) in sae.w_enc.chunks_exact(d_sae).zip(&sae.b_dec) {
        for (a, &w) in acc.iter_mut().zip(row) {
            *a -= f64::from(b) * f64::from(w);
        }
    }
    acc.into_iter().map(|a| a as f32).collect()
}

/// Writes `sae` into folder `dir` as Gemma Scope files: `params.safetensors` and `config.json`.
pub fn write(sae: &Sae, dir: &Path) -> Result<()> {
    sae.check_shapes()?;
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let threshold =
        match sae.cfg.architecture {
            Architecture::JumpRelu
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. } => sae.threshold.clone(),
            Architecture::Relu | Architecture::ReluUnit => vec![0.0; d_sae],
            other => return Err(SaeError::invalid(
                "architecture",
                other,
                "a topk or gated SAE cannot be written as Gemma Scope (JumpReLU): no threshold \
                 reproduces it; keep it in the SAELens layout",
            )),
        };
    let b_enc = folded_b_enc(sae);
    if sae.cfg.apply_b_dec_to_input {
        tracing::warn!(
            "the SAE subtracts b_dec from its input and Gemma Scope does not: folded it into b_enc \
             (the same codes up to float rounding)"
        );
    }
    write_f32_tensors(
        &dir.join(PARAMS_FILE),
        &[
            ("w_enc", vec![d_in, d_sae], &sae.w_enc),
            ("w_dec", vec![d_sae, d_in], &sae.w_dec),
            ("b_enc", vec![d_sae], &b_enc),
            ("b_dec", vec![d_in], &sae.b_dec),
            ("threshold", vec![d_sae], &threshold),
        ],
    )?;
    let meta = &sae.cfg.metadata;
    let config = match meta.extra.get(CONFIG_KEY) {
        Some(Value::Object(c)) => c.clone(),
        _ => {
            let mut c = Map::new();
            c.insert("architecture".into(), json!("jump_relu"));
            if let Some(m) = &meta.model_name {
                c.insert("model_name".into(), json!(m));
            }
            if let Some(hf) = meta.hook_name.as_deref().and_then(hf_from_hook) {
                c.insert("hf_hook_point_in".into(), json!(hf));
            }
            c
        }
    };
    let path = dir.join(CONFIG_FILE);
    let bytes = serde_json::to_vec_pretty(&Value::Object(config))
        .map_err(|e| format_err(&path, e.to_string()))?;
    write_atomic(&path, &bytes)?;
    tracing::info!(dir = %dir.display(), d_in, d_sae, "wrote Gemma Scope SAE");
    Ok(())
}
