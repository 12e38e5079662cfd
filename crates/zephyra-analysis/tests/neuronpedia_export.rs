//! The Neuronpedia export against the format's reference code: sae-dashboard 0.8.0's
//! `NeuronpediaDashboardBatch` (PyPI, installed with `--no-deps` into a venv under `target/`, with numpy,
//! its only import) must build from every batch and give the same JSON back, and every key Neuronpedia's
//! converter reads must be there (`tests/neuronpedia/check_batches.py`). Without Python or PyPI the test
//! fails with what to install; it does not skip. Token strings, layer, window length, dataset and the
//! histogram are also checked here against hand-derived values, and so are the correlated-features
//! tables, on a planted SAE whose latents have correlations known by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use zephyra_analysis::features::planted::{planted, quick_options, Planted};
use zephyra_analysis::features::store::INDEX_FILE;
use zephyra_analysis::features::{export, FeatureOptions, FeatureStore, Provenance};
use zephyra_sae::Sae;

const SAE_DASHBOARD: &str = "sae-dashboard==0.8.0";

fn features(p: &Planted, out: &Path) -> FeatureStore {
    features_of(p, &p.sae, out)
}

fn features_of(p: &Planted, sae: &Sae, out: &Path) -> FeatureStore {
    p.compute_features(
        sae,
        quick_options(),
        out,
        Provenance::default(),
        &mut |_| {},
    )
    .unwrap();
    FeatureStore::open(out).unwrap()
}

/// A venv with sae-dashboard (no dependencies) and numpy, made once under `target/` (once per test binary:
/// the tests that need it wait for the first to make it).
fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

fn make_venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("neuronpedia-venv");
    let python = dir.join("bin/python");
    let ready = dir.join(".ready-sae-dashboard-0.8.0");
    if ready.exists() {
        return python;
    }
    let base = std::env::var("ZEPHYRA_PYTHON").unwrap_or_else(|_| "python3".into());
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("{what}: cannot run it ({e}); install python3 with venv and pip")
        });
        assert!(
            out.status.success(),
            "{what} failed (this test needs python3 -m venv and PyPI):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let _ = std::fs::remove_dir_all(&dir);
    run(
        Command::new(&base).args(["-m", "venv"]).arg(&dir),
        "python3 -m venv",
    );
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            SAE_DASHBOARD,
            "numpy",
        ]),
        "pip install --no-deps sae-dashboard==0.8.0 numpy",
    );
    std::fs::write(&ready, SAE_DASHBOARD).unwrap();
    python
}

/// sae-dashboard's vocabulary string, derived by hand for the byte-level pieces the tiny vocabulary has.
fn shown(piece: &str) -> String {
    piece
        .replace('Ġ', " ")
        .replace('Ċ', "\n")
        .replace('ĉ', "\t")
}

/// Runs `tests/neuronpedia/check_batches.py` on the batches in `np`; returns its counts.
fn check_batches(np: &Path) -> Value {
    let python = venv_python();
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/neuronpedia/check_batches.py");
    let out = Command::new(&python)
        .arg(&checker)
        .arg(np)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sae-dashboard / converter check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_export_loads_in_sae_dashboard_and_has_what_the_converter_reads() {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let store = features(&p, &dir.path().join("features"));
    let np = dir.path().join("np");
    assert_eq!(
        export::export_neuronpedia(&store, &p.tokenizer, &np, "tiny", "zephyra-set").unwrap(),
        1
    );
    let batch: Value =
        serde_json::from_slice(&std::fs::read(np.join("batch-0.json")).unwrap()).unwrap();
    assert_eq!(
        batch["layer"], 0,
        "the planted hook is blocks.0.hook_resid_pre"
    );
    assert_eq!(batch["sae_id_suffix"], Value::Null);
    let f0 = &batch["features"][0];
    let rec = store.record(0).unwrap().unwrap();
    let acts = f0["activations"].as_array().unwrap();
    assert!(!acts.is_empty());
    for (a, e) in acts.iter().zip(&rec.top) {
        let want: Vec<String> = e
            .token_ids
            .iter()
            .map(|&id| shown(p.tokenizer.token_str(id).unwrap()))
            .collect();
        assert_eq!(a["tokens"], serde_json::json!(want));
        assert_eq!(a["qualifying_token_index"], e.center);
        assert_eq!(
            a["tokens"][e.center as usize],
            serde_json::json!(shown(p.tokenizer.token_str(p.token).unwrap()))
        );
    }
    // The longest example window (windows are cut at the context's edges), not the context length.
    let longest = rec
        .top
        .iter()
        .chain(rec.quantiles.iter().flat_map(|g| &g.examples))
        .map(|e| e.token_ids.len())
        .max()
        .unwrap();
    let opts = FeatureOptions::default();
    assert!(longest <= (opts.window_before + 1 + opts.window_after).min(16));
    assert_eq!(f0["n_tokens_in_prompt"], longest);
    let heights: u64 = f0["freq_hist_data_bar_heights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_u64().unwrap())
        .sum();
    assert_eq!(
        heights, rec.stats.n_fires,
        "every firing is in the histogram"
    );
    assert!(!f0["dataset"].as_str().unwrap().contains('/'));

    let counts = check_batches(&np);
    assert_eq!(counts["features"], 4);
    assert_eq!(counts["activations"], acts.len());

    // A hook without a layer is an error, never layer 0.
    let ix_path = store.dir().join(INDEX_FILE);
    let mut ix: Value = serde_json::from_slice(&std::fs::read(&ix_path).unwrap()).unwrap();
    ix["hook"] = "hook_embed".into();
    std::fs::write(&ix_path, ix.to_string()).unwrap();
    let store = FeatureStore::open(store.dir()).unwrap();
    let e = export::export_neuronpedia(&store, &p.tokenizer, &dir.path().join("np2"), "tiny", "s")
        .unwrap_err();
    assert!(e.to_string().contains("hook_embed"), "{e}");
}

/// The planted SAE with two more live latents: latent 1 is exactly twice latent 0 (encoder column doubled,
/// bias −2: the pre-activation doubles, so it is 2 on the planted token and negative wherever latent 0's
/// is), latent 2 is 1 on every token (zero encoder, bias +1); latent 3 stays dead.
fn correlated_sae(p: &Planted) -> Sae {
    let mut sae = (*p.sae).clone();
    let d_sae = sae.cfg.d_sae;
    for i in 0..sae.cfg.d_in {
        sae.w_enc[i * d_sae + 1] = 2.0 * sae.w_enc[i * d_sae];
    }
    sae.b_enc[1] = -2.0;
    sae.b_enc[2] = 1.0;
    sae
}

#[test]
fn correlated_features_are_pearson_and_cosine_of_the_activations() {
    // By hand, over the n kept tokens, with latent 0 = 1 on its m firings: latents 0 and 1 are
    // proportional (Pearson 1, cosine 1); latent 2 is constant, so its Pearson with anything is 0 (no
    // variance) and its cosine with latent 0 or 1 is m / √(m · n) = √(m / n); latent 3 never fires and is
    // no candidate.
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let store = features_of(&p, &correlated_sae(&p), &dir.path().join("features"));
    let n = store.index().n_tokens_kept as f64;
    let m = store.record(0).unwrap().unwrap().stats.n_fires as f64;
    assert!(
        m > 0.0 && m < n,
        "the planted token fires on some tokens only"
    );
    let cos_const = (m / n).sqrt();
    let expected: [&[(u32, f64, f64)]; 4] = [
        &[(1, 1.0, 1.0), (2, 0.0, cos_const)],
        &[(0, 1.0, 1.0), (2, 0.0, cos_const)],
        &[(0, 0.0, cos_const), (1, 0.0, cos_const)],
        &[],
    ];
    for (id, want) in expected.iter().enumerate() {
        let rec = store.record(id as u32).unwrap().unwrap();
        let got: Vec<(u32, f64, f64)> = rec
            .correlated
            .iter()
            .map(|c| (c.id, f64::from(c.pearson), f64::from(c.cosine)))
            .collect();
        assert_eq!(got.len(), want.len(), "latent {id}: {got:?}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert_eq!(g.0, w.0, "latent {id}: {got:?}");
            assert!((g.1 - w.1).abs() < 1e-4, "latent {id} Pearson: {got:?}");
            assert!((g.2 - w.2).abs() < 1e-4, "latent {id} cosine: {got:?}");
        }
    }

    let np = dir.path().join("np");
    export::export_neuronpedia(&store, &p.tokenizer, &np, "tiny", "zephyra-set").unwrap();
    let batch: Value =
        serde_json::from_slice(&std::fs::read(np.join("batch-0.json")).unwrap()).unwrap();
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    for (id, want) in expected.iter().enumerate() {
        let f = &batch["features"][id];
        let list = |key: &str| f[key].as_array().unwrap().clone();
        let ids: Vec<u64> = list("correlated_features_indices")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let pearson: Vec<f64> = list("correlated_features_pearson")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let cosine: Vec<f64> = list("correlated_features_l1")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            ids,
            want.iter().map(|w| u64::from(w.0)).collect::<Vec<_>>(),
            "latent {id}"
        );
        assert_eq!(
            pearson,
            want.iter().map(|w| round3(w.1)).collect::<Vec<_>>(),
            "latent {id}"
        );
        assert_eq!(
            cosine,
            want.iter().map(|w| round3(w.2)).collect::<Vec<_>>(),
            "latent {id}"
        );
    }
    assert!(!batch["features"][0]["correlated_features_indices"]
        .as_array()
        .unwrap()
        .is_empty());
    // sae-dashboard's own classes load it, and every table is consistent (checked in the script).
    assert_eq!(check_batches(&np)["features"], 4);
}
