//! The bfloat16 forward pass (`Precision::Bf16`) on the reference prompts of SmolLM2-135M
//! (`testdata/smollm2`) and Gemma 3 270M (`testdata/gemma3`): every kept hook's relative error and
//! the mean next-token cross-entropy against Hugging Face transformers (f32), within the bounds below.
//!
//! Why the bounds are this size: each linear layer rounds its inputs and weights to 8 significant
//! bits (relative error ≤ 2⁻⁸ each, ≈ 2⁻⁸/√3 r.m.s.), so a layer's output errs by ≈ 3e-3 relative to
//! its size (more where the products cancel). The residual stream sums ~2 such outputs per block and
//! carries earlier errors forward, so the error grows with depth to a few 1e-2 of a row's norm; the f32
//! path's own error (≤ 1e-4 against the reference, `tests/forward.rs`) is negligible beside it.
//! Cross-entropy moves by the logits' error times their spread, a few 1e-3 nats on average over a
//! prompt. The asserted bounds are the measured worst cases (printed) times ≈ 2.

mod common;
mod gemma_common;

use std::sync::OnceLock;

use zephyra_lm::{HookPoint, Hooks, Llama, Logits, Precision};

/// Worst relative error of a SmolLM2 activation row (any hook, any kept position).
const SMOLLM2_ROW_TOL: f64 = 0.05; // measured 2.7e-2 (blocks.15.hook_mlp_out, prompt 2, position 1)
/// Worst |mean CE − reference| of a SmolLM2 prompt, nats.
const SMOLLM2_CE_TOL: f64 = 0.006; // measured 3.0e-3
/// Worst relative error of a whole Gemma 3 hook tensor (all kept rows of a prompt).
const GEMMA_TENSOR_TOL: f64 = 0.025; // measured 1.2e-2 (blocks.17.hook_attn_out, prompt 0)
/// Worst |mean CE − reference| of a Gemma 3 prompt, nats.
const GEMMA_CE_TOL: f64 = 0.01; // measured 4.3e-3

fn smollm2_bf16() -> &'static Llama {
    static MODEL: OnceLock<Llama> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = zephyra_lm::fetch::resolve_model("smollm2").expect("fetching SmolLM2");
        Llama::load_gguf_with_precision(path, Precision::Bf16).expect("loading SmolLM2 in bf16")
    })
}

/// Mean next-token cross-entropy of `ids` under `model`, in nats.
fn mean_ce(model: &Llama, ids: &[u32]) -> f64 {
    let mut total = 0.0;
    model
        .for_each_logit_row(ids, |i, row| {
            if let Some(&next) = ids.get(i + 1) {
                total -= common::log_softmax_at(row, next);
            }
        })
        .expect("logit rows");
    total / (ids.len() - 1) as f64
}

#[test]
fn smollm2_bf16_hooks_and_ce_within_bounds() {
    let model = smollm2_bf16();
    assert_eq!(model.precision(), Precision::Bf16);
    let cfg = model.config();
    let d = cfg.d_model;
    let oracle = common::Oracle::load();
    let mut hooks: Vec<HookPoint> = (0..cfg.n_layers).map(HookPoint::ResidPre).collect();
    hooks.push(HookPoint::ResidPost(cfg.n_layers - 1));
    for l in [0, 7, 15, 29] {
        hooks.extend([HookPoint::AttnOut(l), HookPoint::MlpOut(l)]);
    }
    let prompts = common::prompts();
    assert_eq!(prompts.len(), 3);
    let (mut worst_row, mut worst_ce) = ((0.0f64, String::new()), 0.0f64);
    for (p, prompt) in prompts.iter().enumerate() {
        let positions = oracle.positions(p);
        let mut capture = Hooks::capturing(hooks.iter().copied());
        let out = model
            .forward(&[&prompt.ids], &mut capture, Logits::None)
            .expect("forward");
        for &hook in &hooks {
            let (_, want) = oracle.f32(&format!("prompt{p}.{hook}"));
            let got = common::flat(out.activations.get(hook).expect("captured"));
            let got = common::rows(&got, d, &positions);
            for (i, &t) in positions.iter().enumerate() {
                let row = i * d..(i + 1) * d;
                let err = common::rel_err(&got[row.clone()], &want[row]);
                if err > worst_row.0 {
                    worst_row = (err, format!("prompt {p} {hook} position {t}"));
                }
            }
        }
        let ce = mean_ce(model, &prompt.ids);
        let diff = (ce - prompt.mean_ce).abs();
        eprintln!(
            "smollm2 prompt {p}: mean CE {ce:.5} vs reference {:.5}",
            prompt.mean_ce
        );
        worst_ce = worst_ce.max(diff);
    }
    eprintln!(
        "smollm2 bf16: worst row relative error {:.3e} at {}; worst |ΔCE| {worst_ce:.2e} nats",
        worst_row.0, worst_row.1
    );
    assert!(
        worst_row.0 <= SMOLLM2_ROW_TOL,
        "{}: relative error {:.3e} > {SMOLLM2_ROW_TOL}",
        worst_row.1,
        worst_row.0
    );
    assert!(
        worst_ce <= SMOLLM2_CE_TOL,
        "|ΔCE| {worst_ce} > {SMOLLM2_CE_TOL}"
    );
    // bf16 changes the numbers (the test would pass vacuously on the f32 path otherwise).
    assert!(
        worst_row.0 > 1e-3,
        "bf16 error {:.1e} looks like f32",
        worst_row.0
    );
}

#[test]
fn gemma3_bf16_hooks_and_ce_within_bounds() {
    let model = Llama::load_gguf_with_precision(gemma_common::gemma_path(), Precision::Bf16)
        .expect("loading Gemma 3 in bf16");
    let d = model.config().d_model;
    let oracle = gemma_common::tensors();
    let (mut worst_tensor, mut worst_ce) = ((0.0f64, String::new()), 0.0f64);
    for (p, prompt) in gemma_common::reference().prompts.iter().enumerate() {
        let (rows, _) = gemma_common::kept_hook_rows(&model, &oracle, p, &prompt.ids, Logits::None);
        for gemma_common::HookRows { name, got, want } in &rows {
            let (rel, _) = gemma_common::rel_errs(got, want, d);
            if rel > worst_tensor.0 {
                worst_tensor = (rel, format!("prompt {p} {name}"));
            }
        }
        let ce = mean_ce(&model, &prompt.ids);
        eprintln!(
            "gemma3 prompt {p}: mean CE {ce:.5} vs reference {:.5}",
            prompt.mean_ce
        );
        worst_ce = worst_ce.max((ce - prompt.mean_ce).abs());
    }
    eprintln!(
        "gemma3 bf16: worst tensor relative error {:.3e} at {}; worst |ΔCE| {worst_ce:.2e} nats",
        worst_tensor.0, worst_tensor.1
    );
    assert!(
        worst_tensor.0 <= GEMMA_TENSOR_TOL,
        "{}: relative error {:.3e} > {GEMMA_TENSOR_TOL}",
        worst_tensor.1,
        worst_tensor.0
    );
    assert!(
        worst_ce <= GEMMA_CE_TOL,
        "|ΔCE| {worst_ce} > {GEMMA_CE_TOL}"
    );
    assert!(
        worst_tensor.0 > 1e-3,
        "bf16 error {:.1e} looks like f32",
        worst_tensor.0
    );
}
