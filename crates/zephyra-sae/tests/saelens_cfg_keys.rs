//! `cfg.json` as SAELens 6 writes it (issue 12, #14): every key of the file SAELens 6.54 itself wrote for the
//! same architecture (`testdata/saelens/*/cfg.json`, copied from its `save_model`), at the same nesting
//! and with the same JSON type. Without `metadata.sae_lens_version` SAELens 6 takes the file for a pre-6.0
//! config and drops `metadata` (hook, model, context size) on load.

use std::path::PathBuf;

use rand::SeedableRng;
use serde_json::Value;
use zephyra_sae::{saelens, Architecture, Sae, SaeConfig};

fn oracle(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/saelens")
        .join(name)
        .join("cfg.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the SAELens-written oracle {} is missing: {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `want` (recursively) is in `got` with the same JSON type; returns what is not.
fn missing(prefix: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    let (Value::Object(w), Value::Object(g)) = (want, got) else {
        return;
    };
    for (k, wv) in w {
        let path = format!("{prefix}{k}");
        match g.get(k) {
            None => out.push(format!("{path}: missing")),
            Some(gv) if kind(gv) != kind(wv) => out.push(format!(
                "{path}: {} where SAELens writes {}",
                kind(gv),
                kind(wv)
            )),
            Some(gv) => missing(&format!("{path}."), wv, gv, out),
        }
    }
}

#[test]
fn written_cfg_json_has_every_key_saelens_writes() {
    for (name, arch) in [
        ("standard", Architecture::Relu),
        ("standard", Architecture::ReluUnit),
        ("topk", Architecture::TopK { k: 4 }),
        ("jumprelu", Architecture::JumpRelu),
        ("jumprelu", Architecture::BatchTopK { k: 4 }),
        ("gated", Architecture::Gated),
    ] {
        let mut cfg = SaeConfig::new(16, 64, arch).unwrap();
        cfg.metadata.model_name = Some("SmolLM2-135M-Instruct".into());
        cfg.metadata.hook_name = Some("blocks.3.hook_resid_pre".into());
        cfg.metadata.context_size = Some(128);
        let sae = Sae::init(cfg.clone(), &mut rand_chacha::ChaCha8Rng::seed_from_u64(2)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        saelens::save(&sae, dir.path()).unwrap();
        let ours: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("cfg.json")).unwrap()).unwrap();
        let want = oracle(name);
        let mut gaps = Vec::new();
        missing("", &want, &ours, &mut gaps);
        assert!(gaps.is_empty(), "{arch}: {gaps:?}");
        assert_eq!(ours["architecture"], want["architecture"], "{arch}");
        assert_eq!(
            ours["metadata"]["sae_lens_version"],
            saelens::SAELENS_VERSION,
            "{arch}"
        );
        assert_eq!(
            ours["metadata"]["hook_name"], "blocks.3.hook_resid_pre",
            "{arch}"
        );
        // Loading it back gives the same configuration: the SAELens keys are not kept as extra metadata.
        assert_eq!(saelens::load(dir.path()).unwrap().cfg, cfg, "{arch}");
    }
}
