//! `zephyra synth` → `zephyra train` → `zephyra eval --synth --seed-runs` end to end: a ReLU SAE trained on
//! 64 orthogonal features finds them (MCC > 0.99 on both seeds), and the seed table has its interval.

mod common;

use common::{arg, fails, ok, run};

#[test]
fn synth_train_and_score_two_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = tmp.path().join("synth");
    ok(run([
        "synth",
        "--features",
        "64",
        "--d",
        "64",
        "--orthogonal",
        "--max-prob",
        "0.1",
        "--min-prob",
        "0.02",
        "--rows",
        "24576",
        "--seed",
        "11",
        "--quiet",
        "--out",
        &arg(&synth),
    ]
    .map(String::from)));
    let mut runs = Vec::new();
    for seed in ["0", "1"] {
        let out = tmp.path().join(format!("relu{seed}"));
        ok(run([
            "train",
            "--acts",
            &arg(&synth),
            "--arch",
            "relu",
            "--expansion",
            "1",
            "--lr",
            "1e-3",
            "--l1",
            "0.5",
            "--tokens",
            "768000",
            "--batch-rows",
            "256",
            "--seed",
            seed,
            "--quiet",
            "--out",
            &arg(&out),
        ]
        .map(String::from)));
        runs.push(out);
    }
    let table = ok(run([
        "eval",
        "--sae",
        &arg(&runs[0]),
        "--synth",
        &arg(&synth),
        "--seed-runs",
        &arg(&runs[1]),
    ]
    .map(String::from)));
    assert!(table.contains("mean ± 95 %"), "{table}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("eval_synth.json")).unwrap()).unwrap();
    let saes = json["saes"].as_array().unwrap();
    assert_eq!(saes.len(), 2, "{json}");
    for s in saes {
        let mcc = s["figures"]["mcc"].as_f64().unwrap();
        assert!(mcc > 0.99, "{s}");
    }
    // Each run's intervals are over both runs: the mean is the mean of the two MCCs.
    let mccs: Vec<f64> = saes
        .iter()
        .map(|s| s["figures"]["mcc"].as_f64().unwrap())
        .collect();
    let interval = &json["intervals"][0];
    assert_eq!(interval["name"], "mcc");
    assert!((interval["mean"].as_f64().unwrap() - (mccs[0] + mccs[1]) / 2.0).abs() < 1e-12);
    // --seed-runs has no meaning for a replacement model.
    let err = fails(run([
        "eval",
        "--transcoders",
        &arg(&runs[0]),
        "--seed-runs",
        &arg(&runs[1]),
    ]
    .map(String::from)));
    assert!(
        err.contains("--seed-runs") && err.contains("--transcoders"),
        "{err}"
    );
}
