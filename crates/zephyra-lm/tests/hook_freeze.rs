//! Freezing attention patterns and norm scales through `replace` (what attribution graphs need):
//! frozen at their clean values nothing changes, and with them frozen a block's residual map up to
//! the MLP is linear. Plus the per-token / pattern hook shapes in `add` and `replace`.

mod common;
mod gemma_common;
mod hook_common;

use hook_common::{cases, flat, Case};
use zephyra_lm::testing::tiny_llama;
use zephyra_lm::{HookPoint as H, Hooks, Llama, LmError, Logits, Tensor};

/// Every attention pattern, or every norm scale, of the model.
fn frozen_points(model: &Llama, patterns: bool) -> Vec<H> {
    model
        .every_hook_point()
        .into_iter()
        .filter(|p| {
            let is_scale = p.to_string().ends_with("hook_scale");
            if patterns {
                matches!(p, H::AttnPattern(_))
            } else {
                is_scale
            }
        })
        .collect()
}

fn logits(model: &Llama, ids: &[u32], hooks: &mut Hooks) -> Vec<f32> {
    let out = model.forward(&[ids], hooks, Logits::All).expect("forward");
    flat(&out.logits.expect("logits"))
}

/// Hooks replacing each of `points` with the tensor in `clean`.
fn freeze<'a>(clean: &zephyra_lm::Activations, points: &[H]) -> Hooks<'a> {
    let mut hooks = Hooks::new();
    for &p in points {
        let t = clean.get(p).expect("captured").clone();
        hooks.replace(p, move |_, _| Ok(t.clone()));
    }
    hooks
}

#[test]
fn freezing_at_clean_values_changes_nothing() {
    for Case { name, model, ids } in cases() {
        let base = logits(model, &ids, &mut Hooks::new());
        for patterns in [true, false] {
            let points = frozen_points(model, patterns);
            assert!(!points.is_empty());
            let mut hooks = Hooks::capturing(points.iter().copied());
            let clean = model
                .forward(&[&ids], &mut hooks, Logits::None)
                .expect("forward")
                .activations;
            let frozen = logits(model, &ids, &mut freeze(&clean, &points));
            let worst = frozen
                .iter()
                .zip(&base)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            eprintln!("{name}: patterns {patterns}: worst relative change {worst:e}");
            assert!(
                worst <= 1e-6,
                "{name}: frozen (patterns {patterns}) changed logits by {worst}"
            );
        }
    }
}

/// `resid_post(l) − mlp_out(l)` when `resid_pre(l)` is replaced by `x`, with `frozen` replaced by
/// their values in `clean`; also checks it equals `resid_mid(l)`.
fn attention_map(
    model: &Llama,
    ids: &[u32],
    l: usize,
    x: &Tensor,
    clean: Option<(&zephyra_lm::Activations, &[H])>,
) -> Vec<f64> {
    let mut hooks = match clean {
        Some((clean, frozen)) => freeze(clean, frozen),
        None => Hooks::new(),
    };
    let x = x.clone();
    hooks.replace(H::ResidPre(l), move |_, _| Ok(x.clone()));
    for p in [H::ResidMid(l), H::MlpOut(l), H::ResidPost(l)] {
        hooks.capture(p);
    }
    let out = model
        .forward(&[ids], &mut hooks, Logits::None)
        .expect("forward");
    let get = |p| flat(out.activations.get(p).expect("captured"));
    let (mid, mlp, post) = (get(H::ResidMid(l)), get(H::MlpOut(l)), get(H::ResidPost(l)));
    let map: Vec<f64> = post
        .iter()
        .zip(&mlp)
        .map(|(p, m)| *p as f64 - *m as f64)
        .collect();
    assert!(hook_common::rel64(&mid, &map) < 1e-6);
    map
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

#[test]
fn with_patterns_and_scales_frozen_a_block_is_linear_up_to_its_mlp() {
    for Case { name, model, ids } in cases() {
        let cfg = model.config();
        let l = cfg.n_layers / 2;
        let frozen: Vec<H> = [H::Ln1Scale(l), H::AttnPattern(l), H::Ln1PostScale(l)]
            .into_iter()
            .filter(|p| p.exists_in(cfg.family))
            .collect();
        let mut hooks = Hooks::capturing(frozen.iter().copied().chain([H::ResidPre(l)]));
        let clean = model
            .forward(&[&ids], &mut hooks, Logits::None)
            .expect("forward")
            .activations;
        let x0 = clean.get(H::ResidPre(l)).expect("captured").clone();
        // A perturbation of the residual stream's size (deterministic pseudo-random).
        let x0v = flat(&x0);
        let norm = (x0v.iter().map(|v| v * v).sum::<f32>() / x0v.len() as f32).sqrt();
        let u: Vec<f32> = (0..x0v.len())
            .map(|i| (((i * 2654435761) % 1000) as f32 / 500.0 - 1.0) * norm)
            .collect();
        let u = Tensor::from_vec(u, x0.dims(), x0.device()).expect("tensor");
        let sum = (&x0 + &u).expect("add");
        let scaled = (&u * 2.5).expect("mul");
        let run = |x: &Tensor, freeze_them: bool| {
            let c = freeze_them.then_some((&clean, frozen.as_slice()));
            attention_map(model, &ids, l, x, c)
        };
        let (f0, fu, fsum, fscaled) = (
            run(&x0, true),
            run(&u, true),
            run(&sum, true),
            run(&scaled, true),
        );
        let additive: Vec<f64> = f0.iter().zip(&fu).map(|(a, b)| a + b).collect();
        let e_add = rel(&fsum, &additive);
        let homogeneous: Vec<f64> = fu.iter().map(|v| 2.5 * v).collect();
        let e_hom = rel(&fscaled, &homogeneous);
        // The control: with live patterns and scales the same map is far from linear.
        let live = rel(
            &run(&sum, false),
            &run(&x0, false)
                .iter()
                .zip(&run(&u, false))
                .map(|(a, b)| a + b)
                .collect::<Vec<_>>(),
        );
        eprintln!(
            "{name}: block {l}: superposition {e_add:e}, homogeneity {e_hom:e}, live {live:e}"
        );
        assert!(e_add < 1e-5 && e_hom < 1e-5, "{name}: {e_add} {e_hom}");
        assert!(
            live > 1e-3,
            "{name}: the unfrozen map looked linear ({live})"
        );
    }
}

#[test]
fn pattern_is_not_per_token_and_shapes_are_checked() {
    let tiny = tiny_llama(3).expect("tiny");
    let model = Llama::load_gguf(&tiny.path).expect("load");
    let cfg = model.config().clone();
    let ids = [1u32, 5, 9, 13];
    // A vector added at every position of the pattern has no meaning: a clear error.
    let mut hooks = Hooks::new();
    hooks.add_vector(H::AttnPattern(0), vec![0.0; 4]);
    let err = model
        .forward(&[&ids], &mut hooks, Logits::None)
        .unwrap_err();
    assert!(matches!(err, LmError::NotPerToken { .. }), "{err}");
    // A replacement of the wrong shape names the expected one.
    let mut hooks = Hooks::new();
    hooks.replace(H::AttnPattern(1), |_, t| Ok(t.narrow(3, 0, 2)?));
    let err = model
        .forward(&[&ids], &mut hooks, Logits::None)
        .unwrap_err();
    let want = vec![1, cfg.n_heads, 4, 4];
    assert!(
        matches!(&err, LmError::HookShape { expected, .. } if *expected == want),
        "{err}"
    );
    // add_vector on mlp.hook_post takes d_mlp values and shifts exactly.
    let v: Vec<f32> = (0..cfg.d_mlp).map(|i| i as f32 * 0.01).collect();
    let base = hook_common::capture(&model, &ids, &[H::MlpPost(0)]);
    let mut hooks = Hooks::new();
    hooks
        .add_vector(H::MlpPost(0), v.clone())
        .capture(H::MlpPost(0));
    let out = model
        .forward(&[&ids], &mut hooks, Logits::None)
        .expect("forward");
    let got = flat(out.activations.get(H::MlpPost(0)).expect("captured"));
    for (i, (g, b)) in got.iter().zip(&base[&H::MlpPost(0)]).enumerate() {
        assert_eq!(*g, b + v[i % cfg.d_mlp]);
    }
}
