//! SAELens-compatible SAE folders: `cfg.json` + `sae_weights.safetensors` (SAELens 6 layout).
//!
//! Tensors (float32, row-major, SAELens names and orientation): `W_enc` `[d_in, d_sae]`, `W_dec`
//! `[d_sae, d_in]`, `b_enc` `[d_sae]` (not gated), `b_dec` `[d_in]`, `threshold` `[d_sae]` (jumprelu, and
//! batchtopk which is saved as a JumpReLU), gated: `b_gate`, `r_mag`, `b_mag` `[d_sae]`.
//!
//! `cfg.json` keys: `architecture` (`standard`, `topk`, `jumprelu`, `gated`), `d_in`, `d_sae`, `dtype`
//! (`float32`), `device`, `apply_b_dec_to_input`, `normalize_activations` (`none`: Zephyra folds its input
//! scaling into the weights), `reshape_activations`, `k` (topk, with `rescale_acts_by_decoder_norm:
//! false`; a topk read with `true` gets the decoder norms folded in, same codes), and `metadata` (`sae_lens_version` and `sae_lens_training_version` as SAELens 6 writes them — without
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

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use zephyra_io::write_atomic;

use crate::error::cause;
use crate::sae::{Architecture, Sae, SaeConfig, SaeMetadata};
use crate::transcoder::TranscoderShape;
use crate::{Result, SaeError};

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

/// Writes named f32 tensors `(name, shape, values)` as a safetensors file, atomically.
pub fn write_f32_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<()> {
    let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(SaeError::shape(*name, shape, &[values.len()]));
        }
        bytes.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), b)
            .map_err(|e| SaeError::format(path, format!("tensor {name}"), cause(e)))?;
        views.push((name.to_string(), view));
    }
    let out = safetensors::serialize(views, None)
        .map_err(|e| SaeError::format(path, "serialising", cause(e)))?;
    Ok(write_atomic(path, &out)?)
}

/// Tensors by name: `(shape, values)`.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Removes tensor `name` from `tensors` (read from `path`, a file of an `architecture` SAE), checking its
/// shape.
pub(crate) fn take_tensor(
    tensors: &mut NamedTensors,
    path: &Path,
    architecture: &str,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let (got, values) = tensors
        .remove(name)
        .ok_or_else(|| SaeError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            architecture: architecture.to_string(),
        })?;
    if got != shape {
        return Err(SaeError::shape(
            format!("{} tensor {name}", path.display()),
            shape,
            &got,
        ));
    }
    Ok(values)
}

/// Writes tensors of any dtype `(name, dtype, shape, little-endian bytes)` plus optional string metadata as
/// a safetensors file, atomically.
pub fn write_raw_tensors(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, bytes) in tensors {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| SaeError::format(path, format!("tensor {name}"), cause(e)))?;
        views.push((name.to_string(), view));
    }
    let out = safetensors::serialize(views, metadata)
        .map_err(|e| SaeError::format(path, "serialising", cause(e)))?;
    Ok(write_atomic(path, &out)?)
}

/// Reads every tensor of a safetensors file as f32 (`F32` as is, `F64` rounded): name → (shape, values).
pub fn read_f32_tensors(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        let message = "not a valid safetensors file; is it truncated? re-save or re-download it";
        SaeError::format(path, message, cause(e))
    })?;
    let mut out = BTreeMap::new();
    for name in st.names() {
        let t = st
            .tensor(name)
            .map_err(|e| SaeError::format(path, format!("tensor {name}"), cause(e)))?;
        let data = t.data();
        let values: Vec<f32> = match t.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            other => {
                return Err(format_err(path, format!("tensor {name} has dtype {other:?}; only F32 and F64 are supported: convert it to float32")))
            }
        };
        out.insert(name.to_string(), (t.shape().to_vec(), values));
    }
    Ok(out)
}

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

/// Saves `sae` into folder `dir` (created if needed) as SAELens files.
pub fn save(sae: &Sae, dir: &Path) -> Result<()> {
    sae.check_shapes()?;
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let threshold: Vec<f32> = match sae.cfg.architecture {
        // The stored threshold when `log_threshold` is its logarithm (a loaded file's exact values: `exp(ln
        // t)` is not always `t` in f32), else `exp(log_threshold)`.
        Architecture::JumpRelu => sae
            .log_threshold
            .iter()
            .zip(&sae.threshold)
            .map(|(l, t)| if t.ln() == *l { *t } else { l.exp() })
            .collect(),
        _ => sae.threshold.clone(),
    };
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
        ("threshold", &threshold),
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

/// Refuses an `architecture` config with `rescale_acts_by_decoder_norm: true`, which zephyra does not
/// implement.
fn refuse_rescaled(obj: &Value, architecture: &str, path: &Path) -> Result<()> {
    if obj
        .get("rescale_acts_by_decoder_norm")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(format_err(
            path,
            format!("{architecture} with `rescale_acts_by_decoder_norm: true` is not supported"),
        ));
    }
    Ok(())
}

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
    refuse_rescaled(obj, "matryoshka_batchtopk", path)?;
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
            .find(|(_, t)| t.is_nan() || **t <= 0.0)
        {
            return Err(format_err(
                &weights_path,
                format!("JumpReLU threshold[{i}] = {t} must be positive"),
            ));
        }
        sae.log_threshold = sae.threshold.iter().map(|t| t.ln()).collect();
    }
    if matches!(arch, Architecture::TopK { .. })
        && v.get("rescale_acts_by_decoder_norm")
            .and_then(Value::as_bool)
            == Some(true)
    {
        // SAELens' rescaled TopK (its inference saves keep the flag with the norms already folded, a
        // no-op here): the same codes with the norms folded in (`init::fold_decoder_norms`).
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
