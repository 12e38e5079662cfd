//! SAELens' `cfg.json`: written from a [`SaeConfig`] ([`cfg_json`]) and parsed back into one
//! ([`parse_cfg`]), Zephyra's own architectures kept in `metadata` (see the module docs of `saelens`).

use std::path::Path;

use serde_json::{json, Value};

use super::{format_err, SAELENS_VERSION};
use crate::error::cause;
use crate::sae::{Architecture, SaeConfig, SaeMetadata};
use crate::transcoder::TranscoderShape;
use crate::{Result, SaeError};

/// The SAELens `cfg.json` object for `cfg`.
pub fn cfg_json(cfg: &SaeConfig) -> Value {
    let mut metadata = serde_json::to_value(&cfg.metadata).unwrap_or_else(|_| json!({}));
    let arch = cfg.architecture;
    let saelens_arch = match (arch, cfg.transcoder) {
        (Architecture::Relu | Architecture::ReluUnit, None) => "standard",
        (Architecture::TopK { .. }, None) => "topk",
        (
            Architecture::JumpRelu
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. },
            None,
        ) => "jumprelu",
        (Architecture::Gated, _) => "gated",
        (Architecture::Relu | Architecture::ReluUnit, Some(t)) => {
            pick(t.skip, "skip_transcoder", "transcoder")
        }
        (Architecture::TopK { .. }, Some(t)) => {
            pick(t.skip, "topk_skip_transcoder", "topk_transcoder")
        }
        (
            Architecture::JumpRelu
            | Architecture::BatchTopK { .. }
            | Architecture::Matryoshka { .. },
            Some(t),
        ) => pick(t.skip, "jumprelu_skip_transcoder", "jumprelu_transcoder"),
    };
    if let Some(m) = metadata.as_object_mut() {
        // SAELens 6 reads `metadata` only when `sae_lens_version` is present (otherwise it takes the file
        // for a pre-6.0 config and drops the block): write both keys its own `save_model` writes.
        m.insert("sae_lens_version".into(), json!(SAELENS_VERSION));
        m.insert("sae_lens_training_version".into(), json!(SAELENS_VERSION));
        m.insert("zephyra_architecture".into(), json!(arch.name()));
        if let Architecture::BatchTopK { k } = arch {
            m.insert("zephyra_k".into(), json!(k));
        }
        if let Architecture::Matryoshka { k, groups } = arch {
            // As SAELens' `save_inference_model` records its training class.
            m.insert("training_architecture".into(), json!(MATRYOSHKA_SAELENS));
            let details = json!({
                "k": k,
                "matryoshka_widths": Vec::<usize>::from(groups),
                "rescale_acts_by_decoder_norm": false,
                "use_matryoshka_aux_loss": false,
            });
            m.insert("training_architecture_details".into(), details);
        }
        if let Some(f) = cfg.normalization_factor {
            m.insert("zephyra_normalization_factor_folded".into(), json!(f));
        }
    }
    let mut v = json!({
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
        "architecture": saelens_arch,
    });
    if let (Architecture::TopK { k }, Some(o)) = (arch, v.as_object_mut()) {
        o.insert("k".into(), json!(k));
        o.insert("rescale_acts_by_decoder_norm".into(), json!(false));
    }
    if let (Some(t), Some(o)) = (cfg.transcoder, v.as_object_mut()) {
        o.insert("d_out".into(), json!(t.d_out));
    }
    v
}

fn pick(skip: bool, with: &'static str, without: &'static str) -> &'static str {
    if skip {
        with
    } else {
        without
    }
}

/// Parses a SAELens `cfg.json` object (`path` is for messages).
pub fn parse_cfg(v: &Value, path: &Path) -> Result<SaeConfig> {
    let obj = v
        .as_object()
        .ok_or_else(|| format_err(path, "cfg.json must be a JSON object"))?;
    let get_usize = |key: &str| -> Result<usize> {
        obj.get(key)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| {
                format_err(
                    path,
                    format!("`{key}` is missing or not a non-negative integer"),
                )
            })
    };
    let arch_name = obj
        .get("architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format_err(
                path,
                "`architecture` is missing (expected `standard`, `topk`, `jumprelu` or `gated`)",
            )
        })?;
    let meta_value = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut metadata: SaeMetadata = serde_json::from_value(meta_value)
        .map_err(|e| SaeError::format(path, "`metadata`", cause(e)))?;
    let zephyra_arch = metadata
        .extra
        .remove("zephyra_architecture")
        .and_then(|v| v.as_str().map(str::to_owned));
    let zephyra_k = metadata.extra.remove("zephyra_k").and_then(|v| v.as_u64());
    // Written again by `cfg_json` on save.
    metadata.extra.remove("sae_lens_version");
    metadata.extra.remove("sae_lens_training_version");
    let folded = metadata
        .extra
        .remove("zephyra_normalization_factor_folded")
        .and_then(|v| v.as_f64());
    let (arch_name, transcoder) = match arch_name {
        "transcoder" => ("standard", Some(false)),
        "skip_transcoder" => ("standard", Some(true)),
        "topk_transcoder" => ("topk", Some(false)),
        "topk_skip_transcoder" => ("topk", Some(true)),
        "jumprelu_transcoder" => ("jumprelu", Some(false)),
        "jumprelu_skip_transcoder" => ("jumprelu", Some(true)),
        other => (other, None),
    };
    if metadata.hook_name_out.is_none() {
        // Older SAELens configs keep the output hook at the top level.
        metadata.hook_name_out = obj
            .get("hook_name_out")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let training_arch = metadata
        .extra
        .get("training_architecture")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let architecture = match (arch_name, zephyra_arch.as_deref()) {
        ("jumprelu", _) if training_arch.as_deref() == Some(MATRYOSHKA_SAELENS) => {
            let details = metadata
                .extra
                .get("training_architecture_details")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let arch = matryoshka_from(&details, get_usize("d_sae")?, path)?;
            // Written again by `cfg_json` on save.
            metadata.extra.remove("training_architecture");
            metadata.extra.remove("training_architecture_details");
            arch
        }
        (MATRYOSHKA_SAELENS, _) => matryoshka_from(v, get_usize("d_sae")?, path)?,
        ("standard", Some("relu-unit")) => Architecture::ReluUnit,
        ("standard", _) => Architecture::Relu,
        // `rescale_acts_by_decoder_norm: true` is folded into the weights by `load`.
        ("topk", _) => Architecture::TopK { k: get_usize("k")? },
        ("jumprelu", Some("batchtopk")) => Architecture::BatchTopK {
            k: zephyra_k
                .ok_or_else(|| format_err(path, "batchtopk SAE without `metadata.zephyra_k`"))?
                as usize,
        },
        ("jumprelu", _) => Architecture::JumpRelu,
        ("gated", _) => Architecture::Gated,
        (other, _) => return Err(SaeError::UnknownArchitecture(other.to_string())),
    };
    match obj.get("normalize_activations").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(other) => {
            return Err(format_err(
                path,
                format!("`normalize_activations: {other}` is not supported: only `none` (fold the scaling into the weights first)"),
            ))
        }
    }
    if let Some(dtype) = obj.get("dtype").and_then(Value::as_str) {
        if !matches!(
            dtype,
            "float32" | "torch.float32" | "float64" | "torch.float64"
        ) {
            return Err(format_err(
                path,
                format!("`dtype: {dtype}` is not supported: only float32/float64 weights"),
            ));
        }
    }
    let cfg = SaeConfig {
        d_in: get_usize("d_in")?,
        d_sae: get_usize("d_sae")?,
        architecture,
        apply_b_dec_to_input: obj
            .get("apply_b_dec_to_input")
            .and_then(Value::as_bool)
            .unwrap_or(transcoder.is_none()),
        normalization_factor: folded.map(|f| f as f32),
        metadata,
        transcoder: match transcoder {
            Some(skip) => Some(TranscoderShape {
                d_out: get_usize("d_out")?,
                skip,
            }),
            None => None,
        },
    };
    cfg.validate()?;
    Ok(cfg)
}

/// SAELens' name of the Matryoshka BatchTopK training class (its `cfg.json` `architecture` in a training
/// save, `metadata.training_architecture` in an inference save, where `architecture` is `jumprelu`).
pub const MATRYOSHKA_SAELENS: &str = "matryoshka_batchtopk";

/// [`Architecture::Matryoshka`] from an object holding SAELens' `k` and `matryoshka_widths` (a width
/// `d_sae` is appended when the list stops short, as SAELens does).
fn matryoshka_from(obj: &Value, d_sae: usize, path: &Path) -> Result<Architecture> {
    let k = obj.get("k").and_then(Value::as_f64).unwrap_or(f64::NAN);
    if !(k.fract() == 0.0 && k >= 1.0) {
        return Err(format_err(
            path,
            format!(
                "matryoshka_batchtopk needs an integer `k` ≥ 1, found {}",
                obj.get("k").unwrap_or(&Value::Null)
            ),
        ));
    }
    // `rescale_acts_by_decoder_norm: true` (SAELens' default) is folded into the weights by `load`; its
    // inference saves arrive folded already.
    let mut widths: Vec<usize> = obj
        .get("matryoshka_widths")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|w| w as usize)
                .collect()
        })
        .unwrap_or_default();
    if widths.last() != Some(&d_sae) {
        widths.push(d_sae);
    }
    let groups = crate::MatryoshkaWidths::new(&widths)
        .map_err(|e| format_err(path, format!("`matryoshka_widths` {widths:?}: {e}")))?;
    Ok(Architecture::Matryoshka {
        k: k as usize,
        groups,
    })
}
