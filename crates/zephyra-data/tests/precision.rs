//! `--precision` in the activation store: a bf16 harvest records `"precision": "bf16"` in the manifest and
//! stores the bf16 forward's activations; resuming with the other precision is refused; a manifest
//! written before the field existed reads as f32.

mod common;

use std::sync::Arc;

use common::*;
use zephyra_data::harvest::model_info;
use zephyra_data::store::manifest::{Manifest, MANIFEST_FILE};
use zephyra_data::DataError;
use zephyra_lm::{HookPoint, Llama, Precision, Tokenizer};

#[test]
fn bf16_harvest_records_its_precision_and_resume_checks_it() {
    let t = zephyra_lm::testing::tiny_llama(3).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&t.path).unwrap());
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    let hook = HookPoint::ResidPre(1);
    let cfg = config(vec![hook], 16, 8 * 16, 4, 2);
    let out = tempfile::tempdir().unwrap();
    let mut means = Vec::new();
    for precision in Precision::ALL {
        let model = Arc::new(Llama::load_gguf_with_precision(&t.path, precision).unwrap());
        let info = model_info(&t.path, model.as_ref()).unwrap();
        assert_eq!(info.precision, precision);
        let dir = out.path().join(precision.name());
        harvest_corpus(model, &tok, data.path(), cfg.clone(), info, 1, &dir).unwrap();
        // One hook: the output directory is the store.
        let m = Manifest::read(&dir).unwrap();
        assert!(m.complete);
        assert_eq!(m.model.precision, precision);
        means.push(m.stats.mean);
    }
    // The bf16 store holds the bf16 forward's activations: close to the f32 ones, not equal.
    let (f32_mean, bf16_mean) = (&means[0], &means[1]);
    let diff: f64 = f32_mean
        .iter()
        .zip(bf16_mean)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = f32_mean.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        diff > 0.0 && diff < 0.05 * scale,
        "max |Δmean| {diff} (scale {scale})"
    );

    // An interrupted f32 harvest does not resume in bf16.
    let f32_model = Arc::new(Llama::load_gguf(&t.path).unwrap());
    let info = model_info(&t.path, f32_model.as_ref()).unwrap();
    let part = tempfile::tempdir().unwrap();
    interrupted_harvest(
        f32_model,
        2,
        &tok,
        data.path(),
        cfg.clone(),
        info,
        part.path(),
    );
    let bf16_model = Arc::new(Llama::load_gguf_with_precision(&t.path, Precision::Bf16).unwrap());
    let bf16_info = model_info(&t.path, bf16_model.as_ref()).unwrap();
    let e = harvest_corpus(
        bf16_model,
        &tok,
        data.path(),
        cfg,
        bf16_info,
        1,
        part.path(),
    )
    .unwrap_err();
    match &e {
        DataError::ResumeMismatch {
            field,
            stored,
            requested,
            ..
        } => {
            assert!(field.contains("precision"), "{e}");
            assert_eq!((stored.as_str(), requested.as_str()), ("f32", "bf16"));
        }
        _ => panic!("expected a resume mismatch, got {e}"),
    }
}

#[test]
fn manifest_without_precision_reads_as_f32() {
    let root = tempfile::tempdir().unwrap();
    let hook = HookPoint::ResidPre(1);
    let store = tiny_store(root.path(), "store", vec![hook], 4);
    let path = store.join(MANIFEST_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["model"]["precision"], "f32");
    json["model"]
        .as_object_mut()
        .unwrap()
        .remove("precision")
        .unwrap();
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    assert_eq!(
        Manifest::read(&store).unwrap().model.precision,
        Precision::F32
    );
}
