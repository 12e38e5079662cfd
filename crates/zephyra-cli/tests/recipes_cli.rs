//! `zephyra train` with issue 17's architectures and recipes: `--arch matryoshka --groups` (SAELens
//! layout, per-prefix FVE in summary.json), jumprelu's `--target-l0` / `--jumprelu-sparsity tanh`, and
//! their flags refused where they do not apply.

mod common;

use std::path::Path;
use std::process::Output;

use common::{args_with, fails, ok, run, write_npy};

fn acts(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("acts.npy");
    let mut lcg = common::Lcg(17);
    write_npy(&path, 600, 16, |r, row| {
        // A few directions, sparsely mixed: something to reconstruct.
        for (j, v) in row.iter_mut().enumerate() {
            *v = if (r + j) % 5 == 0 { 1.0 } else { 0.0 } + 0.1 * lcg.centred();
        }
    });
    path
}

fn train(acts: &Path, out: &Path, flags: &str) -> Output {
    run(args_with(
        &format!("train --expansion 4 --batch-rows 64 --tokens 1280 --threads 1 --holdout 64 --quiet --json {flags}"),
        &[("--acts", acts), ("--out", out)],
    ))
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn matryoshka_trains_saves_for_saelens_and_reports_each_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acts = acts(dir.path());
    let out = dir.path().join("m");
    ok(train(
        &acts,
        &out,
        "--arch matryoshka --k 4 --groups 4,16,64",
    ));
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["arch"], "matryoshka");
    let prefixes = summary["prefix_fve"].as_array().expect("prefix_fve");
    let widths: Vec<u64> = prefixes
        .iter()
        .filter_map(|p| p["width"].as_u64())
        .collect();
    assert_eq!(widths, vec![4, 16, 64]);
    let fve: Vec<f64> = prefixes.iter().filter_map(|p| p["fve"].as_f64()).collect();
    assert!(fve.len() == 3 && fve[0] < fve[2], "{fve:?}");
    let cfg = json(&out.join("cfg.json"));
    assert_eq!(cfg["architecture"], "jumprelu");
    assert_eq!(
        cfg["metadata"]["training_architecture"],
        "matryoshka_batchtopk"
    );
    assert_eq!(
        cfg["metadata"]["training_architecture_details"]["matryoshka_widths"],
        serde_json::json!([4, 16, 64])
    );
    // Resuming with other groups is refused by name.
    let err = fails(run(args_with(
        "train --groups 8,16,64 --quiet",
        &[("--acts", &acts), ("--resume", &out)],
    )));
    assert!(err.contains("--groups"), "{err}");
    // So is another AuxK residual (the run trained with the whole one).
    let err = fails(run(args_with(
        "train --matryoshka-aux per-level --quiet",
        &[("--acts", &acts), ("--resume", &out)],
    )));
    assert!(err.contains("--matryoshka-aux"), "{err}");

    // Default groups: d_sae/64, /16, /4, d_sae of d_sae = 64 → 1, 4, 16, 64.
    let out = dir.path().join("d");
    ok(train(&acts, &out, "--arch matryoshka --k 4"));
    let widths: Vec<u64> = json(&out.join("summary.json"))["prefix_fve"]
        .as_array()
        .expect("prefix_fve")
        .iter()
        .filter_map(|p| p["width"].as_u64())
        .collect();
    assert_eq!(widths, vec![1, 4, 16, 64]);
}

#[test]
fn jumprelu_recipes_train_and_resume_checks_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acts = acts(dir.path());
    for (name, flags) in [
        (
            "q",
            "--arch jumprelu --target-l0 6 --l0-coeff 0.5 --jumprelu-bandwidth 0.05",
        ),
        (
            "t",
            "--arch jumprelu --jumprelu-sparsity tanh --tanh-coeff 0.2 --pre-act-coeff 1e-4",
        ),
    ] {
        let out = dir.path().join(name);
        ok(train(&acts, &out, flags));
        let last = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
        let rec: serde_json::Value =
            serde_json::from_str(last.lines().last().expect("a line")).expect("json");
        let coeff = rec["sparsity_coeff"].as_f64().expect("sparsity_coeff");
        let want = if name == "q" { 0.5 } else { 0.2 };
        assert!((coeff - want).abs() < 1e-6, "{flags}: λ {coeff}");
        assert!(
            rec["sparsity_loss"].as_f64().expect("sparsity_loss") > 0.0,
            "{flags}"
        );
    }
    let err = fails(run(args_with(
        "train --target-l0 9 --quiet",
        &[("--acts", &acts), ("--resume", &dir.path().join("q"))],
    )));
    assert!(err.contains("--jumprelu-sparsity"), "{err}");
    // The bandwidth is part of the recipe: resuming with another is refused by name, the same one runs on.
    let err = fails(run(args_with(
        "train --jumprelu-bandwidth 0.1 --quiet",
        &[("--acts", &acts), ("--resume", &dir.path().join("q"))],
    )));
    assert!(err.contains("--jumprelu-bandwidth"), "{err}");
    let err = fails(run(args_with(
        "train --jumprelu-init-threshold 0.5 --quiet",
        &[("--acts", &acts), ("--resume", &dir.path().join("q"))],
    )));
    assert!(err.contains("--jumprelu-init-threshold"), "{err}");
    // --target-l0 trains the thresholds at 30× the learning rate unless told otherwise: the checkpoint
    // records 30, so resuming at 1 (the rate of every other recipe) is refused, naming both.
    let err = fails(run(args_with(
        "train --threshold-lr-scale 1 --quiet",
        &[("--acts", &acts), ("--resume", &dir.path().join("q"))],
    )));
    assert!(
        err.contains("--threshold-lr-scale") && err.contains("30"),
        "{err}"
    );
}

/// Quadratic L0 starts its thresholds at the target's firing rate by default: the first logged L0 is near
/// the target, where the standard 0.001 start fires on most latents and is still far off.
#[test]
fn quadratic_l0_starts_at_its_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acts = acts(dir.path());
    let first_l0 = |name: &str, flags: &str| {
        let out = dir.path().join(name);
        ok(train(
            &acts,
            &out,
            &format!("--arch jumprelu --target-l0 6 --metrics-every 1 {flags}"),
        ));
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
        let rec: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        (rec["l0"].as_f64().expect("l0"), json(&out.join("cfg.json")))
    };
    let (auto, _) = first_l0("auto", "");
    let (spelled, _) = first_l0("spelled", "--jumprelu-init-threshold target-rate");
    let (standard, _) = first_l0("standard", "--jumprelu-init-threshold 0.001");
    assert!((auto - 6.0).abs() < 2.0, "target-rate start: L0 {auto}");
    assert_eq!(auto, spelled, "target-rate is the default with --target-l0");
    assert!(standard > 15.0, "0.001 start: L0 {standard}");
}

#[test]
fn recipe_flags_are_refused_where_they_do_not_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acts = acts(dir.path());
    let out = dir.path().join("never");
    for (flags, needle) in [
        (
            "--arch topk --groups 4,64",
            "--groups sets the nested prefixes",
        ),
        (
            "--arch matryoshka --groups 4,16",
            "the last width must equal d_sae = 64",
        ),
        ("--arch matryoshka --groups 16,4,64", "strictly increasing"),
        (
            "--arch batchtopk --k 4 --matryoshka-aux per-level",
            "per-level AuxK needs the levels of --arch matryoshka",
        ),
        ("--arch relu --target-l0 5", "use --arch jumprelu"),
        (
            "--arch topk --k 4 --jumprelu-bandwidth 0.05",
            "use --arch jumprelu",
        ),
        (
            "--arch jumprelu --jumprelu-sparsity tanh --l0-coeff 1",
            "--tanh-coeff",
        ),
        (
            "--arch jumprelu --jumprelu-sparsity quadratic-l0",
            "needs --target-l0",
        ),
        ("--arch jumprelu --target-l0 65", "at most d_sae = 64"),
        (
            "--arch jumprelu --tanh-scale 2",
            "--tanh-scale is the scale of",
        ),
        (
            "--arch jumprelu --jumprelu-init-threshold target-rate",
            "which has no target",
        ),
        (
            "--arch topk --k 4 --jumprelu-init-threshold 0.01",
            "use --arch jumprelu",
        ),
        (
            "--arch jumprelu --jumprelu-init-threshold -1",
            "neither `target-rate` nor a threshold",
        ),
        (
            "--arch topk --k 4 --threshold-lr-scale 10",
            "--threshold-lr-scale set jumprelu's",
        ),
        (
            "--arch jumprelu --threshold-lr-scale 0",
            "--threshold-lr-scale",
        ),
    ] {
        let refused = train(&acts, &out, flags);
        let (err, left) = (fails(refused), out.exists());
        assert!(
            err.contains(needle) && !left,
            "{flags} (left a run: {left}): {err}"
        );
    }
}
