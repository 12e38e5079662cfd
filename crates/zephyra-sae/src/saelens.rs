//! SAELens-compatible SAE folders: `cfg.json` + `sae_weights.safetensors` (SAELens 6 layout).
//!
//! Tensors (float32, row-major, SAELens names and orientation): `W_enc` `[d_in, d_sae]`, `W_dec`
//! `[d_sae, d_in]`, `b_enc` `[d_sae]` (not gated), `b_dec` `[d_in]`, `threshold` `[d_sae]` (jumprelu, and
//! batchtopk which is saved as a JumpReLU), gated: `b_gate`, `r_mag`, `b_mag` `[d_sae]`.
//!
//! `cfg.json` keys: `architecture` (`standard`, `topk`, `jumprelu`, `gated`), `d_in`, `d_sae`, `dtype`
//! (`float32`), `device`, `apply_b_dec_to_input`, `normalize_activations` (`none`: Zephyra folds its input
//! scaling into the weights), `reshape_activations`, `k` (topk, with `rescale_acts_by_decoder_norm:
//! false`; a topk or a Matryoshka training save read with `true`, SAELens' default, gets the decoder norms
//! folded in, same codes), and `metadata` (`sae_lens_version` and `sae_lens_training_version` as SAELens 6 writes them — without
//! them SAELens 6 drops the block —, `model_name`, `hook_name`, `context_size`, …). Zephyra's own architectures
//! are recorded in `metadata.zephyra_architecture` (`relu`, `relu-unit`, `batchtopk` with
//! `metadata.zephyra_k`) so they load back as themselves, while SAELens sees `standard`/`jumprelu`.
//! `matryoshka` is saved as SAELens' `save_inference_model` saves its Matryoshka BatchTopK: `jumprelu`, with
//! `metadata.training_architecture: matryoshka_batchtopk` and `k`, `matryoshka_widths` in
//! `metadata.training_architecture_details`; both that and SAELens' training save (`architecture:
//! matryoshka_batchtopk`, a scalar `topk_threshold` tensor) load as `matryoshka`.
//!
//! Transcoders ([`SaeConfig::transcoder`]) use SAELens 6.54's transcoder layout: `W_dec` `[d_sae, d_out]`,
//! `b_dec` `[d_out]`, `W_skip` `[d_out, d_in]` (skip transcoders), `d_out` in `cfg.json`, the output hook as
//! `metadata.hook_name_out`, `apply_b_dec_to_input: false`, and the architectures `transcoder`,
//! `skip_transcoder`, `jumprelu_transcoder`, `jumprelu_skip_transcoder` (relu/relu-unit, jumprelu and
//! batchtopk as for SAEs). TopK transcoders, which SAELens has no class for, are written in the same layout
//! with `k` under the names `topk_transcoder` / `topk_skip_transcoder` (SAELens refuses to load them).
//!
//! Both files are written atomically (temporary file in the same folder, then rename), the weights first.
//!
//! | module | holds |
//! | --- | --- |
//! | `tensors` | safetensors files of named tensors: [`write_f32_tensors`], [`read_f32_tensors`], [`write_raw_tensors`] |
//! | `cfg` | `cfg.json` to and from [`SaeConfig`]: [`cfg_json`], [`parse_cfg`] |
//! | this file | [`save`] and [`load`] of a whole SAE folder |

use std::path::Path;

use serde_json::Value;
use zephyra_io::write_atomic;

use crate::error::cause;
use crate::sae::{Architecture, Sae};
use crate::{Result, SaeError};

mod cfg;
mod tensors;

pub use cfg::{cfg_json, parse_cfg, MATRYOSHKA_SAELENS};
pub(crate) use tensors::take_tensor;
pub use tensors::{read_f32_tensors, write_f32_tensors, write_raw_tensors, NamedTensors};

/// The config file name.
pub const CFG_FILE: &str = "cfg.json";
/// The weights file name.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// The SAELens release whose file layout Zephyra writes (and checks against in
/// `tests/saelens_format.rs`), recorded as `metadata.sae_lens_version` and
/// `metadata.sae_lens_training_version`.
pub const SAELENS_VERSION: &str = "6.54.12";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SaeError + '_ {
    move |source| SaeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> SaeError {
    SaeError::format(path, message, None)
}

/// Saves `sae` into folder `dir` (created if needed) as SAELens files.
pub fn save(sae: &Sae, dir: &Path) -> Result<()> {
    sae.check_shapes()?;
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let mut tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("W_enc", vec![d_in, d_sae], &sae.w_enc),
        ("W_dec", vec![d_sae, d_out], &sae.w_dec),
        ("b_dec", vec![d_out], &sae.b_dec),
    ];
    if sae.cfg.has_skip() {
        tensors.push(("W_skip", vec![d_out, d_in], &sae.w_skip));
    }
    for (name, v) in [
        ("b_enc", &sae.b_enc),
        ("threshold", &sae.threshold),
        ("b_gate", &sae.b_gate),
        ("r_mag", &sae.r_mag),
        ("b_mag", &sae.b_mag),
    ] {
        if !v.is_empty() {
            tensors.push((name, vec![d_sae], v));
        }
    }
    write_f32_tensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    let cfg = serde_json::to_vec_pretty(&cfg_json(&sae.cfg))
        .map_err(|e| SaeError::format(&dir.join(CFG_FILE), "serialising", cause(e)))?;
    write_atomic(&dir.join(CFG_FILE), &cfg)?;
    tracing::info!(dir = %dir.display(), arch = sae.cfg.architecture.name(), d_in, d_sae, "saved SAE");
    Ok(())
}

/// Loads the SAE in folder `dir`.
pub fn load(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join(CFG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| SaeError::format(&cfg_path, "invalid JSON", cause(e)))?;
    let cfg = parse_cfg(&v, &cfg_path)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let mut tensors = read_f32_tensors(&weights_path)?;
    // The weights file bounds the sizes: a cfg.json promising more than it holds is refused before
    // anything of that size is allocated.
    let (d_in, d_sae, d_out) = (cfg.d_in, cfg.d_sae, cfg.d_out());
    for (name, shape) in [("W_enc", [d_in, d_sae]), ("W_dec", [d_sae, d_out])] {
        let (got, _) = tensors.get(name).ok_or_else(|| SaeError::MissingTensor {
            path: weights_path.clone(),
            name: name.to_string(),
            architecture: cfg.architecture.name().to_string(),
        })?;
        if got.as_slice() != shape {
            return Err(SaeError::shape(
                format!(
                    "{} tensor {name} (cfg.json: d_in {d_in}, d_sae {d_sae}, d_out {d_out})",
                    weights_path.display()
                ),
                &shape,
                got,
            ));
        }
    }
    let mut sae = Sae::zeros(cfg)?;
    let arch = sae.cfg.architecture;
    let needs_threshold = !sae.threshold.is_empty();
    let mut take = |name: &str, shape: &[usize], dst: &mut Vec<f32>| -> Result<()> {
        *dst = take_tensor(&mut tensors, &weights_path, arch.name(), name, shape)?;
        Ok(())
    };
    take("W_enc", &[d_in, d_sae], &mut sae.w_enc)?;
    take("W_dec", &[d_sae, d_out], &mut sae.w_dec)?;
    take("b_dec", &[d_out], &mut sae.b_dec)?;
    if sae.cfg.has_skip() {
        take("W_skip", &[d_out, d_in], &mut sae.w_skip)?;
    }
    if arch == Architecture::Gated {
        take("b_gate", &[d_sae], &mut sae.b_gate)?;
        take("r_mag", &[d_sae], &mut sae.r_mag)?;
        take("b_mag", &[d_sae], &mut sae.b_mag)?;
    } else {
        take("b_enc", &[d_sae], &mut sae.b_enc)?;
    }
    if needs_threshold && v.get("architecture").and_then(Value::as_str) == Some(MATRYOSHKA_SAELENS)
    {
        // SAELens' training file: one running threshold for every latent.
        let mut scalar = Vec::new();
        take("topk_threshold", &[], &mut scalar)?;
        sae.threshold = vec![scalar.first().copied().unwrap_or(0.0); d_sae];
    } else if needs_threshold {
        take("threshold", &[d_sae], &mut sae.threshold)?;
    }
    if arch == Architecture::JumpRelu {
        if let Some((i, t)) = sae
            .threshold
            .iter()
            .enumerate()
            .find(|(_, t)| t.is_nan() || **t < 0.0)
        {
            return Err(format_err(
                &weights_path,
                format!("JumpReLU threshold[{i}] = {t} must be a number ≥ 0"),
            ));
        }
    }
    if matches!(
        arch,
        Architecture::TopK { .. } | Architecture::Matryoshka { .. }
    ) && v
        .get("rescale_acts_by_decoder_norm")
        .and_then(Value::as_bool)
        == Some(true)
    {
        // SAELens' rescaled TopK and Matryoshka training saves (its TopK inference saves keep the flag
        // with the norms already folded, a no-op here): the same codes with the norms folded in
        // (`init::fold_decoder_norms`; a threshold is in units of the rescaled pre-activation already).
        crate::init::fold_decoder_norms(&mut sae);
    }
    for (name, v) in sae.params() {
        if let Some(p) = v.iter().position(|x| !x.is_finite()) {
            return Err(format_err(
                &weights_path,
                format!("tensor {name} holds a non-finite value at index {p}"),
            ));
        }
    }
    Ok(sae)
}
