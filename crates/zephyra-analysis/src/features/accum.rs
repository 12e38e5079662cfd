//! Bounded per-latent accumulators, filled one batch of encoded contexts at a time.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    correlation, hist_bin, Cofire, Correlation, Example, FeatureOptions, QuantileGroup, HIST_BINS,
};

/// What is accumulated for one latent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LatentAcc {
    pub n_fires: u64,
    pub sum: f64,
    pub max: f32,
    pub hist: Vec<u32>,
    /// At most `n_top` examples, unordered.
    pub top: Vec<Example>,
    /// Uniform reservoir of firing examples.
    pub samples: Vec<Example>,
    /// Space-saving counters `(latent, count)`.
    pub cofire: Vec<(u32, u64)>,
    /// `Σx²` over the tokens where it fired (exact).
    #[serde(default)]
    pub sum_sq: f64,
    /// `Σxy` with the latent of the same slot of `cofire`, since that slot last took its latent
    /// (a checkpoint from before this field resumes with zeros).
    #[serde(default)]
    pub cofire_xy: Vec<f64>,
}

/// All latents' accumulators plus the pass counters; this is what a checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Accumulators {
    pub d_sae: usize,
    pub n_contexts: u64,
    pub n_tokens_read: u64,
    pub n_tokens_kept: u64,
    pub latents: Vec<LatentAcc>,
}

/// One batch of encoded contexts.
pub(crate) struct Batch<'a> {
    /// `[n_contexts, ctx]` token ids.
    pub tokens: &'a [u32],
    /// Whether each row was kept by the exclusion rule.
    pub keep: &'a [bool],
    /// Dense codes `[n_contexts · ctx, d_sae]` (rows that were not kept are ignored).
    pub codes: &'a [f32],
    pub ctx: usize,
}

impl Accumulators {
    pub fn new(d_sae: usize) -> Self {
        Self {
            d_sae,
            n_contexts: 0,
            n_tokens_read: 0,
            n_tokens_kept: 0,
            latents: vec![
                LatentAcc {
                    hist: vec![0; HIST_BINS],
                    ..Default::default()
                };
                d_sae
            ],
        }
    }

    /// Adds a batch. `rng` drives the reservoirs (seed it per batch for resumable determinism).
    pub fn add(&mut self, batch: &Batch<'_>, opts: &FeatureOptions, rng: &mut impl Rng) {
        let d_sae = self.d_sae;
        let ctx = batch.ctx;
        let n_ctx = batch.tokens.len() / ctx;
        // Per-context maximum of each latent: (act, pos); `touched` lists the latents to visit and reset.
        let mut ctx_max: Vec<(f32, u32)> = vec![(0.0, 0); d_sae];
        let mut touched: Vec<u32> = Vec::new();
        let mut active: Vec<(f32, u32)> = Vec::new();
        for c in 0..n_ctx {
            let context_index = self.n_contexts + c as u64;
            for pos in 0..ctx {
                let row = c * ctx + pos;
                self.n_tokens_read += 1;
                if !batch.keep[row] {
                    continue;
                }
                self.n_tokens_kept += 1;
                let codes = &batch.codes[row * d_sae..(row + 1) * d_sae];
                active.clear();
                for (j, &a) in codes.iter().enumerate() {
                    if a > 0.0 {
                        active.push((a, j as u32));
                    }
                }
                for &(a, j) in &active {
                    let acc = &mut self.latents[j as usize];
                    acc.n_fires += 1;
                    acc.sum += f64::from(a);
                    acc.sum_sq += f64::from(a) * f64::from(a);
                    acc.max = acc.max.max(a);
                    acc.hist[hist_bin(a)] += 1;
                    // Reservoir sampling (Vitter's algorithm R).
                    let slot = if acc.samples.len() < opts.n_samples {
                        Some(acc.samples.len())
                    } else {
                        let r = rng.random_range(0..acc.n_fires) as usize;
                        (r < opts.n_samples).then_some(r)
                    };
                    if let Some(s) = slot {
                        let ex = window(batch, c, pos, j as usize, d_sae, context_index, opts);
                        if s == acc.samples.len() {
                            acc.samples.push(ex);
                        } else {
                            acc.samples[s] = ex;
                        }
                    }
                    let m = &mut ctx_max[j as usize];
                    if m.0 == 0.0 {
                        touched.push(j);
                    }
                    if a > m.0 {
                        *m = (a, pos as u32);
                    }
                }
                if active.len() > 1 && opts.n_cofire > 0 {
                    if active.len() > opts.cofire_active {
                        active
                            .select_nth_unstable_by(opts.cofire_active, |x, y| y.0.total_cmp(&x.0));
                        active.truncate(opts.cofire_active);
                    }
                    let capacity = opts.n_cofire * 4;
                    for &(a, j) in &active {
                        let acc = &mut self.latents[j as usize];
                        for &(b, other) in &active {
                            if other == j {
                                continue;
                            }
                            if let Some((slot, fresh)) =
                                space_saving(&mut acc.cofire, other, capacity)
                            {
                                acc.cofire_xy.resize(acc.cofire.len(), 0.0);
                                let xy = f64::from(a) * f64::from(b);
                                if fresh {
                                    acc.cofire_xy[slot] = xy;
                                } else {
                                    acc.cofire_xy[slot] += xy;
                                }
                            }
                        }
                    }
                }
            }
            for &j in &touched {
                let (a, pos) = ctx_max[j as usize];
                ctx_max[j as usize] = (0.0, 0);
                let acc = &mut self.latents[j as usize];
                // Append while there is room, else replace the weakest example when this one beats it.
                let slot = if acc.top.len() < opts.n_top {
                    None
                } else {
                    match weakest(&acc.top) {
                        Some((k, weakest)) if a > weakest => Some(k),
                        _ => continue,
                    }
                };
                let example = window(
                    batch,
                    c,
                    pos as usize,
                    j as usize,
                    d_sae,
                    context_index,
                    opts,
                );
                match slot {
                    Some(k) => acc.top[k] = example,
                    None => acc.top.push(example),
                }
            }
            touched.clear();
        }
        self.n_contexts += n_ctx as u64;
    }
}

/// Index and activation of the weakest example.
fn weakest(examples: &[Example]) -> Option<(usize, f32)> {
    examples
        .iter()
        .enumerate()
        .map(|(k, e)| (k, e.act))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// One space-saving update: count `item`, evicting the smallest counter when full. Returns the slot that
/// counted it and whether that slot has just taken `item` (new or evicted); `None` when `capacity` is 0.
fn space_saving(
    counters: &mut Vec<(u32, u64)>,
    item: u32,
    capacity: usize,
) -> Option<(usize, bool)> {
    if let Some(k) = counters.iter().position(|c| c.0 == item) {
        counters[k].1 += 1;
        Some((k, false))
    } else if counters.len() < capacity {
        counters.push((item, 1));
        Some((counters.len() - 1, true))
    } else {
        let (k, &(_, min)) = counters.iter().enumerate().min_by_key(|(_, c)| c.1)?;
        counters[k] = (item, min + 1);
        Some((k, true))
    }
}

/// The example window of latent `j` around `pos` of context `c`.
fn window(
    batch: &Batch<'_>,
    c: usize,
    pos: usize,
    j: usize,
    d_sae: usize,
    context: u64,
    opts: &FeatureOptions,
) -> Example {
    let ctx = batch.ctx;
    let start = pos.saturating_sub(opts.window_before);
    let end = (pos + opts.window_after + 1).min(ctx);
    let row0 = c * ctx;
    let token_ids = batch.tokens[row0 + start..row0 + end].to_vec();
    let acts = (start..end)
        .map(|p| {
            if batch.keep[row0 + p] {
                batch.codes[(row0 + p) * d_sae + j].max(0.0)
            } else {
                0.0
            }
        })
        .collect();
    Example {
        act: batch.codes[(row0 + pos) * d_sae + j],
        context,
        pos: pos as u32,
        center: (pos - start) as u32,
        token_ids,
        tokens: Vec::new(),
        acts,
    }
}

impl Accumulators {
    /// The `n` co-firing candidates of latent `j` with the largest Pearson correlation (ties: smaller id
    /// first), over the kept tokens; see [`Correlation`] for the formulas and what is exact.
    pub fn correlated(&self, j: usize, n: usize) -> Vec<Correlation> {
        let Some(acc) = self.latents.get(j) else {
            return Vec::new();
        };
        let n_tokens = self.n_tokens_kept as f64;
        let mut out: Vec<Correlation> = acc
            .cofire
            .iter()
            .zip(&acc.cofire_xy)
            .filter_map(|(&(other, _), &sxy)| {
                let o = self.latents.get(other as usize)?;
                let (pearson, cosine) =
                    correlation(n_tokens, acc.sum, o.sum, acc.sum_sq, o.sum_sq, sxy);
                Some(Correlation {
                    id: other,
                    pearson,
                    cosine,
                })
            })
            .collect();
        out.sort_by(|a, b| b.pearson.total_cmp(&a.pearson).then(a.id.cmp(&b.id)));
        out.truncate(n);
        out
    }
}

impl LatentAcc {
    /// Top examples, strongest first.
    pub fn sorted_top(&self) -> Vec<Example> {
        let mut top = self.top.clone();
        top.sort_by(|a, b| b.act.total_cmp(&a.act).then(a.context.cmp(&b.context)));
        top
    }

    /// The reservoir grouped into `n_groups` activation quantiles, strongest group first.
    pub fn quantile_groups(&self, n_groups: usize) -> Vec<QuantileGroup> {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| b.act.total_cmp(&a.act).then(a.context.cmp(&b.context)));
        if s.is_empty() || n_groups == 0 {
            return Vec::new();
        }
        let per = s.len().div_ceil(n_groups);
        s.chunks(per)
            .map(|g| QuantileGroup {
                max_act: g.first().map_or(0.0, |e| e.act),
                min_act: g.last().map_or(0.0, |e| e.act),
                examples: g.to_vec(),
            })
            .collect()
    }

    /// Co-firing latents, most frequent first.
    pub fn top_cofire(&self, n: usize) -> Vec<Cofire> {
        let mut c = self.cofire.clone();
        c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        c.truncate(n);
        c.into_iter()
            .map(|(id, count)| Cofire {
                id,
                count,
                fraction: if self.n_fires == 0 {
                    0.0
                } else {
                    (count as f64 / self.n_fires as f64) as f32
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tops_histogram_density_and_cofire_follow_the_codes() {
        // 2 contexts of 4 tokens, 3 latents. Latent 0 fires at (c0,p1)=2 and (c1,p2)=5;
        // latent 1 fires with latent 0 at (c1,p2) only; latent 2 never fires; row (c0,p0) is excluded
        // even though its code would be the largest.
        let d = 3;
        let mut codes = vec![0.0f32; 8 * d];
        codes[0] = 100.0; // c0 p0 (excluded)
        codes[d] = 2.0; // c0 p1 latent 0
        codes[6 * d] = 5.0; // c1 p2 latent 0
        codes[6 * d + 1] = 1.0; // c1 p2 latent 1
        let keep = [false, true, true, true, false, true, true, true];
        let tokens = [10, 11, 12, 13, 20, 21, 22, 23];
        let opts = FeatureOptions {
            n_top: 1,
            n_samples: 4,
            window_before: 1,
            window_after: 1,
            ..Default::default()
        };
        let mut acc = Accumulators::new(d);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        acc.add(
            &Batch {
                tokens: &tokens,
                keep: &keep,
                codes: &codes,
                ctx: 4,
            },
            &opts,
            &mut rng,
        );
        assert_eq!(
            (acc.n_tokens_read, acc.n_tokens_kept, acc.n_contexts),
            (8, 6, 2)
        );
        let l0 = &acc.latents[0];
        assert_eq!(l0.n_fires, 2);
        assert_eq!(l0.max, 5.0);
        let top = l0.sorted_top();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].act, 5.0);
        assert_eq!(top[0].token_ids, vec![21, 22, 23]);
        assert_eq!(top[0].acts, vec![0.0, 5.0, 0.0]);
        assert_eq!(top[0].center, 1);
        assert_eq!(l0.hist.iter().sum::<u32>(), 2);
        assert_eq!(l0.hist[hist_bin(5.0)], 1);
        assert_eq!(l0.samples.len(), 2);
        assert_eq!(
            l0.top_cofire(4),
            vec![Cofire {
                id: 1,
                count: 1,
                fraction: 0.5
            }]
        );
        assert_eq!(acc.latents[1].top_cofire(4)[0].fraction, 1.0);
        assert_eq!(acc.latents[2].n_fires, 0);
    }

    #[test]
    fn top_examples_keep_the_strongest_contexts() {
        // One latent, n_top 2, contexts of 2 tokens firing at position 1 with 3, 1, 4, 2 in turn: the
        // weaker later contexts must not displace the stronger earlier ones.
        let acts = [3.0f32, 1.0, 4.0, 2.0];
        let mut codes = vec![0.0f32; 2 * acts.len()];
        for (c, &a) in acts.iter().enumerate() {
            codes[2 * c + 1] = a;
        }
        let tokens: Vec<u32> = (0..2 * acts.len() as u32).collect();
        let keep = vec![true; tokens.len()];
        let opts = FeatureOptions {
            n_top: 2,
            ..Default::default()
        };
        let mut acc = Accumulators::new(1);
        let batch = Batch {
            tokens: &tokens,
            keep: &keep,
            codes: &codes,
            ctx: 2,
        };
        acc.add(
            &batch,
            &opts,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
        );
        let top: Vec<(f32, u64)> = acc.latents[0]
            .sorted_top()
            .iter()
            .map(|e| (e.act, e.context))
            .collect();
        assert_eq!(top, vec![(4.0, 2), (3.0, 0)]);
    }

    #[test]
    fn correlations_follow_the_sums_of_the_kept_tokens() {
        // One context of 5 tokens, position 0 excluded (its codes would spoil every sum). Over the 4 kept
        // tokens latent 0 = [1, 2, 0, 3], latent 1 = [2, 0, 0, 1], latent 2 never fires: Σx 6, Σx² 14,
        // Σy 3, Σy² 5, Σxy 1·2 + 3·1 = 5, so Pearson = (4·5 − 18) / √((56 − 36)(20 − 9)) = 2/√220 and
        // cosine = 5/√70, for both directions; the dead latent is no candidate.
        let d = 3;
        let mut codes = vec![0.0f32; 5 * d];
        codes[0] = 50.0;
        codes[1] = 50.0;
        for (pos, (x, y)) in [(1, (1.0, 2.0)), (2, (2.0, 0.0)), (4, (3.0, 1.0))] {
            codes[pos * d] = x;
            codes[pos * d + 1] = y;
        }
        let mut acc = Accumulators::new(d);
        acc.add(
            &Batch {
                tokens: &[1, 2, 3, 4, 5],
                keep: &[false, true, true, true, true],
                codes: &codes,
                ctx: 5,
            },
            &FeatureOptions::default(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
        );
        let (pearson, cosine) = (2.0 / 220f64.sqrt(), 5.0 / 70f64.sqrt());
        for (j, other) in [(0, 1), (1, 0)] {
            let c = acc.correlated(j, 3);
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!(c[0].id, other);
            assert!((f64::from(c[0].pearson) - pearson).abs() < 1e-6, "{c:?}");
            assert!((f64::from(c[0].cosine) - cosine).abs() < 1e-6, "{c:?}");
        }
        assert!(acc.correlated(2, 3).is_empty());
        assert_eq!(acc.latents[0].sum_sq, 14.0);
    }

    #[test]
    fn correlations_survive_a_checkpoint_bit_for_bit() {
        // Random dense codes over two batches; a pass checkpointed (JSON) between them must give the
        // same correlations, to the bit, as one that was not (resume writes the same bytes).
        let (d, ctx) = (6, 8);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut codes = || -> Vec<f32> {
            (0..ctx * d)
                .map(|_| (rng.random::<f32>() * 3.0 - 1.0).max(0.0))
                .collect()
        };
        let (c1, c2) = (codes(), codes());
        let tokens: Vec<u32> = (0..ctx as u32).collect();
        let keep = vec![true; ctx];
        let opts = FeatureOptions::default();
        let add = |acc: &mut Accumulators, codes: &[f32]| {
            let batch = Batch {
                tokens: &tokens,
                keep: &keep,
                codes,
                ctx,
            };
            acc.add(
                &batch,
                &opts,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
            );
        };
        let mut straight = Accumulators::new(d);
        add(&mut straight, &c1);
        add(&mut straight, &c2);
        let mut first = Accumulators::new(d);
        add(&mut first, &c1);
        let json = serde_json::to_string(&first).unwrap();
        let mut resumed: Accumulators = serde_json::from_str(&json).unwrap();
        add(&mut resumed, &c2);
        for j in 0..d {
            let (a, b) = (straight.correlated(j, 8), resumed.correlated(j, 8));
            assert!(!a.is_empty(), "latent {j} has candidates");
            assert_eq!(a, b, "latent {j}");
            let (x, y) = (&straight.latents[j], &resumed.latents[j]);
            assert_eq!(
                (x.sum_sq, &x.cofire_xy),
                (y.sum_sq, &y.cofire_xy),
                "latent {j}"
            );
        }
    }

    #[test]
    fn an_evicted_slot_restarts_its_product_sum() {
        let mut c = vec![(1, 5), (2, 1)];
        assert_eq!(space_saving(&mut c, 2, 2), Some((1, false)));
        assert_eq!(space_saving(&mut c, 9, 2), Some((1, true)));
        assert_eq!(c, vec![(1, 5), (9, 3)]);
        assert_eq!(space_saving(&mut Vec::new(), 9, 0), None);
    }

    #[test]
    fn space_saving_keeps_the_heavy_hitter() {
        let mut c = Vec::new();
        for i in 0..1000u32 {
            space_saving(&mut c, if i % 2 == 0 { 7 } else { 100 + i }, 4);
        }
        c.sort_by_key(|x| std::cmp::Reverse(x.1));
        assert_eq!(c[0].0, 7);
        assert!(c[0].1 >= 500);
    }
}
