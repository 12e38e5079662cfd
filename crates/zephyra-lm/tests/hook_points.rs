//! The hook points inside a block, on both families (tiny random models, SmolLM2, Gemma 3 270M),
//! checked against f64 recomputations from the neighbouring hooks and the weights that
//! `Llama::block_weights` exposes: norm scales and outputs, q/k/v, pattern · v = z,
//! z · W_Oᵀ → attn_out, act(gate) · up = mlp.hook_post, mlp.hook_post · W_downᵀ → mlp_out.

mod common;
mod gemma_common;
mod hook_common;

use hook_common::{capture, cases, matmul_t, normalize, rel64, rms, wide};
use zephyra_lm::{HookPoint as H, Llama};

/// Layers to check: all of a tiny model, three of a real one (Gemma: a sliding and a global one).
fn layers(model: &Llama) -> Vec<usize> {
    let n = model.config().n_layers;
    if n <= 4 {
        (0..n).collect()
    } else {
        vec![0, 5, n - 1]
    }
}

const TOL: f64 = 2e-5;

#[test]
fn norm_hooks_are_the_rms_divisor_and_the_norm_output() {
    for case in cases() {
        let (m, cfg) = (case.model, case.model.config());
        let (d, eps) = (cfg.d_model, cfg.rms_norm_eps);
        for l in layers(m) {
            let points = [
                H::ResidPre(l),
                H::Ln1Scale(l),
                H::Ln1Normalized(l),
                H::ResidMid(l),
                H::Ln2Scale(l),
                H::Ln2Normalized(l),
            ];
            let a = capture(m, &case.ids, &points);
            let w = m.block_weights(l).expect("block");
            for (x, scale, normed, weight) in [
                (H::ResidPre(l), H::Ln1Scale(l), H::Ln1Normalized(l), w.ln1),
                (H::ResidMid(l), H::Ln2Scale(l), H::Ln2Normalized(l), w.ln2),
            ] {
                let x = wide(&a[&x]);
                let want_scale = rms(&x, d, eps);
                assert_eq!(
                    a[&scale].len(),
                    case.ids.len(),
                    "{scale}: one value per token"
                );
                let e = rel64(&a[&scale], &want_scale);
                assert!(e < TOL, "{}: {scale} off by {e:e}", case.name);
                // Recompose: normalized = x / scale · w with the *captured* scale.
                let e = rel64(&a[&normed], &normalize(&x, &wide(&a[&scale]), weight));
                assert!(e < TOL, "{}: {normed} off by {e:e}", case.name);
            }
        }
        // The final norm.
        let last = cfg.n_layers - 1;
        let a = capture(
            m,
            &case.ids,
            &[H::ResidPost(last), H::LnFinalScale, H::LnFinal],
        );
        let x = wide(&a[&H::ResidPost(last)]);
        let scale = rms(&x, d, eps);
        assert!(rel64(&a[&H::LnFinalScale], &scale) < TOL, "{}", case.name);
        let want = normalize(&x, &scale, m.final_norm_weight());
        assert!(rel64(&a[&H::LnFinal], &want) < TOL, "{}", case.name);
    }
}

#[test]
fn q_k_v_pattern_and_z_recompose_attention() {
    for case in cases() {
        let (m, cfg) = (case.model, case.model.config());
        let (d, d_head, n_heads, n_kv) = (cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads);
        let n = case.ids.len();
        for l in layers(m) {
            let points = [
                H::Ln1Normalized(l),
                H::AttnQ(l),
                H::AttnK(l),
                H::AttnV(l),
                H::AttnPattern(l),
                H::AttnZ(l),
                H::Ln1PostScale(l),
                H::AttnOut(l),
            ];
            let points: Vec<H> = points
                .into_iter()
                .filter(|p| p.exists_in(cfg.family))
                .collect();
            let a = capture(m, &case.ids, &points);
            let w = m.block_weights(l).expect("block");
            let x = &a[&H::Ln1Normalized(l)];
            for (p, wm) in [
                (H::AttnQ(l), w.w_q),
                (H::AttnK(l), w.w_k),
                (H::AttnV(l), w.w_v),
            ] {
                let e = rel64(&a[&p], &matmul_t(x, wm, d));
                assert!(e < TOL, "{}: {p} off by {e:e}", case.name);
            }
            assert_eq!(a[&H::AttnK(l)].len(), n * n_kv * d_head);
            // Pattern: causal, each row a distribution, zero outside the window.
            let pat = &a[&H::AttnPattern(l)];
            assert_eq!(pat.len(), n_heads * n * n);
            let window = cfg.layer_window(l).unwrap_or(usize::MAX);
            for h in 0..n_heads {
                for s in 0..n {
                    let row = &pat[(h * n + s) * n..(h * n + s + 1) * n];
                    let sum: f64 = row.iter().map(|&v| v as f64).sum();
                    assert!((sum - 1.0).abs() < 1e-5, "{}: row sum {sum}", case.name);
                    for (j, &v) in row.iter().enumerate() {
                        if j > s || s - j >= window {
                            assert_eq!(v, 0.0, "{}: layer {l} head {h} ({s}, {j})", case.name);
                        }
                    }
                }
            }
            // z[s, h] = Σ_j pattern[h, s, j] · v[j, h / group].
            let (v, group) = (&a[&H::AttnV(l)], n_heads / n_kv);
            let mut z = vec![0.0f64; n * n_heads * d_head];
            for s in 0..n {
                for h in 0..n_heads {
                    for j in 0..n {
                        let p = pat[(h * n + s) * n + j] as f64;
                        let vj = &v[(j * n_kv + h / group) * d_head..][..d_head];
                        let zs = &mut z[(s * n_heads + h) * d_head..][..d_head];
                        zs.iter_mut().zip(vj).for_each(|(z, v)| *z += p * *v as f64);
                    }
                }
            }
            let e = rel64(&a[&H::AttnZ(l)], &z);
            assert!(e < TOL, "{}: z off by {e:e}", case.name);
            // z · W_Oᵀ is attn_out (Gemma: before the post-attention norm, whose scale is hooked).
            let o = matmul_t(&a[&H::AttnZ(l)], w.w_o, n_heads * d_head);
            let want = post_norm(o, w.ln1_post, a.get(&H::Ln1PostScale(l)), cfg.rms_norm_eps);
            let e = rel64(&a[&H::AttnOut(l)], &want);
            assert!(e < TOL, "{}: attn_out off by {e:e}", case.name);
        }
    }
}

/// Gemma's post-norm of a branch output `x` (checking the captured scale), or `x` for Llama.
fn post_norm(
    x: Vec<f64>,
    weight: Option<&[f32]>,
    captured: Option<&Vec<f32>>,
    eps: f32,
) -> Vec<f64> {
    let Some(weight) = weight else {
        return x;
    };
    let scale = rms(&x, weight.len(), eps);
    let e = rel64(captured.expect("post-norm scale captured"), &scale);
    assert!(e < TOL, "post-norm scale off by {e:e}");
    normalize(&x, &scale, weight)
}

/// `silu(g) = g·σ(g)` and the tanh approximation of GELU, in f64.
fn act(family: zephyra_lm::config::Family, g: f64) -> f64 {
    match family {
        zephyra_lm::config::Family::Llama => g / (1.0 + (-g).exp()),
        zephyra_lm::config::Family::Gemma3 => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh())
        }
    }
}

#[test]
fn mlp_post_is_act_gate_times_up_and_feeds_w_down() {
    for case in cases() {
        let (m, cfg) = (case.model, case.model.config());
        let d = cfg.d_model;
        for l in layers(m) {
            let points: Vec<H> = [
                H::Ln2Normalized(l),
                H::MlpPost(l),
                H::Ln2PostScale(l),
                H::MlpOut(l),
            ]
            .into_iter()
            .filter(|p| p.exists_in(cfg.family))
            .collect();
            let a = capture(m, &case.ids, &points);
            let w = m.block_weights(l).expect("block");
            let x = &a[&H::Ln2Normalized(l)];
            let gate = matmul_t(x, w.w_gate, d);
            let up = matmul_t(x, w.w_up, d);
            let want: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| act(cfg.family, *g) * u)
                .collect();
            assert_eq!(a[&H::MlpPost(l)].len(), case.ids.len() * cfg.d_mlp);
            let e = rel64(&a[&H::MlpPost(l)], &want);
            assert!(e < 1e-4, "{}: mlp.hook_post off by {e:e}", case.name);
            let down = matmul_t(&a[&H::MlpPost(l)], w.w_down, cfg.d_mlp);
            let want = post_norm(
                down,
                w.ln2_post,
                a.get(&H::Ln2PostScale(l)),
                cfg.rms_norm_eps,
            );
            let e = rel64(&a[&H::MlpOut(l)], &want);
            assert!(e < TOL, "{}: mlp_out off by {e:e}", case.name);
        }
    }
}

#[test]
fn every_hook_point_captures_in_one_pass_with_its_declared_shape() {
    let (tl, tg) = (
        zephyra_lm::testing::tiny_llama(3).expect("tiny llama"),
        zephyra_lm::testing::tiny_gemma(5).expect("tiny gemma"),
    );
    for path in [&tl.path, &tg.path] {
        let model = Llama::load_gguf(path).expect("load");
        let cfg = model.config();
        let every = model.every_hook_point();
        let ids: [&[u32]; 2] = [&[2, 7, 9, 11, 5], &[2, 8, 6]];
        let mut hooks = zephyra_lm::Hooks::capturing(every.iter().copied());
        let out = model
            .forward(&ids, &mut hooks, zephyra_lm::Logits::None)
            .expect("forward");
        assert_eq!(out.activations.len(), every.len());
        for p in every {
            let t = out.activations.get(p).expect("captured");
            assert_eq!(t.dims(), p.shape(cfg).dims(2, 5, 5), "{p}");
            if let Some(width) = p.width(cfg) {
                assert_eq!(t.elem_count(), 2 * 5 * width, "{p}");
            }
        }
    }
}
