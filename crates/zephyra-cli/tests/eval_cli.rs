//! `zephyra eval` and `zephyra plot` end to end on a tiny random Llama: a full run writes the JSON and the
//! table; each bad input the issue lists is a clear error (exit 2, message naming the problem).

use std::path::Path;
use std::process::{Command, Output};

use rand::SeedableRng;
use zephyra_sae::{Architecture, Sae, SaeConfig};

fn zephyra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zephyra"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn save_sae(dir: &Path, d_in: usize, model_name: Option<&str>, hook: &str) {
    let mut cfg = SaeConfig::new(d_in, 4 * d_in, Architecture::TopK { k: 4 }).unwrap();
    cfg.metadata.model_name = model_name.map(str::to_string);
    cfg.metadata.hook_name = Some(hook.to_string());
    let sae = Sae::init(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5)).unwrap();
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
    let run = tmp.path().join("run");
    save_sae(
        &run,
        tiny.config.d_model,
        Some("tiny-llama"),
        "blocks.1.hook_resid_pre",
    );
    let data = corpus(tmp.path());
    let model = tiny.path.display().to_string();
    let o = zephyra(&[
        "eval",
        "--sae",
        run.to_str().unwrap(),
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
        "--batch",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
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
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["hook"], "blocks.1.hook_resid_pre");
    assert_eq!(json["data"]["selection"], "the given corpus, read as is");
    let f = &json["figures"];
    assert!(f["reconstruction"]["fve"].is_number());
    assert!(f["sparsity"]["l0"].as_f64().unwrap() <= 4.0);
    assert!(f["downstream"]["ce_clean"].as_f64().unwrap() > 0.0);
    assert_eq!(f["exclusion"]["position_zero"].as_u64().unwrap(), 20); // 640 / 32 contexts

    // Plots: a metrics file beside the eval output.
    let mut metrics = String::new();
    for step in 1..=20u64 {
        metrics.push_str(&format!(
            "{{\"step\":{step},\"tokens\":{},\"loss\":{},\"mse\":{},\"sparsity_loss\":0,\"aux_loss\":0,\"l0\":4,\"fve\":{},\"dead_fraction\":0.1,\"lr\":0.0004,\"sparsity_coeff\":0,\"grad_norm\":1,\"skipped_rows\":0,\"tokens_per_s\":1000}}\n",
            step * 1000, 1.0 / step as f64, 0.9 / step as f64, 1.0 - 0.5 / step as f64
        ));
    }
    std::fs::write(run.join("metrics.jsonl"), metrics).unwrap();
    let o = zephyra(&["plot", "--run", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["training.png", "training.svg", "density.png", "density.svg"] {
        let p = run.join("plots").join(f);
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
    std::fs::copy(run.join("metrics.jsonl"), run2.join("metrics.jsonl")).unwrap();
    let out = tmp.path().join("all");
    let o = zephyra(&[
        "plot",
        "--runs",
        run.to_str().unwrap(),
        run2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(out.join("l0_vs_fve.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // Nothing to plot.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = zephyra(&["plot", "--run", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing to plot"), "{}", stderr(&o));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tiny = zephyra_lm::testing::tiny_llama(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = corpus(tmp.path());
    let model = tiny.path.display().to_string();
    let d = tiny.config.d_model;

    // d_in does not match the hook's width.
    let narrow = tmp.path().join("narrow");
    save_sae(&narrow, d / 2, None, "blocks.1.hook_resid_pre");
    let o = zephyra(&[
        "eval",
        "--sae",
        narrow.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        &data,
        "--tokens",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("d_in = 32") && e.contains("width 64"), "{e}");

    // An SAE from another model.
    let other = tmp.path().join("other");
    save_sae(&other, d, Some("gpt2-small"), "blocks.1.hook_resid_pre");
    let o = zephyra(&[
        "eval",
        "--sae",
        other.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        &data,
        "--tokens",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("gpt2-small") && e.contains("--model"), "{e}");

    // An SAE trained on a store harvested from another model (same architecture, other weights).
    let other_model = zephyra_lm::testing::tiny_llama(9).unwrap();
    let store = tmp.path().join("store");
    let o = zephyra(&[
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
    let o = zephyra(&[
        "eval",
        "--sae",
        from_store.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        &data,
        "--tokens",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("activation store") && e.contains("sha256"),
        "{e}"
    );

    // Zero usable tokens: an empty corpus.
    let ok = tmp.path().join("ok");
    save_sae(&ok, d, Some("tiny-llama"), "blocks.1.hook_resid_pre");
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = zephyra(&[
        "eval",
        "--sae",
        ok.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        empty.to_str().unwrap(),
        "--tokens",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no usable tokens"), "{}", stderr(&o));
    assert!(
        !ok.join("eval.json").exists(),
        "a failed eval must not write eval.json"
    );

    // A hook the model does not have.
    let o = zephyra(&[
        "eval",
        "--sae",
        ok.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        &data,
        "--hook",
        "blocks.9.hook_resid_pre",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("blocks.9"), "{}", stderr(&o));
}
