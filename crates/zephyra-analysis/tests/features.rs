//! Feature statistics on the tiny model with a planted latent (`features::planted`): the pass must find
//! the planted token as the top context and the top logit effect, count its firings exactly, keep the
//! never-firing latents dead, survive an interruption (resume = same bytes), and write a store whose
//! records are found by offset.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use zephyra_analysis::features::planted::{planted, Planted};
use zephyra_analysis::features::{
    compute_features_until, export, hist_bin, FeatureIndex, FeatureJob, FeatureOptions,
    FeatureStore, Provenance,
};
use zephyra_analysis::AnalysisError;
use zephyra_data::Corpus;

fn options() -> FeatureOptions {
    FeatureOptions {
        ctx: 16,
        batch_contexts: 4,
        max_tokens: 1_000_000,
        n_top: 5,
        checkpoint_every: 1,
        ..Default::default()
    }
}

fn run(
    p: &Planted,
    out: &Path,
    opts: FeatureOptions,
    progress: &mut dyn FnMut(&zephyra_analysis::features::FeatureProgress),
) -> zephyra_analysis::Result<FeatureIndex> {
    let provenance = Provenance {
        model: "tiny".into(),
        sae: "planted".into(),
        ..Default::default()
    };
    p.compute_features(&p.sae, opts, out, provenance, progress)
}

/// Occurrences of `token` outside position 0 of the packed contexts: the text is one document followed by
/// EOS, cut into `ctx`-token contexts, the incomplete tail dropped (independent of the pass's shuffling).
fn expected_fires(p: &Planted, ctx: usize) -> (u64, u64) {
    let mut ids = p.tokenizer.encode(&p.text).unwrap();
    ids.push(p.tokenizer.eos_token_id().unwrap());
    let full = ids.len() / ctx * ctx;
    let fires = ids[..full]
        .iter()
        .enumerate()
        .filter(|(i, &t)| i % ctx != 0 && t == p.token)
        .count();
    (fires as u64, full as u64)
}

#[test]
fn planted_latent_is_recovered() {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("features");
    let index = run(&p, &out, options(), &mut |_| {}).unwrap();
    let (fires, n_tokens) = expected_fires(&p, 16);
    assert_eq!(index.n_tokens_read, n_tokens);
    assert!(
        fires >= 10,
        "the corpus should contain the planted token often ({fires})"
    );

    let store = FeatureStore::open(&out).unwrap();
    let rec = store.record(0).unwrap().unwrap();
    assert_eq!(rec.stats.n_fires, fires);
    assert!((rec.stats.density - fires as f64 / index.n_tokens_kept as f64).abs() < 1e-12);
    assert!(
        (rec.stats.max_act - 1.0).abs() < 1e-4,
        "{}",
        rec.stats.max_act
    );
    assert!(
        (rec.stats.mean_act - 1.0).abs() < 1e-4,
        "{}",
        rec.stats.mean_act
    );
    assert_eq!(rec.top.len(), 5);
    for ex in &rec.top {
        assert_eq!(
            ex.token_ids[ex.center as usize], p.token,
            "top context not centred on the planted token"
        );
        assert!((ex.acts[ex.center as usize] - 1.0).abs() < 1e-4);
        // Every other token of the window is either the planted token (activation 1) or silent.
        for (t, a) in ex.token_ids.iter().zip(&ex.acts) {
            assert!(
                if *t == p.token {
                    (*a - 1.0).abs() < 1e-4 || *a == 0.0
                } else {
                    *a == 0.0
                },
                "{t} {a}"
            );
        }
        assert_eq!(ex.tokens.len(), ex.token_ids.len());
    }
    assert_eq!(
        rec.logits_pos[0].id, p.token,
        "the planted direction must promote its token most"
    );
    assert_eq!(
        rec.logits_pos[0].token,
        p.tokenizer.decode(&[p.token]).unwrap()
    );
    assert_eq!(
        rec.histogram.iter().map(|&h| u64::from(h)).sum::<u64>(),
        fires
    );
    // Every activation is 1 (up to rounding): all counts sit in the bins around 1.
    let around_one: u32 = rec.histogram[hist_bin(0.999)..=hist_bin(1.001)]
        .iter()
        .sum();
    assert_eq!(u64::from(around_one), fires);
    assert!(!rec.quantiles.is_empty());
    assert!(
        rec.cofire.is_empty(),
        "nothing fires with the planted latent"
    );
    for id in 1..4 {
        let dead = store.record(id).unwrap().unwrap();
        assert_eq!((dead.stats.n_fires, dead.top.len()), (0, 0));
    }
    assert!(store.record(4).unwrap().is_none());
    let summary = &store.index().features[0];
    assert_eq!(
        summary.top_tokens[0],
        p.tokenizer.decode(&[p.token]).unwrap()
    );
    assert!(
        !out.join("checkpoint.json").exists(),
        "the checkpoint is removed when the pass completes"
    );

    // Neuronpedia export: one batch file with the dashboard fields.
    let np = dir.path().join("np");
    assert_eq!(
        export::export_neuronpedia(&store, &p.tokenizer, &np, "tiny", "set").unwrap(),
        1
    );
    let batch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(np.join("batch-0.json")).unwrap()).unwrap();
    let f0 = &batch["features"][0];
    assert_eq!(f0["feature_index"], 0);
    assert_eq!(
        f0["pos_str"][0],
        serde_json::json!(p.tokenizer.decode(&[p.token]).unwrap())
    );
    assert_eq!(
        f0["activations"].as_array().unwrap().len(),
        5 + rec
            .quantiles
            .iter()
            .map(|g| g.examples.len())
            .sum::<usize>()
    );
    assert_eq!(batch["features"].as_array().unwrap().len(), 4);
}

/// Runs a pass into `out` that panics (a simulated kill) at its `kill_at`-th progress report; true when it
/// was killed rather than finishing first.
fn killed_after(p: &Planted, out: &Path, kill_at: usize) -> bool {
    let mut batches = 0;
    catch_unwind(AssertUnwindSafe(|| {
        run(p, out, options(), &mut |_| {
            batches += 1;
            if batches == kill_at {
                panic!("simulated kill");
            }
        })
    }))
    .is_err()
}

#[test]
fn an_interrupted_pass_resumes_to_the_same_result() {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&p, &a, options(), &mut |_| {}).unwrap();
    assert!(
        killed_after(&p, &b, 4),
        "the pass must be killed at batch 4"
    );
    assert!(b.join("checkpoint.json").exists());
    let mut resumed = false;
    run(&p, &b, options(), &mut |pr| resumed |= pr.resumed).unwrap();
    assert!(resumed, "the second run must start from the checkpoint");
    let ra = std::fs::read(a.join("features.jsonl")).unwrap();
    let rb = std::fs::read(b.join("features.jsonl")).unwrap();
    assert!(
        ra == rb,
        "a resumed pass must write the same records as an uninterrupted one"
    );

    // A checkpoint from other settings is refused with a message, not silently mixed in.
    let c = dir.path().join("c");
    assert!(
        killed_after(&p, &c, 3),
        "the pass must be killed at batch 3"
    );
    let err = run(
        &p,
        &c,
        FeatureOptions {
            n_top: 3,
            ..options()
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn a_cancelled_pass_checkpoints_and_resumes_to_the_same_result() {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // No periodic checkpoints: the one found after the stop is the cancellation's.
    let opts = FeatureOptions {
        checkpoint_every: 0,
        ..options()
    };
    run(&p, &a, opts.clone(), &mut |_| {}).unwrap();
    let corpus =
        Corpus::from_specs(&[p.corpus_path.display().to_string()], Default::default()).unwrap();
    let job = FeatureJob {
        llama: &p.llama,
        tokenizer: p.tokenizer.clone(),
        sae: &p.sae,
        hook: p.hook,
        corpus: &corpus,
        options: opts.clone(),
        out_dir: &b,
        provenance: Provenance {
            model: "tiny".into(),
            sae: "planted".into(),
            ..Default::default()
        },
    };
    let cancel = AtomicBool::new(false);
    let mut reports = 0;
    // The first report comes before any batch; the third, after two batches, asks to stop.
    let err = compute_features_until(&job, &cancel, &mut |_| {
        reports += 1;
        if reports == 3 {
            cancel.store(true, Ordering::Relaxed);
        }
    })
    .unwrap_err();
    match err {
        AnalysisError::Interrupted { n_tokens, .. } => assert_eq!(n_tokens, 2 * 4 * 16),
        other => panic!("expected Interrupted, got {other}"),
    }
    assert!(b.join("checkpoint.json").exists());
    assert!(!b.join("features.jsonl").exists(), "no store half-written");
    let mut resumed = false;
    run(&p, &b, opts, &mut |pr| resumed |= pr.resumed).unwrap();
    assert!(resumed, "the second run must start from the checkpoint");
    assert!(
        std::fs::read(a.join("features.jsonl")).unwrap()
            == std::fs::read(b.join("features.jsonl")).unwrap(),
        "a resumed pass must write the same records as an uninterrupted one"
    );
}

#[test]
fn bad_options_are_refused() {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        FeatureOptions {
            ctx: 1,
            ..options()
        },
        FeatureOptions {
            ctx: 100_000,
            ..options()
        },
        FeatureOptions {
            batch_contexts: 0,
            ..options()
        },
        FeatureOptions {
            max_tokens: 0,
            ..options()
        },
    ] {
        let err = run(&p, dir.path(), opts, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, zephyra_analysis::AnalysisError::InvalidArgument(_)),
            "{err}"
        );
    }
    // A corpus shorter than one context leaves nothing to count.
    let err = run(
        &p,
        dir.path(),
        FeatureOptions {
            ctx: 250,
            ..options()
        },
        &mut |_| {},
    );
    assert!(err.is_ok() || matches!(err, Err(zephyra_analysis::AnalysisError::NoTokens { .. })));
}
