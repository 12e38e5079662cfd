//! `zephyra features`, `steer`, `explain` and `serve` end to end on the tiny model with a planted latent
//! (the SAE saved in the SAELens layout, the model given as a GGUF path).

mod common;

use common::{fails, ok, run, words, Server};
use zephyra_analysis::features::planted::planted;

#[test]
fn features_steer_explain_and_serve() {
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let sae_dir = dir.path().join("sae");
    zephyra_sae::saelens::save(&p.sae, &sae_dir).unwrap();
    let model = p.tiny.path.display().to_string();
    let corpus = p.corpus_path.display().to_string();
    let sae = sae_dir.display().to_string();

    // `zephyra CMD --sae SAE --model MODEL REST…`
    let on_sae = |cmd: &str, rest: &[&str]| {
        let mut args = vec![cmd, "--sae", &sae, "--model", &model];
        args.extend_from_slice(rest);
        run(args)
    };

    let np = dir.path().join("np").display().to_string();
    let features = words("--ctx 16 --tokens 100000 --export-neuronpedia");
    let mut rest: Vec<&str> = features.iter().map(String::as_str).collect();
    rest.extend([np.as_str(), "--data", &corpus]);
    let stdout = ok(on_sae("features", &rest));
    assert!(
        stdout.contains("4 features") && stdout.contains("1 alive"),
        "{stdout}"
    );
    assert!(
        sae_dir.join("features/index.json").exists() && dir.path().join("np/batch-0.json").exists()
    );

    let steer = |feature: &str, strength: &str, rest: &[&str]| {
        let mut args = vec![
            "--feature",
            feature,
            "--strength",
            strength,
            "--prompt",
            "the cat",
        ];
        args.extend_from_slice(rest);
        on_sae("steer", &args)
    };
    let stdout = ok(steer("0", "0", &["--max-tokens", "8", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["steered"], j["unsteered"]);

    let e = fails(steer("9", "1", &[]));
    assert!(e.contains("feature 9 does not exist"), "{e}");

    let stdout = ok(on_sae("explain", &["--text", "six boxes", "--json"]));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), p.tokenizer.encode("six boxes").unwrap().len());
    assert!(lines.iter().any(|t| t["features"][0]["id"] == 0));

    // serve: binds 127.0.0.1 on a free port, prints the URL, answers HTTP.
    let server = Server::start(&["serve", "--sae", &sae, "--model", &model, "--port", "0"]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let resp = server.get("/api/feature/0");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"logits_pos\""));
}
