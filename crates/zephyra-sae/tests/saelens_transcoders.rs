//! Transcoders in SAELens 6.54's format, both directions, against SAELens itself (the oracle files and
//! the script that made them: `testdata/make_saelens_transcoders.py`, see `testdata/README.md`):
//! - folders SAELens wrote load here and give SAELens' codes and outputs (skip term included);
//! - folders Zephyra writes are byte for byte the ones SAELens loaded, and SAELens' outputs for them equal
//!   ours;
//! - save → load round-trips every transcoder architecture, TopK included (SAELens has no TopK transcoder:
//!   it is written as `topk_transcoder` with `k`).

use std::path::Path;

use rand::{Rng, SeedableRng};
use zephyra_sae::saelens::{self, read_f32_tensors};
use zephyra_sae::{Architecture, Sae, SaeConfig};

#[path = "../../../testdata/testdata.rs"]
mod testdata;

const D_IN: usize = 8;
const D_OUT: usize = 6;
const D_SAE: usize = 32;

mod common;
use common::{assert_codes_and_output_match, tensor};

/// Compares `sae`'s codes and outputs on the oracle inputs with SAELens' in `folder/expected.safetensors`.
fn assert_matches_saelens(sae: &Sae, folder: &Path) {
    let (xs, x) = tensor(
        &testdata::path("saelens_transcoders/inputs.safetensors"),
        "x",
    );
    let n = xs[0];
    let expected = folder.join("expected.safetensors");
    let (_, want_codes) = tensor(&expected, "codes");
    let (os, want_out) = tensor(&expected, "output");
    assert_eq!(os, vec![n, D_OUT]);
    let codes = sae.encode(&x, n).unwrap();
    let out = sae.transcode(&x, n).unwrap();
    let name = folder.display().to_string();
    assert_eq!(codes.len(), want_codes.len(), "{name}");
    assert_codes_and_output_match(&name, (&codes, &want_codes), (&out, &want_out), 1e-5);
}

#[test]
fn transcoders_written_by_saelens_load_with_saelens_outputs() {
    for (name, skip, jumprelu) in [
        ("transcoder", false, false),
        ("skip_transcoder", true, false),
        ("jumprelu_transcoder", false, true),
        ("jumprelu_skip_transcoder", true, true),
    ] {
        let folder = testdata::path(&format!("saelens_transcoders/saelens/{name}"));
        let sae = saelens::load(&folder).unwrap_or_else(|err| panic!("{name}: {err}"));
        let cfg = &sae.cfg;
        assert!(cfg.is_transcoder(), "{name}");
        assert_eq!(cfg.has_skip(), skip, "{name}");
        assert_eq!((cfg.d_in, cfg.d_out(), cfg.d_sae), (D_IN, D_OUT, D_SAE));
        assert_eq!(
            cfg.architecture == Architecture::JumpRelu,
            jumprelu,
            "{name}"
        );
        assert!(!cfg.apply_b_dec_to_input);
        assert_eq!(
            cfg.metadata.hook_name_out.as_deref(),
            Some("blocks.0.hook_mlp_out")
        );
        assert_eq!(
            cfg.metadata.hook_name.as_deref(),
            Some("blocks.0.ln2.hook_normalized")
        );
        if skip {
            assert!(
                sae.w_skip.iter().all(|&w| w != 0.0),
                "{name}: W_skip not read"
            );
        }
        assert_matches_saelens(&sae, &folder);
    }
}

/// Zephyra's transcoder `name` with deterministic random weights.
fn ours(name: &str) -> Sae {
    let (arch, skip) = match name {
        "relu" => (Architecture::Relu, false),
        "relu_skip" => (Architecture::Relu, true),
        "jumprelu_skip" => (Architecture::JumpRelu, true),
        "batchtopk" => (Architecture::BatchTopK { k: 4 }, false),
        "topk_skip" => (Architecture::TopK { k: 4 }, true),
        other => panic!("no transcoder {other}"),
    };
    let mut cfg = SaeConfig::transcoder(D_IN, D_OUT, D_SAE, arch, skip).unwrap();
    cfg.metadata.hook_name = Some("blocks.1.ln2.hook_normalized".into());
    cfg.metadata.hook_name_out = Some("blocks.1.hook_mlp_out".into());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(name.len() as u64 + 7);
    let mut sae = Sae::init(cfg, &mut rng).unwrap();
    let mut fill = |v: &mut Vec<f32>, a: f32, b: f32| {
        v.iter_mut().for_each(|x| *x = rng.random_range(a..b));
    };
    fill(&mut sae.b_enc, -0.4, 0.2);
    fill(&mut sae.b_dec, -0.5, 0.5);
    fill(&mut sae.w_skip, -0.5, 0.5);
    if arch == Architecture::JumpRelu {
        // Drawn as logarithms, the way the oracle files were made.
        fill(&mut sae.threshold, (0.05f32).ln(), (0.3f32).ln());
        sae.threshold.iter_mut().for_each(|t| *t = t.exp());
    }
    if let Architecture::BatchTopK { .. } = arch {
        sae.update_batchtopk_threshold(0.15, 1.0);
    }
    sae
}

/// The transcoders SAELens can load (TopK has no SAELens class).
const OURS_FOR_SAELENS: [&str; 4] = ["relu", "relu_skip", "jumprelu_skip", "batchtopk"];

#[test]
fn transcoders_written_here_load_in_saelens_with_our_outputs() {
    for name in OURS_FOR_SAELENS {
        let sae = ours(name);
        let tmp = tempfile::tempdir().unwrap();
        saelens::save(&sae, tmp.path()).unwrap();
        let folder = testdata::path(&format!("saelens_transcoders/zephyra/{name}"));
        for file in [saelens::CFG_FILE, saelens::WEIGHTS_FILE] {
            assert!(
                std::fs::read(tmp.path().join(file)).unwrap() == testdata::read(&format!(
                    "saelens_transcoders/zephyra/{name}/{file}"
                )),
                "{name}/{file}: what we write is no longer what SAELens was checked on; regenerate \
                 (testdata/README.md)"
            );
        }
        assert_matches_saelens(&sae, &folder);
    }
}

#[test]
fn save_then_load_round_trips_every_transcoder() {
    for name in [
        "relu",
        "relu_skip",
        "jumprelu_skip",
        "batchtopk",
        "topk_skip",
    ] {
        let sae = ours(name);
        let tmp = tempfile::tempdir().unwrap();
        saelens::save(&sae, tmp.path()).unwrap();
        let back = saelens::load(tmp.path()).unwrap();
        assert_eq!(back.cfg, sae.cfg, "{name}");
        assert_eq!(back.params(), sae.params(), "{name}");
        assert_eq!(back.threshold, sae.threshold, "{name}");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join(saelens::CFG_FILE)).unwrap())
                .unwrap();
        assert_eq!(cfg["d_out"], D_OUT);
        assert_eq!(cfg["apply_b_dec_to_input"], false);
        assert_eq!(cfg["metadata"]["hook_name_out"], "blocks.1.hook_mlp_out");
        if name == "topk_skip" {
            assert_eq!(cfg["architecture"], "topk_skip_transcoder");
            assert_eq!(cfg["k"], 4);
        }
    }
}

#[test]
fn a_skip_transcoder_without_w_skip_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sae = ours("relu_skip");
    saelens::save(&sae, tmp.path()).unwrap();
    let weights = tmp.path().join(saelens::WEIGHTS_FILE);
    let tensors = read_f32_tensors(&weights).unwrap();
    let kept: Vec<(&str, Vec<usize>, &[f32])> = tensors
        .iter()
        .filter(|(n, _)| n.as_str() != "W_skip")
        .map(|(n, (s, v))| (n.as_str(), s.clone(), v.as_slice()))
        .collect();
    saelens::write_f32_tensors(&weights, &kept).unwrap();
    let err = saelens::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("W_skip"), "{err}");
}

/// Writes `testdata/saelens_transcoders/zephyra/` (then run the script's `zephyra` step).
#[test]
#[ignore = "writes the oracle inputs into testdata/; run by hand when the format changes"]
fn write_zephyra_fixtures() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/saelens_transcoders/zephyra");
    for name in OURS_FOR_SAELENS {
        saelens::save(&ours(name), &root.join(name)).unwrap();
    }
}
