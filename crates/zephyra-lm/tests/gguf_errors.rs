//! GGUF loading on tiny files: what loads, and a clear typed error (no panic) for each bad input.

use zephyra_lm::testing::{
    tiny_llama, tiny_llama_with, write_not_gguf, write_truncated, TinyDType, TinyOptions,
};
use zephyra_lm::{HookPoint, Hooks, Llama, LmError, Logits};

#[test]
fn tiny_llama_loads_with_its_config() {
    let tiny = tiny_llama(1).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    assert_eq!(model.config(), &tiny.config);
    assert!(model.config().tied_embeddings);
    assert_eq!(model.n_tensors(), 2 + 2 * 9);
    assert_eq!(model.hook_points().len(), 2 * 5 + 1);
}

#[test]
fn untied_and_quantized_variants_load_and_agree() {
    let opts = |dtype| TinyOptions {
        dtype,
        tied_embeddings: false,
        ..TinyOptions::default()
    };
    let f32 = tiny_llama_with(3, &opts(TinyDType::F32)).unwrap();
    let f32 = Llama::load_gguf(&f32.path).unwrap();
    assert!(!f32.config().tied_embeddings);
    let ids = [[5u32, 80, 200, 7, 3, 261]];
    let logits = |m: &Llama| {
        let out = m.forward(&ids, &mut Hooks::new(), Logits::All).unwrap();
        out.logits
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let reference = logits(&f32);
    // Quantization error shrinks with more bits: Q8_0 is close, Q4_1 further, both sane.
    let mut errs = Vec::new();
    for dtype in [TinyDType::Q8_0, TinyDType::Q4_1] {
        let q = tiny_llama_with(3, &opts(dtype)).unwrap();
        let q = Llama::load_gguf(&q.path).unwrap();
        let got = logits(&q);
        let num: f32 = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let den: f32 = reference.iter().map(|b| b * b).sum();
        errs.push((num / den).sqrt());
    }
    assert!(
        errs[0] < 0.02 && errs[1] < 0.3 && errs[0] < errs[1],
        "{errs:?}"
    );
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    write_not_gguf(&path).unwrap();
    let err = Llama::load_gguf(&path).unwrap_err();
    assert!(matches!(err, LmError::NotGguf { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a GGUF file"), "{err}");
    // An empty file too.
    std::fs::write(&path, b"").unwrap();
    let err = Llama::load_gguf(&path).unwrap_err();
    assert!(matches!(err, LmError::NotGguf { .. }), "{err:?}");
}

#[test]
fn truncated_gguf() {
    let tiny = tiny_llama(2).unwrap();
    let len = std::fs::metadata(&tiny.path).unwrap().len() as usize;
    // Cut inside the header, inside the metadata, and inside the tensor data.
    for keep in [10, 2_000, len / 2, len - 100] {
        let cut = tiny.dir.path().join(format!("cut-{keep}.gguf"));
        write_truncated(&tiny.path, &cut, keep).unwrap();
        let err = Llama::load_gguf(&cut).unwrap_err();
        assert!(
            matches!(err, LmError::CorruptGguf { .. }),
            "cut at {keep}: {err:?}"
        );
        assert!(err.to_string().contains("truncated or corrupt"), "{err}");
    }
}

/// The error loading a one-seed tiny Llama written with `opts` gives; panics if it loads.
fn load_error(opts: TinyOptions) -> LmError {
    let tiny = tiny_llama_with(1, &opts).unwrap();
    Llama::load_gguf(&tiny.path).unwrap_err()
}

#[test]
fn unsupported_architecture() {
    let err = load_error(TinyOptions {
        architecture: "mamba".into(),
        ..TinyOptions::default()
    });
    match &err {
        LmError::UnsupportedArchitecture { architecture, .. } => assert_eq!(architecture, "mamba"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("only `llama`"), "{err}");
}

#[test]
fn missing_tensor_and_metadata() {
    match load_error(TinyOptions {
        skip_tensor: Some("blk.1.ffn_up.weight".into()),
        ..TinyOptions::default()
    }) {
        LmError::MissingTensor { name, .. } => assert_eq!(name, "blk.1.ffn_up.weight"),
        other => panic!("{other:?}"),
    }
    match load_error(TinyOptions {
        skip_metadata: Some("llama.attention.head_count".into()),
        ..TinyOptions::default()
    }) {
        LmError::MissingMetadata { key, .. } => assert_eq!(key, "llama.attention.head_count"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_file() {
    let err = Llama::load_gguf("/nonexistent/zephyra/model.gguf").unwrap_err();
    assert!(matches!(err, LmError::Io { .. }), "{err:?}");
}

#[test]
fn unknown_hook_name_lists_valid_names() {
    let tiny = tiny_llama(1).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let err = model.hook_point("blocks.1.hook_resid_middle").unwrap_err();
    assert!(matches!(err, LmError::UnknownHook { .. }), "{err:?}");
    let msg = err.to_string();
    for valid in [
        "hook_resid_pre",
        "hook_resid_mid",
        "hook_resid_post",
        "hook_attn_out",
        "hook_mlp_out",
        "ln_final.hook_normalized",
    ] {
        assert!(msg.contains(valid), "{msg}");
    }
}

#[test]
fn layer_out_of_range() {
    let tiny = tiny_llama(1).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let err = model.hook_point("blocks.2.hook_mlp_out").unwrap_err();
    assert!(
        matches!(err, LmError::LayerOutOfRange { n_layers: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("2 blocks (0..=1)"), "{err}");
    // Hooks built from the enum directly are checked by the forward pass too.
    let mut hooks = Hooks::capturing([HookPoint::ResidPre(7)]);
    let err = model
        .forward(&[[1u32, 2]], &mut hooks, Logits::None)
        .unwrap_err();
    assert!(matches!(err, LmError::LayerOutOfRange { .. }), "{err:?}");
}

#[test]
fn bad_batches_are_rejected() {
    let tiny = tiny_llama(1).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let empty: [Vec<u32>; 0] = [];
    let err = model
        .forward(&empty, &mut Hooks::new(), Logits::All)
        .unwrap_err();
    assert!(matches!(err, LmError::InvalidInput(_)), "{err:?}");
    let err = model
        .forward(&[vec![1u32], vec![]], &mut Hooks::new(), Logits::All)
        .unwrap_err();
    assert!(err.to_string().contains("sequence 1"), "{err}");
    let vocab = model.config().vocab_size as u32;
    let err = model
        .forward(&[[1u32, vocab]], &mut Hooks::new(), Logits::All)
        .unwrap_err();
    assert!(matches!(err, LmError::TokenOutOfRange { .. }), "{err:?}");
    let long = vec![1u32; model.config().context_length + 1];
    let err = model
        .forward(&[long], &mut Hooks::new(), Logits::All)
        .unwrap_err();
    assert!(err.to_string().contains("context length"), "{err}");
}
