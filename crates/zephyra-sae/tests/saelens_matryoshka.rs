//! Matryoshka BatchTopK in SAELens' files, both ways (issue 17, part 1), against files SAELens 6.54 wrote
//! and read itself (`testdata/saelens/make_matryoshka.py`): its inference save and its training save load
//! as `matryoshka` and reproduce its codes; our training pass on its training SAE gives its BatchTopK
//! codes, its per-prefix losses and its threshold update; the folder we save is read by SAELens with the
//! codes we compute.

use rand::{Rng, SeedableRng};
use zephyra_sae::saelens;
use zephyra_sae::{Architecture, Gradients, Sae, SaeConfig, StepConfig, Workspace};

#[path = "../../../testdata/testdata.rs"]
mod testdata;

mod common;

fn tensor(rel: &str, name: &str) -> Vec<f32> {
    common::tensor(&testdata::path(rel), name).1
}

fn inputs() -> Vec<f32> {
    tensor("saelens/inputs.safetensors", "x")
}

fn assert_all_close(what: &str, got: &[f32], want: &[f32]) {
    common::assert_matches_oracle(what, got, want, 1e-4);
}

fn saelens_arch() -> Architecture {
    common::matryoshka(4, &[8, 24, 64])
}

#[test]
fn saelens_inference_and_training_saves_load_and_reproduce_its_codes() {
    let x = inputs();
    let n = x.len() / 16;
    let want = tensor("saelens/matryoshka/expected.safetensors", "codes");
    let want_rec = tensor("saelens/matryoshka/expected.safetensors", "reconstruction");
    for folder in ["matryoshka", "matryoshka_training"] {
        let sae = saelens::load(&testdata::path(&format!("saelens/{folder}")))
            .unwrap_or_else(|err| panic!("{folder}: {err}"));
        assert_eq!(sae.cfg.architecture, saelens_arch(), "{folder}");
        assert!(sae.threshold.iter().all(|&t| t == 0.9), "{folder}");
        let codes = sae.encode(&x, n).unwrap();
        let active = want.iter().filter(|&&v| v != 0.0).count();
        assert!(active > 0 && active < want.len(), "a vacuous oracle");
        assert_all_close(&format!("{folder} codes"), &codes, &want);
        assert_all_close(
            &format!("{folder} reconstruction"),
            &sae.decode(&codes, n).unwrap(),
            &want_rec,
        );
    }
}

#[test]
fn saelens_default_rescaled_saves_load_with_the_norms_folded_and_reproduce_its_codes() {
    // `rescale_acts_by_decoder_norm: true` (SAELens' default) and decoder rows of norms 0.05 … 1.85: the
    // training save keeps the norms (we fold them at load), the inference save arrives folded.
    let x = inputs();
    let n = x.len() / 16;
    let want = tensor("saelens/matryoshka_rescaled/expected.safetensors", "codes");
    let want_rec = tensor(
        "saelens/matryoshka_rescaled/expected.safetensors",
        "reconstruction",
    );
    let active = want.iter().filter(|&&v| v != 0.0).count();
    assert!(active > 0 && active < want.len(), "a vacuous oracle");
    let unfolded = tensor(
        "saelens/matryoshka_rescaled_training/sae_weights.safetensors",
        "W_dec",
    );
    let first_norm = unfolded[..16].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(
        (first_norm - 0.05).abs() < 1e-4,
        "the training save keeps the norms"
    );
    for folder in ["matryoshka_rescaled", "matryoshka_rescaled_training"] {
        let sae = saelens::load(&testdata::path(&format!("saelens/{folder}")))
            .unwrap_or_else(|err| panic!("{folder}: {err}"));
        assert_eq!(sae.cfg.architecture, saelens_arch(), "{folder}");
        for row in sae.w_dec.chunks_exact(16) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-5,
                "{folder}: a decoder row of norm {norm}"
            );
        }
        let codes = sae.encode(&x, n).unwrap();
        assert_all_close(&format!("{folder} codes"), &codes, &want);
        assert_all_close(
            &format!("{folder} reconstruction"),
            &sae.decode(&codes, n).unwrap(),
            &want_rec,
        );
    }
}

#[test]
fn training_pass_matches_saelens_codes_prefix_losses_and_threshold() {
    let x = inputs();
    let n = x.len() / 16;
    let mut sae = saelens::load(&testdata::path("saelens/matryoshka_training")).unwrap();
    let rel = "saelens/matryoshka_training/expected.safetensors";
    let (acts, mse, inner) = (
        tensor(rel, "feature_acts"),
        tensor(rel, "mse_loss")[0] as f64,
        tensor(rel, "inner_mse_loss"),
    );
    let mut ws = Workspace::default();
    let mut grads = Gradients::zeros_like(&sae);
    let stats = sae
        .forward_backward(&x, n, &StepConfig::default(), &mut ws, &mut grads)
        .unwrap();
    let mut codes = vec![0.0f32; n * 64];
    for r in 0..n {
        let (idx, val) = ws.codes().row(r);
        for (&i, &v) in idx.iter().zip(val) {
            codes[r * 64 + i as usize] = v;
        }
    }
    assert_eq!(codes.iter().filter(|&&v| v > 0.0).count(), 4 * n);
    assert_all_close("BatchTopK codes", &codes, &acts);
    let per_row = |sse: f64| sse / n as f64;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs();
    assert!(
        close(per_row(stats.sse), mse),
        "{} vs {mse}",
        per_row(stats.sse)
    );
    for (j, &w) in inner.iter().enumerate() {
        let got = per_row(stats.prefix_sse[j]);
        assert!(close(got, w as f64), "prefix {j}: {got} vs SAELens {w}");
    }
    assert_eq!(stats.prefix_sse[2], stats.sse);
    let total = mse + inner.iter().map(|&v| v as f64).sum::<f64>();
    assert!(close(stats.mse_loss, total) && close(stats.loss, total));
    sae.update_batchtopk_threshold(stats.min_active, 0.01);
    let after = tensor(rel, "topk_threshold_after")[0];
    assert!(
        (sae.threshold[0] - after).abs() <= 1e-5,
        "{} vs {after}",
        sae.threshold[0]
    );
}

/// The SAE whose saved folder is committed as `testdata/saelens/zephyra_matryoshka`.
fn zephyra_fixture() -> Sae {
    let mut cfg = SaeConfig::new(16, 64, saelens_arch()).unwrap();
    cfg.metadata.model_name = Some("SmolLM2-135M-Instruct".into());
    cfg.metadata.hook_name = Some("blocks.3.hook_resid_pre".into());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let mut sae = Sae::init(cfg, &mut rng).unwrap();
    for v in sae.b_enc.iter_mut().chain(sae.b_dec.iter_mut()) {
        *v = rng.random_range(-0.3..0.3);
    }
    sae.update_batchtopk_threshold(0.7, 1.0);
    sae
}

/// Regenerates `testdata/saelens/zephyra_matryoshka/` (then rerun `make_matryoshka.py` for SAELens' codes).
#[test]
#[ignore = "writes the committed fixture"]
fn write_zephyra_matryoshka_fixture() {
    let dir = testdata::path("saelens").join("zephyra_matryoshka");
    saelens::save(&zephyra_fixture(), &dir).unwrap();
}

#[test]
fn our_save_is_read_by_saelens_with_our_codes() {
    let sae = zephyra_fixture();
    let dir = tempfile::tempdir().unwrap();
    saelens::save(&sae, dir.path()).unwrap();
    // The committed folder SAELens read is what we write today.
    for f in ["cfg.json", "sae_weights.safetensors"] {
        let committed = testdata::read(&format!("saelens/zephyra_matryoshka/{f}"));
        assert!(
            std::fs::read(dir.path().join(f)).unwrap() == committed,
            "{f} differs from the committed fixture: regenerate it (see make_matryoshka.py)"
        );
    }
    let cfg = testdata::json("saelens/zephyra_matryoshka/cfg.json");
    assert_eq!(cfg["architecture"], "jumprelu");
    assert_eq!(
        cfg["metadata"]["training_architecture"],
        "matryoshka_batchtopk"
    );
    let details = &cfg["metadata"]["training_architecture_details"];
    assert_eq!(details["matryoshka_widths"], serde_json::json!([8, 24, 64]));
    assert_eq!(details["k"], 4);
    let x = inputs();
    let n = x.len() / 16;
    let rel = "saelens/zephyra_matryoshka/saelens_codes.safetensors";
    let want = tensor(rel, "codes");
    let active = want.iter().filter(|&&v| v != 0.0).count();
    assert!(active > 0 && active < want.len(), "a vacuous oracle");
    let codes = sae.encode(&x, n).unwrap();
    assert_all_close("codes SAELens computes from our file", &codes, &want);
    let rec = sae.decode(&codes, n).unwrap();
    assert_all_close("reconstruction", &rec, &tensor(rel, "reconstruction"));
    // And it loads back as itself.
    assert_eq!(saelens::load(dir.path()).unwrap().cfg, sae.cfg);
}
