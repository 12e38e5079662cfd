//! `zephyra convert --from/--to gemma-scope` end to end: a Gemma Scope folder written here becomes a SAELens
//! SAE that `zephyra encode` reads (codes checked against a hand-computed JumpReLU), converts back to the
//! same bytes, and bad inputs are clear errors (exit 2).

mod common;

use std::path::Path;

use common::{arg, assert_fails_with, ok, run, write_npy};
use rand::{Rng, SeedableRng};
use zephyra_sae::saelens::{read_f32_tensors, write_f32_tensors};

const D_IN: usize = 8;
const D_SAE: usize = 12;

/// Writes `params.safetensors` + `config.json` (Gemma Scope 2 layout); returns the weights path.
fn gemma_scope_folder(dir: &Path, skip: Option<&str>) -> std::path::PathBuf {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut v = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let (w_enc, w_dec) = (v(D_IN * D_SAE, -1.0, 1.0), v(D_SAE * D_IN, -1.0, 1.0));
    let (b_enc, b_dec, threshold) = (v(D_SAE, -0.2, 0.2), v(D_IN, -1.0, 1.0), v(D_SAE, 0.1, 0.9));
    let tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("w_enc", vec![D_IN, D_SAE], &w_enc),
        ("w_dec", vec![D_SAE, D_IN], &w_dec),
        ("b_enc", vec![D_SAE], &b_enc),
        ("b_dec", vec![D_IN], &b_dec),
        ("threshold", vec![D_SAE], &threshold),
    ];
    let kept: Vec<_> = tensors
        .into_iter()
        .filter(|(n, ..)| Some(*n) != skip)
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("params.safetensors");
    write_f32_tensors(&path, &kept).unwrap();
    let config = serde_json::json!({
        "architecture": "jump_relu",
        "model_name": "google/gemma-3-270m-pt",
        "hf_hook_point_in": "model.layers.6.output"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    path
}

/// `zephyra convert DIRECTION gemma-scope INPUT EXTRA… --out OUT`.
fn convert(direction: &str, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert".to_string(),
        direction.into(),
        "gemma-scope".into(),
        arg(input),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--out".to_string(), arg(out)]);
    run(args)
}

#[test]
fn gemma_scope_converts_encodes_and_converts_back() {
    let tmp = tempfile::tempdir().unwrap();
    let params = gemma_scope_folder(&tmp.path().join("gs"), None);
    let runs = tmp.path().join("runs/gs");
    let out = ok(convert(
        "--from",
        &params,
        &runs,
        &["--model-name", "gemma3-270m"],
    ));
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["architecture"], "jumprelu");
    assert_eq!(summary["hook"], "blocks.6.hook_resid_post");
    assert_eq!(summary["d_sae"], D_SAE);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "jumprelu");
    assert_eq!(cfg["apply_b_dec_to_input"], false);
    assert_eq!(cfg["metadata"]["model_name"], "gemma3-270m");

    // `encode` reads the converted SAE; its codes are z·H(z − θ), z = x w_enc + b_enc (no b_dec).
    let t = read_f32_tensors(&params).unwrap();
    let rows = 6;
    let x_of = |r: usize, i: usize| ((r * D_IN + i) as f32 * 0.41).sin() * 1.5;
    let acts = tmp.path().join("x.npy");
    write_npy(&acts, rows, D_IN, |r, row| {
        for (i, v) in row.iter_mut().enumerate() {
            *v = x_of(r, i);
        }
    });
    let codes = tmp.path().join("codes.safetensors");
    ok(run([
        "encode".into(),
        "--sae".into(),
        arg(&runs),
        "--acts".into(),
        arg(&acts),
        "--out".into(),
        arg(&codes),
        "--format".into(),
        "dense".into(),
    ]));
    let got = &read_f32_tensors(&codes).unwrap()["codes"].1;
    let (w_enc, b_enc, th) = (&t["w_enc"].1, &t["b_enc"].1, &t["threshold"].1);
    let mut active = 0;
    for r in 0..rows {
        for j in 0..D_SAE {
            let z: f64 = f64::from(b_enc[j])
                + (0..D_IN)
                    .map(|i| f64::from(x_of(r, i)) * f64::from(w_enc[i * D_SAE + j]))
                    .sum::<f64>();
            let want = if z > f64::from(th[j]) { z } else { 0.0 };
            active += usize::from(want > 0.0);
            let g = f64::from(got[r * D_SAE + j]);
            assert!(
                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                "row {r} latent {j}: {g} vs {want}"
            );
        }
    }
    assert!(active > 0 && active < rows * D_SAE, "{active} active codes");

    // And back: the same tensors, bit for bit, and the same config.json.
    let back = tmp.path().join("back");
    ok(convert("--to", &runs, &back, &[]));
    assert_eq!(
        read_f32_tensors(&back.join("params.safetensors")).unwrap(),
        t
    );
    let c_in: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("gs/config.json")).unwrap()).unwrap();
    let c_out: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("config.json")).unwrap()).unwrap();
    assert_eq!(c_in, c_out);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let params = gemma_scope_folder(&tmp.path().join("gs"), Some("threshold"));
    let out = convert("--from", &params, &tmp.path().join("o1"), &[]);
    assert_fails_with(&out, "`threshold` is missing");
    assert!(!tmp.path().join("o1/cfg.json").exists());

    // A TopK SAE has no Gemma Scope form.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let cfg =
        zephyra_sae::SaeConfig::new(D_IN, D_SAE, zephyra_sae::Architecture::TopK { k: 2 }).unwrap();
    let sae = zephyra_sae::Sae::init(cfg, &mut rng).unwrap();
    let topk = tmp.path().join("topk");
    zephyra_sae::saelens::save(&sae, &topk).unwrap();
    let out = convert("--to", &topk, &tmp.path().join("o2"), &[]);
    assert_fails_with(&out, "cannot be written as Gemma Scope");

    // A hook the model family does not have.
    let params = gemma_scope_folder(&tmp.path().join("gs2"), None);
    let out = convert(
        "--from",
        &params,
        &tmp.path().join("o3"),
        &["--hook", "blocks.6.hook_nonsense"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("o3").exists());
}
