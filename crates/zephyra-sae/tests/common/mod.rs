//! Helpers shared by zephyra-sae's integration tests (`mod common;`); each test binary uses some of them.
#![allow(dead_code)]

use std::path::Path;

use zephyra_sae::saelens::read_f32_tensors;
use zephyra_sae::{Architecture, MatryoshkaWidths};

/// Tensor `name` of the safetensors file at `path`: `(shape, values)`; panics naming the file otherwise.
pub fn tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    read_f32_tensors(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .remove(name)
        .unwrap_or_else(|| panic!("{} has no tensor `{name}`", path.display()))
}

/// Asserts `got` equals SAELens' `want` element by element within `rel · (1 + |want|)`.
pub fn assert_matches_oracle(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, SAELens {w}"
        );
    }
}

/// Asserts our codes and output (a reconstruction, or a transcoder's output) equal SAELens' within
/// `rel`, each pair given as `(ours, SAELens')`, and that SAELens' codes are neither all zero nor all
/// active (such an oracle would prove little).
pub fn assert_codes_and_output_match(
    name: &str,
    (codes, want_codes): (&[f32], &[f32]),
    (out, want_out): (&[f32], &[f32]),
    rel: f32,
) {
    assert_matches_oracle(&format!("{name}: codes"), codes, want_codes, rel);
    let active = want_codes.iter().filter(|&&w| w != 0.0).count();
    assert!(
        active > 0 && active < want_codes.len(),
        "{name}: the oracle should have both active and inactive codes"
    );
    assert_matches_oracle(&format!("{name}: output"), out, want_out, rel);
}

/// Matryoshka BatchTopK with `k` and the cumulative prefix `widths`.
pub fn matryoshka(k: usize, widths: &[usize]) -> Architecture {
    Architecture::Matryoshka {
        k,
        groups: MatryoshkaWidths::new(widths).expect("valid matryoshka widths"),
    }
}

/// One of each architecture: `k` for the top-k kinds, Matryoshka with the prefix `widths` (the last is
/// d_sae).
pub fn every_architecture(k: usize, widths: &[usize]) -> [Architecture; 7] {
    [
        Architecture::Relu,
        Architecture::ReluUnit,
        Architecture::TopK { k },
        Architecture::BatchTopK { k },
        Architecture::JumpRelu,
        Architecture::Gated,
        matryoshka(k, widths),
    ]
}

/// The planted ground-truth case of the training tests (issue 17): 512 known unit features in
/// superposition in 64 dimensions, Zipfian firing between 0.5 % and 10 % (seed 3).
pub fn planted_synth() -> zephyra_sae::synth::SynthModel {
    zephyra_sae::synth::SynthModel::new(zephyra_sae::synth::SynthConfig {
        n_features: 512,
        d: 64,
        seed: 3,
        max_prob: 0.1,
        min_prob: 0.005,
        ..zephyra_sae::synth::SynthConfig::default()
    })
    .expect("valid synthetic configuration")
}
