//! Finite-difference checks of every frozen piece's hand-derived backward pass against an independent
//! `f64` forward written with scalar loops, and the graph identities on a random frozen model.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::frozen::{skip_backward, FrozenLayer, FrozenPrompt, FrozenWeights};
use super::graph::{attribute, AttributionConfig};
use super::local::{LocalReplacement, Sources, TranscoderView};

/// Owned random weights of a small model (d = 8, 4 query heads sharing 2 kv heads of width 2).
pub(super) struct Owned {
    pub d: usize,
    pub n_heads: usize,
    pub n_kv: usize,
    pub dh: usize,
    pub gains: Vec<Vec<f32>>, // per layer: attn, post-attn, mlp-in
    pub w_v: Vec<Vec<f32>>,
    pub w_o: Vec<Vec<f32>>,
    pub final_gain: Vec<f32>,
    pub unembed: Vec<f32>,
    pub embed: Vec<f32>,
    pub post_norm: bool,
}

fn randn(rng: &mut ChaCha8Rng, n: usize, s: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * s)
        .collect()
}

impl Owned {
    pub fn new(seed: u64, n_layers: usize, post_norm: bool) -> Owned {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, n_heads, n_kv, dh, vocab) = (8, 4, 2, 2, 11);
        let mut gains = Vec::new();
        let (mut w_v, mut w_o) = (Vec::new(), Vec::new());
        for _ in 0..n_layers {
            gains.push((0..3 * d).map(|_| 0.5 + rng.random::<f32>()).collect());
            w_v.push(randn(&mut rng, n_kv * dh * d, 0.5));
            w_o.push(randn(&mut rng, d * n_heads * dh, 0.5));
        }
        Owned {
            d,
            n_heads,
            n_kv,
            dh,

            gains,
            w_v,
            w_o,
            final_gain: (0..d).map(|_| 0.5 + rng.random::<f32>()).collect(),
            unembed: randn(&mut rng, vocab * d, 1.0),
            embed: randn(&mut rng, vocab * d, 1.0),
            post_norm,
        }
    }

    pub fn weights(&self) -> FrozenWeights<'_> {
        let d = self.d;
        FrozenWeights {
            d_model: d,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv,
            d_head: self.dh,
            layers: (0..self.w_v.len())
                .map(|l| FrozenLayer {
                    attn_gain: &self.gains[l][..d],
                    w_v: &self.w_v[l],
                    w_o: &self.w_o[l],
                    post_attn_gain: self.post_norm.then(|| &self.gains[l][d..2 * d]),
                    mlp_in_gain: (l % 2 == 0).then(|| &self.gains[l][2 * d..]),
                })
                .collect(),
            final_gain: &self.final_gain,
            unembed: &self.unembed,
            embed: &self.embed,
            embed_scale: 1.5,
        }
    }

    /// Random causal patterns (rows sum to one) and scales.
    pub fn prompt(&self, seed: u64, tokens: Vec<u32>) -> FrozenPrompt {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (seq, n_layers) = (tokens.len(), self.w_v.len());
        let mut patterns = Vec::new();
        for _ in 0..n_layers {
            let mut p = vec![0.0f32; self.n_heads * seq * seq];
            for h in 0..self.n_heads {
                for t in 0..seq {
                    let row = &mut p[(h * seq + t) * seq..(h * seq + t + 1) * seq];
                    let mut sum = 0.0;
                    for x in row.iter_mut().take(t + 1) {
                        *x = rng.random::<f32>() + 0.05;
                        sum += *x;
                    }
                    row.iter_mut().for_each(|x| *x /= sum);
                }
            }
            patterns.push(p);
        }
        let mut scales = |n: usize| -> Vec<Vec<f32>> {
            (0..n)
                .map(|_| (0..seq).map(|_| 0.3 + rng.random::<f32>()).collect())
                .collect()
        };
        let attn_inv_scale = scales(n_layers);
        let post_attn_inv_scale = if self.post_norm {
            scales(n_layers)
        } else {
            Vec::new()
        };
        let mlp_inv_scale = scales(n_layers);
        let final_inv_scale = scales(1).remove(0);
        FrozenPrompt {
            tokens,
            patterns,
            attn_inv_scale,
            post_attn_inv_scale,
            mlp_inv_scale,
            final_inv_scale,
        }
    }

    /// Independent f64 reference of the frozen attention of layer `l` on one prompt.
    fn attn_ref(&self, l: usize, fp: &FrozenPrompt, r: &[f64]) -> Vec<f64> {
        let (d, dh, seq) = (self.d, self.dh, fp.seq());
        let group = self.n_heads / self.n_kv;
        let g = &self.gains[l];
        let mut out = vec![0.0f64; seq * d];
        for t in 0..seq {
            let mut o = vec![0.0f64; d];
            for h in 0..self.n_heads {
                let kv = h / group;
                for s in 0..=t {
                    let p = f64::from(fp.patterns[l][(h * seq + t) * seq + s]);
                    for e in 0..dh {
                        // v[s, kv, e] = Σ_j W_V[kv·dh+e, j] · g_j R[s,j] ι[s]
                        let mut v = 0.0;
                        for j in 0..d {
                            let x =
                                f64::from(g[j]) * r[s * d + j] * f64::from(fp.attn_inv_scale[l][s]);
                            v += f64::from(self.w_v[l][(kv * dh + e) * d + j]) * x;
                        }
                        for (i, o) in o.iter_mut().enumerate() {
                            let wo = self.w_o[l][i * self.n_heads * dh + h * dh + e];
                            *o += f64::from(wo) * p * v;
                        }
                    }
                }
            }
            for i in 0..d {
                out[t * d + i] = if self.post_norm {
                    f64::from(g[d + i]) * o[i] * f64::from(fp.post_attn_inv_scale[l][t])
                } else {
                    o[i]
                };
            }
        }
        out
    }
}

/// Central differences of `f` at `x` (exact for a linear `f` up to rounding): column `j` of the Jacobian.
fn fd_column(f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], j: usize) -> Vec<f64> {
    let h = 1e-3;
    let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
    xp[j] += h;
    xm[j] -= h;
    let (fp, fm) = (f(&xp), f(&xm));
    fp.iter()
        .zip(&fm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// A batched backward pass: `(output gradients [n_b, n_out], n_b, input gradients [n_b, n_in])`.
type Backward<'a> = dyn Fn(&[f32], usize, &mut [f32]) + 'a;

/// Checks a batched backward `back(g, n_b, grad)` (rows = one-hot output gradients) against the
/// finite-difference Jacobian of `reference`.
fn check_backward(
    n_in: usize,
    n_out: usize,
    reference: &dyn Fn(&[f64]) -> Vec<f64>,
    back: &Backward<'_>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x: Vec<f64> = (0..n_in).map(|_| rng.random::<f64>() - 0.5).collect();
    // All output rows at once, one backward pass: g = identity rows.
    let mut g = vec![0.0f32; n_out * n_out];
    for i in 0..n_out {
        g[i * n_out + i] = 1.0;
    }
    let mut grad = vec![0.0f32; n_out * n_in];
    back(&g, n_out, &mut grad);
    for j in 0..n_in {
        let col = fd_column(reference, &x, j);
        for i in 0..n_out {
            let (bw, fd) = (f64::from(grad[i * n_in + j]), col[i]);
            assert!(
                close(bw, fd, 1e-5),
                "∂out[{i}]/∂in[{j}]: backward {bw}, finite differences {fd}"
            );
        }
    }
}

#[test]
fn attention_ov_backward_matches_finite_differences_with_and_without_post_norm() {
    for post_norm in [false, true] {
        let m = Owned::new(1, 2, post_norm);
        let w = m.weights();
        let fp = m.prompt(2, vec![1, 4, 2, 7, 3]);
        let (seq, d) = (fp.seq(), m.d);
        for l in 0..2 {
            let reference = |r: &[f64]| m.attn_ref(l, &fp, r);
            let back = |g: &[f32], n_b: usize, grad: &mut [f32]| {
                w.attn_backward(l, &fp, g, n_b, seq, grad);
            };
            check_backward(seq * d, seq * d, &reference, &back);
        }
    }
}

#[test]
fn attention_forward_matches_the_reference() {
    let m = Owned::new(3, 1, true);
    let (w, fp) = (m.weights(), m.prompt(4, vec![0, 1, 2, 3]));
    let (seq, d) = (fp.seq(), m.d);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let r = randn(&mut rng, seq * d, 1.0);
    let mut out = vec![0.0f32; seq * d];
    w.attn_forward(0, &fp, &r, 1, seq, &mut out);
    let want = m.attn_ref(0, &fp, &r.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
    for (a, b) in out.iter().zip(&want) {
        assert!(close(f64::from(*a), *b, 1e-5), "{a} vs {b}");
    }
}

#[test]
fn skip_path_and_frozen_norm_backward_match_finite_differences() {
    let m = Owned::new(5, 1, false);
    let fp = m.prompt(6, vec![3, 1, 4]);
    let (seq, d) = (fp.seq(), m.d);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w_skip = randn(&mut rng, d * d, 0.7);
    let (gain, inv) = (&m.gains[0][2 * d..], &fp.mlp_inv_scale[0]);
    let reference = |r: &[f64]| {
        let mut out = vec![0.0f64; seq * d];
        for p in 0..seq {
            for i in 0..d {
                for j in 0..d {
                    let x = f64::from(gain[j]) * r[p * d + j] * f64::from(inv[p]);
                    out[p * d + i] += f64::from(w_skip[i * d + j]) * x;
                }
            }
        }
        out
    };
    let back =
        |g: &[f32], _n_b: usize, grad: &mut [f32]| skip_backward(&w_skip, gain, inv, g, seq, grad);
    check_backward(seq * d, seq * d, &reference, &back);
}

/// A random local replacement model: random transcoders (with skip), random codes and MLP outputs.
pub(super) struct RandomReplacement {
    pub model: Owned,
    pub prompt: FrozenPrompt,
    pub enc: Vec<Vec<f32>>,
    pub b_enc: Vec<Vec<f32>>,
    pub dec: Vec<Vec<f32>>,
    pub b_dec: Vec<Vec<f32>>,
    pub skip: Vec<Vec<f32>>,
    pub mlp_in: Vec<Vec<f32>>,
    pub codes: Vec<Vec<f32>>,
    pub mlp_out: Vec<Vec<f32>>,
}

pub(super) const D_SAE: usize = 6;

impl RandomReplacement {
    pub fn new(seed: u64, n_layers: usize, post_norm: bool) -> Self {
        let model = Owned::new(seed, n_layers, post_norm);
        let prompt = model.prompt(seed + 1, vec![1, 5, 2, 9, 4, 7]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 2);
        let (d, seq) = (model.d, prompt.seq());
        let mut s = RandomReplacement {
            model,
            prompt,
            enc: vec![],
            b_enc: vec![],
            dec: vec![],
            b_dec: vec![],
            skip: vec![],
            mlp_in: vec![],
            codes: vec![],
            mlp_out: vec![],
        };
        for _ in 0..n_layers {
            s.enc.push(randn(&mut rng, d * D_SAE, 1.0));
            s.b_enc.push(randn(&mut rng, D_SAE, 0.2));
            s.dec.push(randn(&mut rng, D_SAE * d, 0.5));
            s.b_dec.push(randn(&mut rng, d, 0.3));
            s.skip.push(randn(&mut rng, d * d, 0.3));
            s.mlp_in.push(randn(&mut rng, seq * d, 1.0));
            let codes = (0..seq * D_SAE)
                .map(|_| {
                    if rng.random::<f32>() < 0.5 {
                        rng.random::<f32>() + 0.1
                    } else {
                        0.0
                    }
                })
                .collect();
            s.codes.push(codes);
            s.mlp_out.push(randn(&mut rng, seq * d, 1.0));
        }
        s
    }

    pub fn local(&self) -> LocalReplacement<'_> {
        self.local_holding(&vec![false; self.prompt.seq()])
    }

    pub fn local_holding(&self, held: &[bool]) -> LocalReplacement<'_> {
        let tcs = (0..self.enc.len())
            .map(|l| TranscoderView {
                d_sae: D_SAE,
                w_enc: &self.enc[l],
                b_enc: &self.b_enc[l],
                w_dec: &self.dec[l],
                b_dec: &self.b_dec[l],
                w_skip: Some(&self.skip[l]),
                b_dec_to_input: false,
            })
            .collect();
        LocalReplacement::new(
            self.model.weights(),
            self.prompt.clone(),
            tcs,
            (&self.mlp_in, &self.codes, &self.mlp_out),
            held,
        )
        .expect("consistent shapes")
    }
}

#[test]
fn incoming_edges_plus_bias_equal_every_targets_value() {
    for (post_norm, hold) in [(false, false), (true, false), (false, true), (true, true)] {
        let rr = RandomReplacement::new(11, 3, post_norm);
        let seq = rr.prompt.seq();
        // Held positions 0 and 2: their MLP outputs move into the biases, the sums stay exact.
        let held: Vec<bool> = (0..seq).map(|p| hold && (p == 0 || p == 2)).collect();
        let lr = rr.local_holding(&held);
        if hold {
            assert!(lr.active.iter().all(|a| a.pos != 0 && a.pos != 2));
            let whole = rr.local().forward(Sources::ALL, None);
            let run = lr.forward(Sources::ALL, None);
            for (a, b) in whole.last.iter().zip(&run.last) {
                assert!(close(f64::from(*a), f64::from(*b), 1e-5), "{a} vs {b}");
            }
        }
        let cfg = AttributionConfig {
            max_n_logits: 4,
            desired_logit_prob: 0.99,
            max_feature_nodes: None,
            batch_size: 5,
        };
        let g = attribute(&lr, &cfg, &mut |_, _| {}).expect("attribution");
        assert_eq!(g.features.len(), lr.active.len());
        assert!(
            g.features.len() > 20,
            "the planted codes activate many features"
        );
        let run = lr.forward(Sources::ALL, None);
        let feats: Vec<usize> = (0..lr.active.len()).collect();
        let (fb, lb) = lr.target_biases(&feats, &g.logit_tokens);
        let n = g.n_nodes();
        for (i, a) in lr.active.iter().enumerate() {
            // The value: the encoder on the frozen pass's own input (equal to the real one by construction
            // only if the frozen pass is exact: checked against the real model in the integration tests).
            let x = lr.mlp_input(&run, a.layer, a.pos);
            let tc = &lr.transcoders[a.layer];
            let value =
                super::local::dot(&tc.encoder_row(a.feature), &x) + tc.encoder_bias(a.feature);
            let sum: f64 = (0..n).map(|s| f64::from(g.edge(i, s))).sum::<f64>() + fb[i];
            assert!(
                close(sum, value, 1e-4),
                "feature {i}: Σ edges + bias = {sum}, value {value}"
            );
        }
        let logits = lr.logits(&run, lr.prompt.seq() - 1);
        let want = super::graph::demeaned_logits(&logits, &g.logit_tokens);
        for k in 0..g.logit_tokens.len() {
            let t = g.logit_start() + k;
            let sum: f64 = (0..n).map(|s| f64::from(g.edge(t, s))).sum::<f64>() + lb[k];
            assert!(
                close(sum, want[k], 1e-4),
                "logit {k}: Σ edges + bias = {sum}, value {}",
                want[k]
            );
        }
    }
}

#[test]
fn scaling_one_feature_moves_each_direct_target_by_edge_times_the_change() {
    let rr = RandomReplacement::new(21, 3, false);
    let lr = rr.local();
    let cfg = AttributionConfig {
        max_n_logits: 3,
        desired_logit_prob: 0.99,
        max_feature_nodes: None,
        batch_size: 64,
    };
    let g = attribute(&lr, &cfg, &mut |_, _| {}).expect("attribution");
    let base = lr.forward(Sources::ALL, None);
    let value = |run: &super::local::FrozenRun, i: usize| {
        let a = &lr.active[i];
        let x = lr.mlp_input(run, a.layer, a.pos);
        super::local::dot(&lr.transcoders[a.layer].encoder_row(a.feature), &x)
    };
    let last = lr.prompt.seq() - 1;
    let mut checked = 0;
    // Every feature is a constant of the frozen model, so a source's effect on any later target is
    // exactly its direct edge.
    for s in (0..lr.active.len()).step_by(3) {
        let factor = 1.7f32;
        let run = lr.forward(Sources::ALL, Some((s, factor)));
        for t in (0..lr.active.len()).filter(|&t| lr.active[t].layer > lr.active[s].layer) {
            let moved = value(&run, t) - value(&base, t);
            let want = f64::from(g.edge(t, s)) * f64::from(factor - 1.0);
            assert!(
                close(moved, want, 1e-4),
                "{s}→{t}: moved {moved}, edge × change {want}"
            );
            checked += 1;
        }
        let before = super::graph::demeaned_logits(&lr.logits(&base, last), &g.logit_tokens);
        let after = super::graph::demeaned_logits(&lr.logits(&run, last), &g.logit_tokens);
        for k in 0..g.logit_tokens.len() {
            let want = f64::from(g.edge(g.logit_start() + k, s)) * f64::from(factor - 1.0);
            assert!(close(after[k] - before[k], want, 1e-4), "{s}→logit {k}");
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} pairs checked");
}
