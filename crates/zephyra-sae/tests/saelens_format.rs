//! SAELens files: loading SAEs saved by SAELens 6.54 reproduces SAELens' codes and reconstructions;
//! save → load round-trips; bad files give clear errors.

use rand::SeedableRng;
use zephyra_sae::saelens;
use zephyra_sae::{Architecture, Sae, SaeConfig, SaeError};

#[path = "../../../testdata/testdata.rs"]
mod testdata;

mod common;
use common::{assert_codes_and_output_match, every_architecture, tensor};

#[test]
fn loading_saelens_folders_reproduces_saelens_codes_and_reconstructions() {
    // The SAELens oracle (see testdata/README.md).
    let root = testdata::path("saelens");
    let (xs, x) = tensor(&root.join("inputs.safetensors"), "x");
    let n = xs[0];
    for name in ["standard", "topk", "jumprelu", "gated"] {
        let sae = saelens::load(&root.join(name)).unwrap_or_else(|err| panic!("{err}"));
        assert!(
            sae.cfg.apply_b_dec_to_input,
            "{name}: the oracle files subtract b_dec"
        );
        let (cs, want_codes) = tensor(&root.join(name).join("expected.safetensors"), "codes");
        let (_, want_rec) = tensor(
            &root.join(name).join("expected.safetensors"),
            "reconstruction",
        );
        assert_eq!(cs, vec![n, sae.cfg.d_sae]);
        let codes = sae.encode(&x, n).unwrap();
        let rec = sae.decode(&codes, n).unwrap();
        assert_codes_and_output_match(name, (&codes, &want_codes), (&rec, &want_rec), 1e-4);
    }
}

#[test]
fn save_then_load_round_trips_every_architecture() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for arch in every_architecture(3, &[2, 6, 12]) {
        let mut cfg = SaeConfig::new(5, 12, arch).unwrap();
        cfg.metadata.model_name = Some("smollm2".into());
        cfg.metadata.hook_name = Some("blocks.3.hook_resid_post".into());
        cfg.metadata.context_size = Some(128);
        let mut sae = Sae::init(cfg, &mut rng).unwrap();
        for (k, v) in sae.b_dec.iter_mut().enumerate() {
            *v = 0.1 * k as f32;
        }
        for (k, v) in sae
            .b_gate
            .iter_mut()
            .chain(sae.r_mag.iter_mut())
            .chain(sae.b_mag.iter_mut())
            .enumerate()
        {
            *v = 0.01 * k as f32 - 0.1;
        }
        sae.update_batchtopk_threshold(0.25, 0.5);
        let dir = tempfile::tempdir().unwrap();
        saelens::save(&sae, dir.path()).unwrap();
        let back = saelens::load(dir.path()).unwrap();
        assert_eq!(back.cfg, sae.cfg, "{arch}");
        assert_eq!(back.w_enc, sae.w_enc, "{arch}");
        assert_eq!(back.w_dec, sae.w_dec, "{arch}");
        assert_eq!(back.b_dec, sae.b_dec, "{arch}");
        assert_eq!(back.b_enc, sae.b_enc, "{arch}");
        assert_eq!(back.b_gate, sae.b_gate, "{arch}");
        for (a, b) in back.threshold.iter().zip(&sae.threshold) {
            assert!(
                (a - b).abs() <= 1e-7 * b.abs().max(1e-3),
                "{arch}: threshold {a} vs {b}"
            );
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("cfg.json")).unwrap())
                .unwrap();
        let want = match arch {
            Architecture::Relu | Architecture::ReluUnit => "standard",
            Architecture::TopK { .. } => "topk",
            Architecture::BatchTopK { .. }
            | Architecture::JumpRelu
            | Architecture::Matryoshka { .. } => "jumprelu",
            Architecture::Gated => "gated",
        };
        assert_eq!(cfg["architecture"], want);
        assert_eq!(cfg["metadata"]["hook_name"], "blocks.3.hook_resid_post");
        assert_eq!(cfg["metadata"]["context_size"], 128);
        // Same codes after the round trip.
        let x: Vec<f32> = (0..4 * 5).map(|i| (i as f32 * 0.7).sin()).collect();
        assert_eq!(
            back.encode(&x, 4).unwrap(),
            sae.encode(&x, 4).unwrap(),
            "{arch}"
        );
    }
}

fn copy_reference(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cfg.json", "sae_weights.safetensors"] {
        let src = testdata::path(&format!("saelens/{name}/{f}"));
        std::fs::copy(&src, dir.path().join(f))
            .unwrap_or_else(|err| panic!("copying {}: {err}", src.display()));
    }
    dir
}

/// The error loading reference folder `name` after replacing `from` with `to` in its cfg.json.
fn load_edited(name: &str, from: &str, to: &str) -> SaeError {
    let dir = copy_reference(name);
    let p = dir.path().join("cfg.json");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{name}'s cfg.json has no {from}");
    std::fs::write(&p, text.replace(from, to)).unwrap();
    saelens::load(dir.path()).unwrap_err()
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    // (`matryoshka_batchtopk`, the example here before issue 17, is now supported.)
    let err = load_edited("standard", "\"standard\"", "\"matching_pursuit\"");
    assert!(
        matches!(err, SaeError::UnknownArchitecture(ref a) if a == "matching_pursuit"),
        "{err}"
    );
    assert!(err.to_string().contains("supported are"), "{err}");
}

#[test]
fn truncated_weights_file_is_a_clear_error() {
    let dir = copy_reference("topk");
    let p = dir.path().join("sae_weights.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let err = saelens::load(dir.path()).unwrap_err();
    assert!(matches!(err, SaeError::Format { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn wrong_shapes_and_missing_tensors_are_clear_errors() {
    // d_sae in cfg.json disagrees with the tensors.
    let err = load_edited("jumprelu", "\"d_sae\": 64", "\"d_sae\": 65");
    assert!(
        matches!(err, SaeError::ShapeMismatch { ref expected, ref got, .. } if expected == &vec![16, 65] && got == &vec![16, 64]),
        "{err}"
    );

    // A gated cfg over standard weights: b_gate missing.
    let err = load_edited("standard", "\"standard\"", "\"gated\"");
    assert!(
        matches!(err, SaeError::MissingTensor { ref name, .. } if name == "b_gate"),
        "{err}"
    );

    // topk with k ≥ d_sae.
    let err = load_edited("topk", "\"k\": 4", "\"k\": 64");
    assert!(matches!(err, SaeError::InvalidConfig { .. }), "{err}");
}

#[test]
fn save_does_not_leave_partial_files_and_overwrites_atomically() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let sae = Sae::init(SaeConfig::new(4, 8, Architecture::Relu).unwrap(), &mut rng).unwrap();
    let dir = tempfile::tempdir().unwrap();
    saelens::save(&sae, dir.path()).unwrap();
    saelens::save(&sae, dir.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["cfg.json", "sae_weights.safetensors"]);
}
