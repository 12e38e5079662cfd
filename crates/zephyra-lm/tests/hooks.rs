//! Hooks: capture, replace and add, on SmolLM2 (sanity of interventions) and on the tiny model
//! (mechanics and errors).

mod common;

use common::{flat, mean_ce, prompts, smollm2};
use zephyra_lm::testing::tiny_llama;
use zephyra_lm::{HookPoint, Hooks, Llama, LmError, Logits, Tensor};

fn logits_of(model: &Llama, ids: &[u32], hooks: &mut Hooks) -> Vec<f32> {
    let out = model.forward(&[ids], hooks, Logits::All).unwrap();
    flat(&out.logits.unwrap())
}

#[test]
fn identity_replace_leaves_logits_unchanged() {
    let model = smollm2();
    let ids = &prompts()[0].ids;
    let base = logits_of(model, ids, &mut Hooks::new());
    let mut hooks = Hooks::new();
    for hook in [
        HookPoint::ResidPre(3),
        HookPoint::AttnOut(10),
        HookPoint::ResidMid(15),
        HookPoint::MlpOut(20),
        HookPoint::ResidPost(29),
        HookPoint::LnFinal,
    ] {
        hooks.replace(hook, |_, t| Ok(t.clone()));
    }
    assert_eq!(logits_of(model, ids, &mut hooks), base);
}

#[test]
fn zero_ablation_raises_cross_entropy() {
    let model = smollm2();
    let prompt = &prompts()[0];
    let vocab = model.config().vocab_size;
    let base = mean_ce(
        &logits_of(model, &prompt.ids, &mut Hooks::new()),
        vocab,
        &prompt.ids,
    );
    let mut hooks = Hooks::new();
    hooks.replace(HookPoint::ResidPost(15), |_, t| Ok(t.zeros_like()?));
    let ablated = mean_ce(
        &logits_of(model, &prompt.ids, &mut hooks),
        vocab,
        &prompt.ids,
    );
    eprintln!("CE {base:.3} → {ablated:.3} nats with blocks.15.hook_resid_post zeroed");
    assert!(ablated > base + 2.0, "CE {base} → {ablated}");
}

#[test]
fn add_vector_shifts_the_hooked_activation_exactly() {
    let model = smollm2();
    let ids = &prompts()[1].ids[..40];
    let d = model.config().d_model;
    let v: Vec<f32> = (0..d).map(|i| ((i % 7) as f32 - 3.0) * 0.5).collect();
    let hook = HookPoint::ResidPost(10);
    let mut hooks = Hooks::new();
    // A capture before the add sees the original, one after sees original + v, and the next
    // block's input is the shifted stream.
    hooks
        .capture(hook)
        .add_vector(hook, v.clone())
        .capture(HookPoint::ResidPre(11))
        .capture(HookPoint::MlpOut(11));
    let out = model.forward(&[ids], &mut hooks, Logits::None).unwrap();
    let before = flat(out.activations.get(hook).unwrap());
    let after = flat(out.activations.get(HookPoint::ResidPre(11)).unwrap());
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        assert_eq!(*a, b + v[i % d], "element {i}");
    }
    // Downstream activations change.
    let mut plain = Hooks::capturing([HookPoint::MlpOut(11)]);
    let plain = model.forward(&[ids], &mut plain, Logits::None).unwrap();
    let a = flat(out.activations.get(HookPoint::MlpOut(11)).unwrap());
    let b = flat(plain.activations.get(HookPoint::MlpOut(11)).unwrap());
    assert!(common::rel_err(&a, &b) > 1e-3);
}

#[test]
fn add_tensor_matches_add_vector_and_replace() {
    let tiny = tiny_llama(5).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let ids = [[10u32, 20, 30, 40, 50], [60, 70, 80, 90, 100]];
    let d = model.config().d_model;
    let v: Vec<f32> = (0..d).map(|i| (i as f32).sin()).collect();
    let hook = HookPoint::ResidMid(0);
    let run = |hooks: &mut Hooks| {
        let out = model.forward(&ids, hooks, Logits::All).unwrap();
        flat(&out.logits.unwrap())
    };
    let mut by_vec = Hooks::new();
    by_vec.add_vector(hook, v.clone());
    let by_vec = run(&mut by_vec);
    let mut by_tensor = Hooks::new();
    by_tensor.add(
        hook,
        Tensor::new(v.as_slice(), &candle_core::Device::Cpu).unwrap(),
    );
    assert_eq!(run(&mut by_tensor), by_vec);
    let full = Tensor::new(v.as_slice(), &candle_core::Device::Cpu)
        .unwrap()
        .broadcast_as((2, 5, d))
        .unwrap()
        .contiguous()
        .unwrap();
    let mut by_full = Hooks::new();
    by_full.add(hook, full.clone());
    assert_eq!(run(&mut by_full), by_vec);
    // A replace closure may borrow (here `full`) for the life of the hooks.
    let mut by_replace = Hooks::new();
    by_replace.replace(hook, |_, t| Ok((t + &full)?));
    assert_eq!(run(&mut by_replace), by_vec);
    assert_ne!(run(&mut Hooks::new()), by_vec);
}

#[test]
fn hook_shape_and_closure_errors() {
    let tiny = tiny_llama(5).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let ids = [[1u32, 2, 3]];
    let mut hooks = Hooks::new();
    hooks.replace(HookPoint::ResidPre(1), |_, t| Ok(t.narrow(1, 0, 2)?));
    let err = model.forward(&ids, &mut hooks, Logits::All).unwrap_err();
    match err {
        LmError::HookShape { expected, got, .. } => {
            assert_eq!(expected, [1, 3, 64]);
            assert_eq!(got, [1, 2, 64]);
        }
        other => panic!("{other:?}"),
    }
    let mut hooks = Hooks::new();
    hooks.add_vector(HookPoint::AttnOut(0), vec![1.0; 5]);
    let err = model.forward(&ids, &mut hooks, Logits::All).unwrap_err();
    assert!(matches!(err, LmError::HookShape { .. }), "{err:?}");
    let mut hooks = Hooks::new();
    hooks.replace(HookPoint::MlpOut(0), |_, _| {
        Err(LmError::InvalidInput("SAE refused".into()))
    });
    let err = model.forward(&ids, &mut hooks, Logits::None).unwrap_err();
    assert!(err.to_string().contains("SAE refused"), "{err}");
}

#[test]
fn captures_cover_every_hook_point_with_consistent_sums() {
    let tiny = tiny_llama(6).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let ids = [[4u32, 8, 15, 16, 23, 42]];
    let mut hooks = Hooks::capturing(model.hook_points());
    let out = model.forward(&ids, &mut hooks, Logits::None).unwrap();
    assert_eq!(out.activations.len(), model.hook_points().len());
    let get = |p| flat(out.activations.get(p).unwrap());
    for l in 0..2 {
        // resid_mid = resid_pre + attn_out; resid_post = resid_mid + mlp_out.
        let (pre, attn) = (get(HookPoint::ResidPre(l)), get(HookPoint::AttnOut(l)));
        let (mid, mlp) = (get(HookPoint::ResidMid(l)), get(HookPoint::MlpOut(l)));
        let post = get(HookPoint::ResidPost(l));
        for i in 0..pre.len() {
            assert_eq!(mid[i], pre[i] + attn[i]);
            assert_eq!(post[i], mid[i] + mlp[i]);
        }
    }
    assert_eq!(get(HookPoint::ResidPre(1)), get(HookPoint::ResidPost(0)));
    assert_eq!(get(HookPoint::LnFinal).len(), 6 * 64);
    // The logits are a linear map of ln_final: zeroing it zeroes them.
    let mut hooks = Hooks::new();
    hooks.replace(HookPoint::LnFinal, |_, t| Ok(t.zeros_like()?));
    let out = model.forward(&ids, &mut hooks, Logits::All).unwrap();
    assert!(flat(&out.logits.unwrap()).iter().all(|&x| x == 0.0));
    // Logits::Last (with and without an ln_final hook) is the last row of Logits::All (up to
    // rounding: a one-row product takes another GEMM kernel).
    let all = model.forward(&ids, &mut Hooks::new(), Logits::All).unwrap();
    let all = flat(&all.logits.unwrap().get(0).unwrap().get(5).unwrap());
    for mut hooks in [Hooks::new(), Hooks::capturing([HookPoint::LnFinal])] {
        let last = model.forward(&ids, &mut hooks, Logits::Last).unwrap();
        let err = common::rel_err(&flat(&last.logits.unwrap()), &all);
        assert!(err < 1e-6, "{err:e}");
    }
}

#[test]
fn logits_from_final_norm_rows_match_the_full_pass_and_a_hand_dot_product() {
    let tiny = tiny_llama(7).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let (d, vocab) = (model.config().d_model, model.config().vocab_size);
    // 2 × 40 rows: more than one LOGIT_ROWS chunk, the last one partial.
    let seqs: Vec<Vec<u32>> = (0..2u32)
        .map(|s| {
            (0..40u32)
                .map(|i| (i * 7 + s * 3 + 1) % vocab as u32)
                .collect()
        })
        .collect();
    let mut hooks = Hooks::capturing([HookPoint::LnFinal]);
    let out = model.forward(&seqs, &mut hooks, Logits::All).unwrap();
    let full = flat(&out.logits.unwrap());
    let normed = flat(out.activations.get(HookPoint::LnFinal).unwrap());
    let mut chunked = Vec::new();
    let mut logits = Vec::new();
    for chunk in normed.chunks(zephyra_lm::model::LOGIT_ROWS * d) {
        model.unembed_rows(chunk, &mut logits).unwrap();
        assert_eq!(logits.len(), chunk.len() / d * vocab);
        chunked.extend_from_slice(&logits);
    }
    assert_eq!(chunked.len(), full.len());
    let w = model.unembedding();
    for (r, row) in normed.chunks_exact(d).enumerate() {
        for v in [0, 1, vocab / 2, vocab - 1] {
            let hand: f32 = row
                .iter()
                .zip(&w[v * d..(v + 1) * d])
                .map(|(a, b)| a * b)
                .sum();
            let got = chunked[r * vocab + v];
            assert!(
                (got - hand).abs() <= 1e-4 * (1.0 + hand.abs()),
                "row {r} v {v}: {got} vs {hand}"
            );
            assert!((got - full[r * vocab + v]).abs() <= 1e-5 * (1.0 + hand.abs()));
        }
    }
    // The per-position streaming of one sequence gives the same rows.
    let mut n = 0;
    model
        .for_each_logit_row(&seqs[1], |i, row| {
            let want = &full[(40 + i) * vocab..(41 + i) * vocab];
            assert!(row
                .iter()
                .zip(want)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())));
            n += 1;
        })
        .unwrap();
    assert_eq!(n, 40);
    let err = model
        .unembed_rows(&normed[..d + 1], &mut logits)
        .unwrap_err();
    assert!(err.to_string().contains("d_model"), "{err}");
}
