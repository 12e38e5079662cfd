//! Gemma 3 270M against Hugging Face transformers (`testdata/gemma3`): every kept hook tensor of
//! every prompt (the 700-token one crosses the 512-token sliding window), the last logits, per-token
//! log-probabilities, mean cross-entropy, top-5 tokens and the greedy continuation.

mod gemma_common;

use gemma_common::{f32s, gemma, i64s, kept_hook_rows, reference, rel_errs, tensors, HookRows};
use zephyra_lm::{GenerateConfig, Hooks, Logits};

const TOL: f64 = 1e-4;

#[test]
fn every_kept_hook_tensor_and_last_logits_match() {
    let model = gemma();
    let d = model.config().d_model;
    let oracle = tensors();
    for (p, prompt) in reference().prompts.iter().enumerate() {
        let (rows, out) = kept_hook_rows(model, &oracle, p, &prompt.ids, Logits::Last);
        let prefix = format!("prompt{p}.");
        for HookRows { name, got, want } in &rows {
            let (rel, worst_row) = rel_errs(got, want, d);
            assert!(
                rel < TOL && worst_row < TOL,
                "prompt {p} {name}: relative error {rel:e}, worst row {worst_row:e}"
            );
        }
        let logits = f32s(out.logits.as_ref().expect("last logits"));
        let ids = i64s(&oracle[&format!("{prefix}logits_last_ids")]);
        let got: Vec<f32> = ids.iter().map(|&i| logits[i as usize]).collect();
        let want = f32s(&oracle[&format!("{prefix}logits_last")]);
        let (rel, _) = rel_errs(&got, &want, got.len());
        assert!(rel < TOL, "prompt {p} logits_last: relative error {rel:e}");
    }
}

#[test]
fn logprobs_mean_ce_and_top5_match() {
    let model = gemma();
    let oracle = tensors();
    for (p, prompt) in reference().prompts.iter().enumerate() {
        let ids = &prompt.ids;
        let mut logprobs = Vec::new();
        let mut top5: Vec<Vec<u32>> = Vec::new();
        let mut rows_checked = 0;
        let want_top5 = i64s(&oracle[&format!("prompt{p}.top5_ids")]);
        model
            .for_each_logit_row(ids, |i, row| {
                if let Some(&next) = ids.get(i + 1) {
                    logprobs.push(zephyra_lm::model::log_softmax_at(row, next as usize));
                }
                let mut order: Vec<u32> = (0..row.len() as u32).collect();
                order.select_nth_unstable_by(5, |&a, &b| {
                    row[b as usize].total_cmp(&row[a as usize])
                });
                order.truncate(5);
                order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
                // A swap between two logits equal to float precision is not a mismatch.
                let scale = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (k, &id) in order.iter().enumerate() {
                    let want = want_top5[i * 5 + k] as usize;
                    let gap = (row[id as usize] - row[want]).abs();
                    assert!(
                        id as usize == want || gap <= 1e-4 * scale,
                        "prompt {p} position {i} rank {k}: {id} vs {want}"
                    );
                }
                top5.push(order);
                rows_checked += 1;
            })
            .expect("logit rows");
        assert_eq!(rows_checked, ids.len());
        let want = f32s(&oracle[&format!("prompt{p}.next_token_logprob")]);
        let (rel, _) = rel_errs(&logprobs, &want, want.len());
        assert!(
            rel < TOL,
            "prompt {p} next_token_logprob: relative error {rel:e}"
        );
        let ce = -logprobs.iter().map(|&x| f64::from(x)).sum::<f64>() / logprobs.len() as f64;
        assert!(
            (ce - prompt.mean_ce).abs() < 1e-4,
            "prompt {p}: mean CE {ce} vs {}",
            prompt.mean_ce
        );
        let lp = model.next_token_logprobs(ids).expect("logprobs");
        assert_eq!(lp, logprobs);
    }
}

#[test]
fn greedy_continuation_is_identical() {
    let model = gemma();
    let greedy = reference().greedy;
    const NEW: usize = 16;
    let (prompt, want) = greedy.ids.split_at(greedy.ids.len() - NEW);
    let out = model
        .generate(
            prompt,
            &GenerateConfig::greedy(NEW, vec![]),
            &mut Hooks::new(),
            |_| {},
        )
        .expect("generate");
    assert_eq!(out.tokens, want);
}
