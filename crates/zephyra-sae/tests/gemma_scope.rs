//! Gemma Scope `params.safetensors` (+ `config.json`) in and out, on files written here in the layout of
//! SAELens' `gemma_2`/`gemma_3` loaders: lowercase `w_enc` `[d_model, d_sae]`, `w_dec` `[d_sae, d_model]`,
//! `b_enc`, `b_dec`, `threshold`, no `b_dec` subtracted from the input.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use serde_json::json;
use zephyra_sae::gemma_scope::{self, ReadOptions};
use zephyra_sae::saelens::{read_f32_tensors, write_f32_tensors};
use zephyra_sae::{saelens, Architecture, Sae, SaeConfig, SaeError};

const D_IN: usize = 6;
const D_SAE: usize = 10;

struct Params {
    w_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_enc: Vec<f32>,
    b_dec: Vec<f32>,
    threshold: Vec<f32>,
}

fn params(seed: u64) -> Params {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    Params {
        w_enc: v(D_IN * D_SAE, -1.0, 1.0),
        w_dec: v(D_SAE * D_IN, -1.0, 1.0),
        b_enc: v(D_SAE, -0.3, 0.3),
        b_dec: v(D_IN, -2.0, 2.0),
        threshold: v(D_SAE, 0.05, 0.8),
    }
}

/// Writes a Gemma Scope folder; `skip` leaves a tensor out, `config` is written when given.
fn write_folder(
    dir: &Path,
    p: &Params,
    skip: Option<&str>,
    config: Option<serde_json::Value>,
) -> PathBuf {
    let all: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("w_enc", vec![D_IN, D_SAE], &p.w_enc),
        ("w_dec", vec![D_SAE, D_IN], &p.w_dec),
        ("b_enc", vec![D_SAE], &p.b_enc),
        ("b_dec", vec![D_IN], &p.b_dec),
        ("threshold", vec![D_SAE], &p.threshold),
    ];
    let kept: Vec<_> = all.into_iter().filter(|(n, ..)| Some(*n) != skip).collect();
    let path = dir.join("params.safetensors");
    write_f32_tensors(&path, &kept).unwrap();
    if let Some(c) = config {
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    }
    path
}

fn gs2_config() -> serde_json::Value {
    json!({
        "architecture": "jump_relu",
        "model_name": "google/gemma-3-270m-pt",
        "hf_hook_point_in": "model.layers.6.output",
        "width": 16384,
        "l0": "medium"
    })
}

#[test]
fn gemma_scope_to_saelens_and_back_is_exact() {
    let p = params(1);
    // The thresholds must include values that `exp(ln t)` does not give back in f32, or the test could
    // not see a lossy threshold path.
    assert!(p.threshold.iter().any(|t| t.ln().exp() != *t));
    let src = tempfile::tempdir().unwrap();
    let params_path = write_folder(src.path(), &p, None, Some(gs2_config()));
    let sae = gemma_scope::read(&params_path, &ReadOptions::default()).unwrap();
    assert_eq!(sae.cfg.architecture, Architecture::JumpRelu);
    assert!(!sae.cfg.apply_b_dec_to_input);
    assert_eq!(
        sae.cfg.metadata.hook_name.as_deref(),
        Some("blocks.6.hook_resid_post")
    );
    assert_eq!(
        sae.cfg.metadata.model_name.as_deref(),
        Some("google/gemma-3-270m-pt")
    );

    let lens = tempfile::tempdir().unwrap();
    saelens::save(&sae, lens.path()).unwrap();
    let loaded = saelens::load(lens.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    gemma_scope::write(&loaded, out.path()).unwrap();

    let a = read_f32_tensors(&params_path).unwrap();
    let b = read_f32_tensors(&out.path().join("params.safetensors")).unwrap();
    assert_eq!(
        a, b,
        "tensors differ after gemma-scope → SAELens → gemma-scope"
    );
    let cfg_in: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.path().join("config.json")).unwrap()).unwrap();
    let cfg_out: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_in, cfg_out);
}

#[test]
fn saelens_to_gemma_scope_and_back_is_exact() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut cfg = SaeConfig::new(D_IN, D_SAE, Architecture::JumpRelu).unwrap();
    cfg.apply_b_dec_to_input = false;
    cfg.metadata.model_name = Some("gemma3-270m".into());
    cfg.metadata.hook_name = Some("blocks.4.hook_mlp_out".into());
    let mut sae = Sae::init(cfg, &mut rng).unwrap();
    for (i, t) in sae.threshold.iter_mut().enumerate() {
        *t = 0.05 + 0.07 * i as f32;
    }
    let dir = tempfile::tempdir().unwrap();
    gemma_scope::write(&sae, dir.path()).unwrap();
    let cfg_out: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg_out["hf_hook_point_in"],
        "model.layers.4.post_feedforward_layernorm.output"
    );
    let back = gemma_scope::read(
        &dir.path().join("params.safetensors"),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(back.w_enc, sae.w_enc);
    assert_eq!(back.w_dec, sae.w_dec);
    assert_eq!(back.b_enc, sae.b_enc);
    assert_eq!(back.b_dec, sae.b_dec);
    assert_eq!(back.threshold, sae.threshold);
    assert_eq!(back.cfg.metadata.hook_name, sae.cfg.metadata.hook_name);
    assert_eq!(back.cfg.metadata.model_name, sae.cfg.metadata.model_name);
    let x: Vec<f32> = (0..5 * D_IN)
        .map(|i| (i as f32 * 0.61).sin() * 2.0)
        .collect();
    assert_eq!(back.encode(&x, 5).unwrap(), sae.encode(&x, 5).unwrap());
}

/// `f = z·H(z − θ)`, `z = x w_enc + b_enc` in f64, straight from the file's arrays.
fn hand_codes(p: &Params, x: &[f32], rows: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * D_SAE];
    for r in 0..rows {
        for j in 0..D_SAE {
            let mut z = f64::from(p.b_enc[j]);
            for i in 0..D_IN {
                z += f64::from(x[r * D_IN + i]) * f64::from(p.w_enc[i * D_SAE + j]);
            }
            out[r * D_SAE + j] = if z > f64::from(p.threshold[j]) {
                z
            } else {
                0.0
            };
        }
    }
    out
}

#[test]
fn converted_codes_equal_a_hand_computed_jumprelu() {
    let p = params(5);
    let src = tempfile::tempdir().unwrap();
    let params_path = write_folder(src.path(), &p, None, None);
    let opts = ReadOptions {
        hook_name: Some("blocks.6.hook_resid_post".into()),
        model_name: Some("gemma3-270m".into()),
        ..Default::default()
    };
    let lens = tempfile::tempdir().unwrap();
    saelens::save(
        &gemma_scope::read(&params_path, &opts).unwrap(),
        lens.path(),
    )
    .unwrap();
    let sae = saelens::load(lens.path()).unwrap();
    let rows = 4;
    let x: Vec<f32> = (0..rows * D_IN)
        .map(|i| (i as f32 * 0.37).cos() * 1.5)
        .collect();
    let want = hand_codes(&p, &x, rows);
    let got = sae.encode(&x, rows).unwrap();
    let (mut on, mut off) = (0, 0);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{g} vs {w}"
        );
        if *w > 0.0 {
            on += 1
        } else {
            off += 1
        }
    }
    // The rows exercise both sides of the jump.
    assert!(on >= 5 && off >= 5, "on {on}, off {off}");
    // Subtracting b_dec (SAELens' default) would give other codes: the file's b_dec matters here.
    let mut wrong = sae.clone();
    wrong.cfg.apply_b_dec_to_input = true;
    assert_ne!(wrong.encode(&x, rows).unwrap(), got);
}

#[test]
fn relu_and_b_dec_folding_export_the_same_function() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for (arch, apply) in [(Architecture::Relu, false), (Architecture::JumpRelu, true)] {
        let mut cfg = SaeConfig::new(D_IN, D_SAE, arch).unwrap();
        cfg.apply_b_dec_to_input = apply;
        cfg.metadata.hook_name = Some("blocks.2.hook_resid_post".into());
        let mut sae = Sae::init(cfg, &mut rng).unwrap();
        for (k, v) in sae.b_dec.iter_mut().enumerate() {
            *v = 0.3 * k as f32 - 0.5;
        }
        for (k, v) in sae.b_enc.iter_mut().enumerate() {
            *v = 0.05 * k as f32 - 0.2;
        }
        let dir = tempfile::tempdir().unwrap();
        gemma_scope::write(&sae, dir.path()).unwrap();
        let t = read_f32_tensors(&dir.path().join("params.safetensors")).unwrap();
        let p = Params {
            w_enc: t["w_enc"].1.clone(),
            w_dec: t["w_dec"].1.clone(),
            b_enc: t["b_enc"].1.clone(),
            b_dec: t["b_dec"].1.clone(),
            threshold: t["threshold"].1.clone(),
        };
        if arch == Architecture::Relu {
            assert!(p.threshold.iter().all(|&v| v == 0.0));
        }
        let rows = 5;
        let x: Vec<f32> = (0..rows * D_IN).map(|i| (i as f32 * 0.53).sin()).collect();
        let want = sae.encode(&x, rows).unwrap();
        let got = hand_codes(&p, &x, rows);
        assert!(want.iter().any(|&v| v > 0.0));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - f64::from(*w)).abs() <= 1e-5, "{arch}: {g} vs {w}");
        }
    }
}

fn read_err(dir: &Path) -> String {
    let e =
        gemma_scope::read(&dir.join("params.safetensors"), &ReadOptions::default()).unwrap_err();
    e.to_string()
}

#[test]
fn bad_files_are_clear_errors() {
    let p = params(2);
    // Missing tensor.
    let d = tempfile::tempdir().unwrap();
    write_folder(d.path(), &p, Some("threshold"), Some(gs2_config()));
    let msg = read_err(d.path());
    assert!(msg.contains("`threshold` is missing"), "{msg}");

    // w_dec stored transposed.
    let d = tempfile::tempdir().unwrap();
    write_f32_tensors(
        &d.path().join("params.safetensors"),
        &[
            ("w_enc", vec![D_IN, D_SAE], &p.w_enc),
            ("w_dec", vec![D_IN, D_SAE], &p.w_dec),
            ("b_enc", vec![D_SAE], &p.b_enc),
            ("b_dec", vec![D_IN], &p.b_dec),
            ("threshold", vec![D_SAE], &p.threshold),
        ],
    )
    .unwrap();
    std::fs::write(d.path().join("config.json"), gs2_config().to_string()).unwrap();
    let err = gemma_scope::read(
        &d.path().join("params.safetensors"),
        &ReadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SaeError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("w_dec"), "{err}");

    // Truncated.
    let d = tempfile::tempdir().unwrap();
    let path = write_folder(d.path(), &p, None, Some(gs2_config()));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 17]).unwrap();
    let msg = read_err(d.path());
    assert!(msg.contains("truncated"), "{msg}");

    // A transcoder's config.
    let d = tempfile::tempdir().unwrap();
    let mut c = gs2_config();
    c["hf_hook_point_out"] = json!("model.layers.6.post_feedforward_layernorm.output");
    write_folder(d.path(), &p, None, Some(c));
    let msg = read_err(d.path());
    assert!(msg.contains("transcoder"), "{msg}");

    // No config and no hook.
    let d = tempfile::tempdir().unwrap();
    write_folder(d.path(), &p, None, None);
    let msg = read_err(d.path());
    assert!(msg.contains("--hook"), "{msg}");

    // A negative threshold (0 is a plain ReLU gate, and allowed).
    let d = tempfile::tempdir().unwrap();
    let mut q = params(2);
    q.threshold[3] = -0.25;
    write_folder(d.path(), &q, None, Some(gs2_config()));
    let msg = read_err(d.path());
    assert!(msg.contains("threshold[3]"), "{msg}");
}

#[test]
fn topk_and_gated_are_refused_on_export() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for arch in [Architecture::TopK { k: 3 }, Architecture::Gated] {
        let sae = Sae::init(SaeConfig::new(D_IN, D_SAE, arch).unwrap(), &mut rng).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let msg = gemma_scope::write(&sae, dir.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cannot be written as Gemma Scope"), "{msg}");
        assert!(!dir.path().join("params.safetensors").exists());
    }
}
