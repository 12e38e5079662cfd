//! `zephyra attribute`, `features` on a transcoder and `serve --transcoders` end to end, on the tiny model
//! (a GGUF the test writes) with per-layer transcoders the test writes in the SAELens layout: the graph
//! file, the real-model check recomputed here with the features' contributions removed by hand, the
//! features pass reading the transcoder's input hook, and the graph served.

mod common;

use std::path::Path;

use candle_core::Tensor;
use common::{fails, ok, run, Server};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use zephyra_analysis::attribution::intervene::demeaned;
use zephyra_analysis::features::planted::{planted, Planted};
use zephyra_lm::model::Logits;
use zephyra_lm::{HookPoint, Hooks, Llama, Tokenizer};
use zephyra_sae::{Architecture, Sae, SaeConfig, SaeOf};

const PROMPT: &str = "the cat sat on the";

/// Random TopK transcoders for every layer of `model`, saved as `dir/layer-{l}/`.
fn write_transcoders(model: &Llama, dir: &Path) -> Vec<Sae> {
    let cfg = model.config();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    (0..cfg.n_layers)
        .map(|l| {
            let mut c = SaeConfig::transcoder(
                cfg.d_model,
                cfg.d_model,
                2 * cfg.d_model,
                Architecture::TopK { k: 4 },
                true,
            )
            .unwrap();
            c.metadata.hook_name = Some(format!("blocks.{l}.ln2.hook_normalized"));
            c.metadata.hook_name_out = Some(format!("blocks.{l}.hook_mlp_out"));
            // As `zephyra train` saves them: the input scale folded into the weights and recorded.
            c.normalization_factor = Some(0.5);
            let sae: Sae = SaeOf::<f32>::init(c, &mut rng).unwrap();
            zephyra_sae::saelens::save(&sae, &dir.join(format!("layer-{l}"))).unwrap();
            sae
        })
        .collect()
}

/// The planted tiny model with random transcoders written to `DIR/tc` (a temporary directory).
struct WithTranscoders {
    p: Planted,
    dir: tempfile::TempDir,
    tc_dir: std::path::PathBuf,
    tcs: Vec<Sae>,
}

fn with_transcoders() -> WithTranscoders {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let tc_dir = dir.path().join("tc");
    let tcs = write_transcoders(&p.llama, &tc_dir);
    WithTranscoders {
        p,
        dir,
        tc_dir,
        tcs,
    }
}

/// The model's last-position logits with each `(layer, pos, feature, activation)` feature's decoder row
/// times its activation subtracted from that layer's `hook_mlp_out`, by hand in replace hooks.
fn ablated_logits(
    model: &Llama,
    tcs: &[Sae],
    tokens: &[u32],
    ablate: &[(usize, usize, usize, f32)],
) -> Vec<f32> {
    let d = model.config().d_model;
    let mut hooks = Hooks::new();
    for (l, tc) in tcs.iter().enumerate() {
        let rows: Vec<(usize, Vec<f32>)> = ablate
            .iter()
            .filter(|a| a.0 == l)
            .map(|&(_, p, f, act)| {
                (
                    p,
                    tc.w_dec[f * d..(f + 1) * d]
                        .iter()
                        .map(|w| w * act)
                        .collect(),
                )
            })
            .collect();
        hooks.replace(HookPoint::MlpOut(l), move |_, t: &Tensor| {
            let dims = t.dims().to_vec();
            let mut v = t.flatten_all()?.to_vec1::<f32>()?;
            for (p, row) in &rows {
                v[p * d..(p + 1) * d]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(x, r)| *x -= r);
            }
            Ok(Tensor::from_vec(v, dims, t.device())?)
        });
    }
    let out = model.forward(&[tokens], &mut hooks, Logits::Last).unwrap();
    let rows: Vec<Vec<f32>> = out.logits.unwrap().to_vec2().unwrap(); // [1, vocab]
    rows.into_iter().next().unwrap()
}

/// `zephyra attribute` of [`PROMPT`] on `model` through `tc`, writing `out`, then `extra`.
fn attribute_args(model: &str, tc: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let base = [
        "attribute",
        "--model",
        model,
        "--transcoders",
        tc,
        "--prompt",
        PROMPT,
        "--out",
        out,
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

#[test]
fn attribute_checks_in_the_real_model_and_serve_shows_the_graph() {
    // `_dir` keeps the temporary directory until the test ends.
    let WithTranscoders {
        p,
        dir: _dir,
        tc_dir,
        tcs,
    } = with_transcoders();
    let model = p.tiny.path.display().to_string();
    let tc = tc_dir.display().to_string();
    let out = tc_dir.join("graphs/france.json");
    let out_s = out.display().to_string();
    let args = attribute_args(&model, &tc, &out_s, &["--ablate", "3", "--json"]);
    let summary: Value = serde_json::from_str(ok(run(&args)).trim()).unwrap();
    let file: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(file["metadata"]["slug"], "france");
    assert_eq!(
        summary["n_nodes_pruned"],
        file["nodes"].as_array().unwrap().len()
    );
    assert!(
        summary["max_abs_logit_error"].as_f64().unwrap() < 1e-3,
        "{summary}"
    );

    // The check: 3 features ablated; their effect on the target recomputed here.
    let check = &summary["check"];
    let ablated: Vec<(usize, usize, usize, f32)> = check["ablated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["scale"], 0.0);
            let u = |k: &str| e[k].as_u64().unwrap() as usize;
            (
                u("layer"),
                u("pos"),
                u("feature"),
                e["activation"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(ablated.len(), 3);
    let tokens = Tokenizer::from_gguf(&p.tiny.path)
        .unwrap()
        .encode(PROMPT)
        .unwrap();
    let before = ablated_logits(&p.llama, &tcs, &tokens, &[]);
    let after = ablated_logits(&p.llama, &tcs, &tokens, &ablated);
    let target = (0..before.len())
        .max_by(|&a, &b| before[a].total_cmp(&before[b]))
        .unwrap();
    let want = demeaned(&after, target as u32) - demeaned(&before, target as u32);
    let got = check["real_change"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    assert!((check["before"].as_f64().unwrap() - demeaned(&before, target as u32)).abs() < 1e-4);
    assert!(
        check["predicted_direct"].as_f64().unwrap().is_finite()
            && check["predicted"].as_f64().unwrap().is_finite()
    );
    let printed = ok(run(&args[..args.len() - 1]));
    assert!(
        printed.contains("check: ablating the 3 most influential features"),
        "{printed}"
    );

    // Missing layers are refused, naming them.
    std::fs::remove_dir_all(tc_dir.join("layer-1")).unwrap();
    let err = fails(run(&args));
    assert!(
        err.contains("zephyra train --transcoder --layers all"),
        "{err}"
    );
    zephyra_sae::saelens::save(&tcs[1], &tc_dir.join("layer-1")).unwrap();

    // `features` on a transcoder: the pass reads its input hook.
    let corpus = p.corpus_path.display().to_string();
    let layer0 = tc_dir.join("layer-0").display().to_string();
    ok(run([
        "features", "--sae", &layer0, "--model", &model, "--data", &corpus, "--ctx", "16",
        "--tokens", "20000",
    ]));
    let index: Value =
        serde_json::from_slice(&std::fs::read(tc_dir.join("layer-0/features/index.json")).unwrap())
            .unwrap();
    assert_eq!(index["hook"], "blocks.0.ln2.hook_normalized");

    // `serve --transcoders` without --sae: the graphs, the layer's features and the model.
    let server = Server::start(&[
        "serve",
        "--transcoders",
        &tc,
        "--model",
        &model,
        "--port",
        "0",
    ]);
    assert!(server.url.ends_with("/graphs"), "{}", server.url);
    let list = server.get("/api/graphs");
    assert!(
        list.starts_with("HTTP/1.1 200")
            && list.contains("\"france\"")
            && list.contains("\"can_make\":true"),
        "{list}"
    );
    assert!(server
        .get("/api/layer/0/info")
        .contains("blocks.0.ln2.hook_normalized"));
    assert!(server.get("/api/layer/1/info").starts_with("HTTP/1.1 404"));
    drop(server);
    let err = fails(run(["serve", "--model", &model, "--port", "0"]));
    assert!(
        err.contains("--sae DIR") && err.contains("--transcoders DIR"),
        "{err}"
    );
}

#[test]
fn a_missing_layer_is_refused_unless_allowed_and_then_has_no_features() {
    let WithTranscoders { p, dir, tc_dir, .. } = with_transcoders();
    std::fs::remove_dir_all(tc_dir.join("layer-0")).unwrap();
    let model = p.tiny.path.display().to_string();
    let tc = tc_dir.display().to_string();
    let out = dir.path().join("g.json");
    let out_s = out.display().to_string();
    let args = attribute_args(&model, &tc, &out_s, &["--json"]);
    let err = fails(run(&args));
    assert!(
        err.contains("no transcoder for layers [0]") && err.contains("--allow-missing-layers"),
        "{err}"
    );
    assert!(!out.exists());
    let summary: Value = serde_json::from_str(
        ok(run(args
            .iter()
            .map(String::as_str)
            .chain(["--allow-missing-layers"])))
        .trim(),
    )
    .unwrap();
    // Layer 0's MLP is all error: the local replacement model stays exact, and no feature is from layer 0.
    assert!(
        summary["max_abs_logit_error"].as_f64().unwrap() < 1e-3,
        "{summary}"
    );
    let file: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let nodes = file["nodes"].as_array().unwrap();
    assert!(
        summary["n_feature_nodes"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(nodes
        .iter()
        .filter(|n| n["feature_type"] == "cross layer transcoder")
        .all(|n| n["layer"] != "0"));
}

#[test]
fn eval_transcoders_takes_its_figures_on_the_rows_the_training_rule_keeps() {
    let WithTranscoders { p, dir, tc_dir, .. } = with_transcoders();
    let (model, tc) = (p.tiny.path.display(), tc_dir.display());
    let corpus = p.corpus_path.display().to_string();
    let out = dir.path().join("eval.json");
    #[rustfmt::skip]
    let args = [
        "eval", "--transcoders", &tc.to_string(), "--model", &model.to_string(), "--data", &corpus,
        "--ctx", "16", "--tokens", "512", "--ce-tokens", "64", "--out", &out.display().to_string(), "--json",
    ];
    let report: Value = serde_json::from_str(ok(run(args)).trim()).unwrap();
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report, on_disk);
    let rule = report["exclusion_rule"].as_str().unwrap();
    assert!(
        rule.contains("position 0") && rule.contains("special tokens") && rule.contains("10 x"),
        "{rule}"
    );
    let f = &report["figures"];
    let n_layers = p.llama.config().n_layers;
    assert_eq!(f["layers"].as_array().unwrap().len(), n_layers);
    // Every context loses at least its position 0: at most 15 of each 16 tokens are figures' rows.
    let (n_rows, n_contexts) = (
        f["n_tokens"].as_u64().unwrap(),
        report["n_contexts"].as_u64().unwrap(),
    );
    assert!(n_rows > 0 && n_rows <= 15 * n_contexts, "{report}");
    let all = &f["all"];
    for key in [
        "ce_clean",
        "ce_replaced",
        "ce_mean_ablated",
        "delta_lm_loss",
    ] {
        assert!(
            all[key].as_f64().is_some_and(f64::is_finite),
            "{key}: {all}"
        );
    }
}
