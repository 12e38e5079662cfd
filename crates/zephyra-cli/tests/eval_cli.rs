//! `zephyra eval` and `zephyra plot` end to end on a tiny random Llama: a full run writes the JSON and the
//! table; each bad input the issue lists is a clear error (exit 2, message naming the problem).

mod common;

use std::path::Path;

use common::{fails, ok, run, stderr};
use rand::SeedableRng;
use zephyra_sae::{Architecture, Sae, SaeConfig};

fn save_sae(dir: &Path, d_in: usize, model_name: Option<&str>, hook: &str) {
    save_sae_seeded(dir, d_in, model_name, hook, 5);
}

fn save_sae_seeded(dir: &Path, d_in: usize, model_name: Option<&str>, hook: &str, seed: u64) {
    let mut cfg = SaeConfig::new(d_in, 4 * d_in, Architecture::TopK { k: 4 }).unwrap();
    cfg.metadata.model_name = model_name.map(str::to_string);
    cfg.metadata.hook_name = Some(hook.to_string());
    let sae = Sae::init(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed)).unwrap();
    zephyra_sae::saelens::save(&sae, dir).unwrap();
}

fn corpus(dir: &Path) -> String {
    let p = dir.join("eval.txt");
    let text = "The quick brown fox jumps over the lazy dog. Sparse autoencoders find features.\n"
        .repeat(40);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn eval_then_plot_on_a_tiny_model() {
    let tiny = zephyra_lm::testing::tiny_llama(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    save_sae(
        &run_dir,
        tiny.config.d_model,
        Some("tiny-llama"),
        "blocks.1.hook_resid_pre",
    );
    let data = corpus(tmp.path());
    let model = tiny.path.display().to_string();
    let eval_args = [
        "eval",
        "--sae",
        run_dir.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        &data,
        "--tokens",
        "640",
        "--ctx",
        "32",
        "--ce-tokens",
        "128",
        "--batch-contexts",
        "4",
    ];
    let table = ok(run(eval_args));
    for label in [
        "FVE (centred)",
        "L0 (active latents/token)",
        "CE loss recovered (zero)",
        "KL score (mean)",
        "dead latents",
    ] {
        assert!(table.contains(label), "table lacks {label}:\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["hook"], "blocks.1.hook_resid_pre");
    assert_eq!(json["data"]["selection"], "the given corpus, read as is");
    let f = &json["figures"];
    assert!(f["reconstruction"]["fve"].is_number());
    assert!(f["sparsity"]["l0"].as_f64().unwrap() <= 4.0);
    assert!(f["downstream"]["ce_clean"].as_f64().unwrap() > 0.0);
    assert_eq!(f["exclusion"]["position_zero"].as_u64().unwrap(), 20); // 640 / 32 contexts

    // `--json` prints the same report on stdout; `--out` puts the file elsewhere.
    let other = tmp.path().join("elsewhere.json");
    let with_json = ["--json", "--out", other.to_str().unwrap()];
    let stdout = ok(run(eval_args.iter().chain(&with_json)));
    let printed: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    assert_eq!(printed, written);
    assert_eq!(
        printed["figures"], json["figures"],
        "the same figures as the first run"
    );

    // Plots: a metrics file beside the eval output.
    let mut metrics = String::new();
    for step in 1..=20u64 {
        metrics.push_str(&format!(
            "{{\"step\":{step},\"tokens\":{},\"loss\":{},\"mse\":{},\"sparsity_loss\":0,\"aux_loss\":0,\"l0\":4,\"fve\":{},\"dead_fraction\":0.1,\"lr\":0.0004,\"sparsity_coeff\":0,\"grad_norm\":1,\"skipped_rows\":0,\"tokens_per_s\":1000}}\n",
            step * 1000, 1.0 / step as f64, 0.9 / step as f64, 1.0 - 0.5 / step as f64
        ));
    }
    std::fs::write(run_dir.join("metrics.jsonl"), metrics).unwrap();
    ok(run(["plot", "--run", run_dir.to_str().unwrap()]));
    for f in ["training.png", "training.svg", "density.png", "density.svg"] {
        let p = run_dir.join("plots").join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 5000)
                .unwrap_or(false),
            "{} missing or tiny",
            p.display()
        );
    }
    // Two runs: the scatter.
    let run2 = tmp.path().join("run2");
    std::fs::create_dir_all(&run2).unwrap();
    std::fs::copy(run_dir.join("metrics.jsonl"), run2.join("metrics.jsonl")).unwrap();
    let out = tmp.path().join("all");
    ok(run([
        "plot",
        "--runs",
        run_dir.to_str().unwrap(),
        run2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let png = std::fs::read(out.join("l0_vs_fve.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // Nothing to plot.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = fails(run(["plot", "--run", empty.to_str().unwrap()]));
    assert!(e.contains("nothing to plot"), "{e}");
}

/// `eval --seed-runs`: every SAE is evaluated on the same tokens (its figures equal those of evaluating it
/// alone), gets its own `eval.json`, and the side-by-side report holds each figure's mean ± 95 % interval.
#[test]
fn seed_runs_are_evaluated_alike_and_averaged() {
    let tiny = zephyra_lm::testing::tiny_llama(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let hook = "blocks.1.hook_resid_pre";
    let d = tiny.config.d_model;
    let dirs: Vec<_> = (0..3u64)
        .map(|seed| {
            let dir = tmp.path().join(format!("s{seed}"));
            save_sae_seeded(&dir, d, Some("tiny-llama"), hook, 10 + seed);
            dir
        })
        .collect();
    let data = corpus(tmp.path());
    let model = tiny.path.display().to_string();
    let common = [
        "--model",
        model.as_str(),
        "--data",
        data.as_str(),
        "--tokens",
        "320",
        "--ctx",
        "32",
        "--ce-tokens",
        "64",
        "--batch-contexts",
        "4",
    ];
    let alone = tmp.path().join("alone.json");
    let eval_one = ["eval", "--sae", dirs[2].to_str().unwrap(), "--out"];
    ok(run(eval_one
        .iter()
        .copied()
        .chain([alone.to_str().unwrap()])
        .chain(common)));
    let alone: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&alone).unwrap()).unwrap();

    // `eval --sae dirs[0] --seed-runs SEEDS… COMMON…`
    let with_seeds = |seeds: &[&Path]| {
        let head = ["eval", "--sae", dirs[0].to_str().unwrap(), "--seed-runs"];
        let seeds = seeds.iter().map(|p| p.to_str().unwrap());
        run(head.into_iter().chain(seeds).chain(common))
    };
    let table = ok(with_seeds(&[&dirs[1], &dirs[2]]));
    assert!(table.contains("mean ± 95 % (t, n=3)"), "{table}");
    assert!(table.contains("ce_recovered_zero"), "{table}");
    let seeds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[0].join("eval_seeds.json")).unwrap())
            .unwrap();
    let runs = seeds["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(
        runs[2]["figures"], alone["figures"],
        "a seed run sees the same tokens as an eval of it alone"
    );
    for (dir, run) in dirs.iter().zip(runs) {
        let own: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
        assert_eq!(&own, run, "{} has its own report", dir.display());
    }
    let fves: Vec<f64> = runs
        .iter()
        .map(|r| r["figures"]["reconstruction"]["fve"].as_f64().unwrap())
        .collect();
    assert!(
        fves[0] != fves[1],
        "different SAEs, different FVE: {fves:?}"
    );
    let fve = &seeds["intervals"][0];
    assert_eq!(fve["name"], "fve");
    assert_eq!(fve["n"], 3);
    let mean = fves.iter().sum::<f64>() / 3.0;
    assert!((fve["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    // 95 % half-width with 2 degrees of freedom: t = 4.302653, times s/√3.
    let s = (fves.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let half = fve["half_width"].as_f64().unwrap();
    assert!((half - 4.302_653 * s / 3f64.sqrt()).abs() < 1e-6, "{half}");

    // A seed run of another recipe (another hook) is refused by name before any work.
    let other = tmp.path().join("other");
    save_sae_seeded(&other, d, Some("tiny-llama"), "blocks.0.hook_resid_pre", 3);
    let err = fails(with_seeds(&[&other]));
    assert!(
        err.contains("--seed-runs") && err.contains("blocks.0.hook_resid_pre"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tiny = zephyra_lm::testing::tiny_llama(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = corpus(tmp.path());
    let model = tiny.path.display().to_string();
    let d = tiny.config.d_model;
    // `zephyra eval --sae SAE --model M --data DATA EXTRA…`, which must fail cleanly: its stderr.
    let eval_fails = |sae: &Path, data: &str, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--sae",
            sae.to_str().unwrap(),
            "--model",
            &model,
            "--data",
            data,
        ];
        args.extend_from_slice(extra);
        fails(run(args))
    };

    // d_in does not match the hook's width.
    let narrow = tmp.path().join("narrow");
    save_sae(&narrow, d / 2, None, "blocks.1.hook_resid_pre");
    let e = eval_fails(&narrow, &data, &["--tokens", "64"]);
    assert!(e.contains("d_in = 32") && e.contains("width 64"), "{e}");

    // An SAE from another model.
    let other = tmp.path().join("other");
    save_sae(&other, d, Some("gpt2-small"), "blocks.1.hook_resid_pre");
    let e = eval_fails(&other, &data, &["--tokens", "64"]);
    assert!(e.contains("gpt2-small") && e.contains("--model"), "{e}");

    // An SAE trained on a store harvested from another model (same architecture, other weights).
    let other_model = zephyra_lm::testing::tiny_llama(9).unwrap();
    let store = tmp.path().join("store");
    let o = run([
        "harvest",
        "--model",
        other_model.path.to_str().unwrap(),
        "--hook",
        "blocks.1.hook_resid_pre",
        "--data",
        &data,
        "--tokens",
        "128",
        "--ctx",
        "32",
        "--out",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "harvest: {}", stderr(&o));
    let from_store = tmp.path().join("from-store");
    save_sae(
        &from_store,
        d,
        Some("tiny-llama"),
        "blocks.1.hook_resid_pre",
    );
    let cfg_path = from_store.join("cfg.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["metadata"]["acts"] = serde_json::json!(store.display().to_string());
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = eval_fails(&from_store, &data, &["--tokens", "64"]);
    assert!(
        e.contains("activation store") && e.contains("sha256"),
        "{e}"
    );

    // Zero usable tokens: an empty corpus.
    let fine = tmp.path().join("ok");
    save_sae(&fine, d, Some("tiny-llama"), "blocks.1.hook_resid_pre");
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = eval_fails(&fine, empty.to_str().unwrap(), &["--tokens", "64"]);
    assert!(e.contains("no usable tokens"), "{e}");
    assert!(
        !fine.join("eval.json").exists(),
        "a failed eval must not write eval.json"
    );

    // A hook the model does not have.
    let e = eval_fails(&fine, &data, &["--hook", "blocks.9.hook_resid_pre"]);
    assert!(e.contains("blocks.9"), "{e}");
}
