//! `evaluate_replacement` on the tiny model with transcoders whose figures are known in advance: a lookup
//! table that returns the clean MLP output of the row it sees (exact: FVE 1, CE = clean, KL 0, recovered 1,
//! error 0) and one that always predicts the mean MLP output (FVE 0, every-MLP CE = mean-ablated CE).

use std::collections::HashMap;
use std::sync::Mutex;

use zephyra_analysis::replacement::{
    evaluate_replacement, LayerTranscoder, ReplacementConfig, Transcoder,
};
use zephyra_analysis::Result;
use zephyra_data::harvest::capture_rows;
use zephyra_data::ExclusionRule;
use zephyra_lm::testing::tiny_llama;
use zephyra_lm::{HookPoint, Llama};

/// Returns the stored output for an input row seen in the clean run (bitwise key); panics otherwise,
/// which would mean the replaced model's input differs from the clean one.
struct Lookup {
    d: usize,
    table: Mutex<HashMap<Vec<u32>, Vec<f32>>>,
    misses: Mutex<usize>,
}

impl Transcoder for Lookup {
    fn d_in(&self) -> usize {
        self.d
    }
    fn d_out(&self) -> usize {
        self.d
    }
    fn transcode(&self, x: &[f32], n_rows: usize) -> Result<Vec<f32>> {
        let table = self.table.lock().unwrap();
        let mut out = Vec::with_capacity(n_rows * self.d);
        for row in x.chunks_exact(self.d) {
            let key: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
            match table.get(&key) {
                Some(y) => out.extend_from_slice(y),
                None => {
                    *self.misses.lock().unwrap() += 1;
                    out.extend(std::iter::repeat_n(0.0, self.d));
                }
            }
        }
        Ok(out)
    }
}

/// Always predicts `mean`.
struct Constant(Vec<f32>);

impl Transcoder for Constant {
    fn d_in(&self) -> usize {
        self.0.len()
    }
    fn d_out(&self) -> usize {
        self.0.len()
    }
    fn transcode(&self, _x: &[f32], n_rows: usize) -> Result<Vec<f32>> {
        Ok((0..n_rows).flat_map(|_| self.0.iter().copied()).collect())
    }
}

fn contexts() -> Vec<Vec<u32>> {
    (0..6u32)
        .map(|c| (0..12u32).map(|p| 3 + (c * 37 + p * 11) % 200).collect())
        .collect()
}

fn hooks(l: usize) -> (HookPoint, HookPoint) {
    (HookPoint::ResidMid(l), HookPoint::MlpOut(l))
}

fn per_layer<'a>(tcs: &[&'a dyn Transcoder]) -> Vec<LayerTranscoder<'a>> {
    (tcs.iter().enumerate())
        .map(|(l, &transcoder)| LayerTranscoder {
            layer: l,
            input: hooks(l).0,
            output: hooks(l).1,
            transcoder,
        })
        .collect()
}

/// The tiny model (weights read into memory), its width, its depth and the eval contexts.
fn tiny_model() -> (Llama, usize, usize, Vec<Vec<u32>>) {
    let tiny = tiny_llama(3).unwrap();
    let model = Llama::load_gguf(&tiny.path).unwrap();
    let (d, n_layers) = (model.config().d_model, model.config().n_layers);
    (model, d, n_layers, contexts())
}

#[test]
fn an_exact_transcoder_leaves_the_model_unchanged_and_a_constant_one_is_mean_ablation() {
    let (model, d, n_layers, ctx) = tiny_model();
    let cfg = ReplacementConfig {
        batch_contexts: 4,
        downstream_contexts: 6,
        rule: ExclusionRule::default(),
    };
    // Tables and means from a clean run (positions ≥ 1, as the eval scores them).
    let mut lookups = Vec::new();
    let mut means = Vec::new();
    for l in 0..n_layers {
        let (i, o) = hooks(l);
        let rows = capture_rows(&model, &ctx, &[i, o]).unwrap();
        let mut table = HashMap::new();
        let mut mean = vec![0.0f64; d];
        let mut n = 0;
        for r in 0..rows[0].len() / d {
            let key = rows[0][r * d..(r + 1) * d]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            table.insert(key, rows[1][r * d..(r + 1) * d].to_vec());
            if r % 12 != 0 {
                mean.iter_mut()
                    .zip(&rows[1][r * d..(r + 1) * d])
                    .for_each(|(m, &v)| *m += f64::from(v));
                n += 1;
            }
        }
        lookups.push(Lookup {
            d,
            table: Mutex::new(table),
            misses: Mutex::new(0),
        });
        means.push(Constant(
            mean.iter().map(|&m| (m / n as f64) as f32).collect(),
        ));
    }
    let exact: Vec<&dyn Transcoder> = lookups.iter().map(|t| t as &dyn Transcoder).collect();
    let ts = per_layer(&exact);
    let figs = evaluate_replacement(&model, &ts, &|_| false, &ctx, &cfg, &mut |_, _| {}).unwrap();
    for t in &lookups {
        assert_eq!(
            *t.misses.lock().unwrap(),
            0,
            "the replaced model saw an input the clean one did not"
        );
    }
    assert_eq!(figs.n_tokens, 6 * 11);
    for f in &figs.layers {
        assert!((f.reconstruction.fve - 1.0).abs() < 1e-12, "{f:?}");
        assert_eq!(f.error_norm, 0.0);
        assert!(f.kl_replaced.unwrap().abs() < 1e-9);
    }
    let all = figs.all.clone().unwrap();
    assert_eq!(all.n_positions, 6 * 11);
    assert!((all.ce_replaced - all.ce_clean).abs() < 1e-9, "{all:?}");
    assert!(all.kl_replaced.abs() < 1e-9);
    assert!(
        all.ce_mean_ablated > all.ce_clean + 1e-3,
        "mean ablation must hurt: {all:?}"
    );
    assert!((all.ce_recovered.unwrap() - 1.0).abs() < 1e-6);

    let constant: Vec<&dyn Transcoder> = means.iter().map(|t| t as &dyn Transcoder).collect();
    let ts = per_layer(&constant);
    let figs = evaluate_replacement(&model, &ts, &|_| false, &ctx, &cfg, &mut |_, _| {}).unwrap();
    let all = figs.all.unwrap();
    for f in &figs.layers {
        assert!(f.reconstruction.fve.abs() < 1e-5, "{f:?}");
        assert!(f.error_norm > 0.0);
    }
    assert!(
        (all.ce_replaced - all.ce_mean_ablated).abs() < 1e-9,
        "{all:?}"
    );
    assert!(all.ce_recovered.unwrap().abs() < 1e-6);
}

#[test]
fn rows_the_rule_excludes_are_neither_scored_nor_replaced() {
    // A transcoder exact everywhere except at the rows of one token, where it writes garbage. With that
    // token special, the rule excludes its rows: they keep their clean MLP output and stay out of the
    // figures, so the figures are exact; without it they are not (the test can fail).
    let (model, d, n_layers, ctx) = tiny_model();
    let poisoned = ctx[0][5];
    let tokens: Vec<u32> = ctx.iter().flatten().copied().collect();
    let n_poisoned = tokens
        .iter()
        .enumerate()
        .filter(|&(r, &t)| t == poisoned && r % 12 != 0)
        .count();
    assert!(n_poisoned >= 1);
    let lookups: Vec<Lookup> = (0..n_layers)
        .map(|l| {
            let (i, o) = hooks(l);
            let rows = capture_rows(&model, &ctx, &[i, o]).unwrap();
            let mut table = HashMap::new();
            for (r, &t) in tokens.iter().enumerate() {
                let key = rows[0][r * d..(r + 1) * d]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let out = if t == poisoned {
                    vec![100.0; d]
                } else {
                    rows[1][r * d..(r + 1) * d].to_vec()
                };
                table.insert(key, out);
            }
            Lookup {
                d,
                table: Mutex::new(table),
                misses: Mutex::new(0),
            }
        })
        .collect();
    let exact: Vec<&dyn Transcoder> = lookups.iter().map(|t| t as &dyn Transcoder).collect();
    let ts = per_layer(&exact);
    let cfg = ReplacementConfig {
        batch_contexts: 4,
        downstream_contexts: 6,
        rule: ExclusionRule {
            max_norm_multiple: None,
            ..ExclusionRule::default()
        },
    };
    let special = |t: u32| t == poisoned;
    let figs = evaluate_replacement(&model, &ts, &special, &ctx, &cfg, &mut |_, _| {}).unwrap();
    assert_eq!(figs.n_tokens as usize, 6 * 11 - n_poisoned);
    for f in &figs.layers {
        assert!((f.reconstruction.fve - 1.0).abs() < 1e-12, "{f:?}");
        assert!(f.kl_replaced.unwrap().abs() < 1e-9, "{f:?}");
    }
    let all = figs.all.unwrap();
    assert!(all.kl_replaced.abs() < 1e-9, "{all:?}");
    assert!((all.ce_replaced - all.ce_clean).abs() < 1e-9, "{all:?}");

    let figs = evaluate_replacement(&model, &ts, &|_| false, &ctx, &cfg, &mut |_, _| {}).unwrap();
    assert_eq!(figs.n_tokens, 6 * 11);
    assert!(figs.layers.iter().all(|f| f.reconstruction.fve < 0.99));
    assert!(figs.all.unwrap().kl_replaced > 1e-3);
}
