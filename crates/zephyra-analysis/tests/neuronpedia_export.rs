//! The Neuronpedia export against the format's reference code: sae-dashboard 0.8.0's
//! `NeuronpediaDashboardBatch` (PyPI, installed with `--no-deps` into a venv under `target/`, with numpy,
//! its only import) must build from every batch and give the same JSON back, and every key Neuronpedia's
//! converter reads must be there (`tests/neuronpedia/check_batches.py`). Without Python or PyPI the test
//! fails with what to install; it does not skip. Token strings, layer, window length, dataset and the
//! histogram are also checked here against hand-derived values.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use zephyra_analysis::features::planted::{planted, Planted};
use zephyra_analysis::features::store::INDEX_FILE;
use zephyra_analysis::features::{
    compute_features, export, FeatureJob, FeatureOptions, FeatureStore, Provenance,
};
use zephyra_data::Corpus;

const SAE_DASHBOARD: &str = "sae-dashboard==0.8.0";

fn features(p: &Planted, out: &Path) -> FeatureStore {
    let corpus =
        Corpus::from_specs(&[p.corpus_path.display().to_string()], Default::default()).unwrap();
    let job = FeatureJob {
        llama: &p.llama,
        tokenizer: p.tokenizer.clone(),
        sae: &p.sae,
        hook: p.hook,
        corpus: &corpus,
        options: FeatureOptions {
            ctx: 16,
            n_top: 5,
            checkpoint_every: 0,
            ..Default::default()
        },
        out_dir: out,
        provenance: Provenance::default(),
    };
    compute_features(&job, &mut |_| {}).unwrap();
    FeatureStore::open(out).unwrap()
}

/// A venv with sae-dashboard (no dependencies) and numpy, made once under `target/`.
fn venv_python() -> PathBuf {
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
    assert_eq!(heights, rec.n_fires, "every firing is in the histogram");
    assert!(!f0["dataset"].as_str().unwrap().contains('/'));

    let python = venv_python();
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/neuronpedia/check_batches.py");
    let out = Command::new(&python)
        .arg(&checker)
        .arg(&np)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sae-dashboard / converter check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: Value = serde_json::from_slice(&out.stdout).unwrap();
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
