//! Pruning by influence on the logits, and the replacement / completeness scores — as circuit-tracer
//! does it (`graph.py`: `normalize_matrix`, `compute_influence`, `prune_graph`, `compute_graph_scores`;
//! MIT licence), rewritten on the row-major `[n, n]` adjacency (row = target, column = source):
//!
//! - `Â = |A|` with each row divided by its sum (a target's inputs as fractions);
//! - influence `I = w·Â + w·Â² + …` from the logit weights `w` (the logits' probabilities), which ends
//!   because the graph is acyclic;
//! - nodes kept: the most influential covering `node_threshold` of the total (tokens and logits always);
//! - edges kept: score `Â[t,s]·(I[t] + w[t])` on the node-pruned graph, covering `edge_threshold`; then
//!   features and errors without outgoing, and features without incoming, kept edges are dropped, to a
//!   fixed point.
//!
//! Nothing here allocates an `[n, n]` matrix of its own: `Â` is never formed (rows are read from the
//! graph's adjacency and scaled by their sums, under a mask), the edge-score threshold is found in two
//! streaming passes (a histogram over the scores' leading bits, then the one bucket that crosses the
//! share, sorted), and the kept edges are a bit set (`n²/8` bytes).

use super::graph::Graph;
use crate::error::{AnalysisError, Result};

/// A set of (target, source) entries of an `[n, n]` matrix, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSet {
    n: usize,
    bits: Vec<u64>,
}

impl EdgeSet {
    /// The entries `(t, s)` of an `n × n` matrix for which `keep(t, s)`.
    pub fn from_fn(n: usize, mut keep: impl FnMut(usize, usize) -> bool) -> Self {
        let mut bits = vec![0u64; (n * n).div_ceil(64)];
        for t in 0..n {
            for s in 0..n {
                if keep(t, s) {
                    let k = t * n + s;
                    bits[k / 64] |= 1 << (k % 64);
                }
            }
        }
        EdgeSet { n, bits }
    }

    /// Whether edge `source → target` is in the set.
    pub fn contains(&self, target: usize, source: usize) -> bool {
        let k = target * self.n + source;
        (self.bits[k / 64] >> (k % 64)) & 1 == 1
    }

    fn remove(&mut self, target: usize, source: usize) {
        let k = target * self.n + source;
        self.bits[k / 64] &= !(1 << (k % 64));
    }

    /// Entries in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&b| b == 0)
    }
}

/// `Σ_s |A[t,s]|` over the entries `keep` admits, per row `t`.
fn row_sums(a: &[f32], n: usize, keep: impl Fn(usize, usize) -> bool) -> Vec<f64> {
    (0..n)
        .map(|t| {
            a[t * n..(t + 1) * n]
                .iter()
                .enumerate()
                .filter(|&(s, _)| keep(t, s))
                .map(|(_, x)| f64::from(x.abs()))
                .sum()
        })
        .collect()
}

/// `Â[t,s]` from the row sums (0 for a row summing to zero, as circuit-tracer's `normalize_matrix`).
fn normalized(a: f32, row_sum: f64) -> f64 {
    f64::from(a.abs()) / row_sum.max(1e-10)
}

/// `w·Â + w·Â² + …` over the entries `keep` admits (`Â` = |A| row-normalised over them); stops when the
/// product vanishes, errors after `n + 1` steps (a cycle).
pub fn influence(
    a: &[f32],
    n: usize,
    w: &[f64],
    keep: impl Fn(usize, usize) -> bool + Copy,
) -> Result<Vec<f64>> {
    let sums = row_sums(a, n, keep);
    let step = |x: &[f64]| {
        let mut y = vec![0.0f64; n];
        for (t, &xt) in x.iter().enumerate() {
            if xt == 0.0 {
                continue;
            }
            let c = xt / sums[t].max(1e-10);
            for (s, (y, &a)) in y.iter_mut().zip(&a[t * n..(t + 1) * n]).enumerate() {
                if a != 0.0 && keep(t, s) {
                    *y += c * f64::from(a.abs());
                }
            }
        }
        y
    };
    let mut cur = step(w);
    let mut total = cur.clone();
    for _ in 0..=n {
        if cur.iter().all(|&x| x == 0.0) {
            return Ok(total);
        }
        cur = step(&cur);
        total.iter_mut().zip(&cur).for_each(|(t, c)| *t += c);
    }
    Err(AnalysisError::InvalidArgument(
        "influence did not converge: the adjacency matrix has a cycle".into(),
    ))
}

/// The score threshold that keeps `fraction` of the total (circuit-tracer's `find_threshold`): the
/// sorted score at which the cumulative share first reaches `fraction`.
pub fn find_threshold(scores: &[f64], fraction: f64) -> f64 {
    let mut sorted: Vec<f64> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    if sorted.is_empty() {
        return 0.0;
    }
    let mut cum = 0.0;
    for (i, &s) in sorted.iter().enumerate() {
        cum += s;
        if cum / total >= fraction {
            return sorted[i];
        }
    }
    sorted[sorted.len() - 1]
}

/// Calls its argument once per score, the same scores each time.
pub type ScoreStream<'a> = dyn Fn(&mut dyn FnMut(f64)) + 'a;

/// Buckets of the streaming threshold: the top 16 bits of a non-negative `f32` order like its value.
const N_BUCKETS: usize = 1 << 16;

fn bucket(x: f64) -> usize {
    ((x as f32).to_bits() >> 16) as usize
}

/// [`find_threshold`] of the non-negative scores `each` yields (called twice, the same scores both
/// times), without holding them: a histogram of their sums by bucket finds the bucket where the
/// cumulative share crosses `fraction`; only that bucket's scores are kept and sorted.
pub fn find_threshold_streaming(each: &ScoreStream<'_>, fraction: f64) -> f64 {
    let mut sums = vec![0.0f64; N_BUCKETS];
    let mut any = false;
    let (mut lowest, mut lowest_positive) = (f64::INFINITY, f64::INFINITY);
    each(&mut |x| {
        sums[bucket(x)] += x;
        any = true;
        lowest = lowest.min(x);
        if x > 0.0 {
            lowest_positive = lowest_positive.min(x);
        }
    });
    if !any {
        return 0.0;
    }
    if fraction >= 1.0 {
        // The whole total is reached at the smallest positive score.
        return if lowest_positive.is_finite() {
            lowest_positive
        } else {
            lowest
        };
    }
    let total: f64 = sums.iter().rev().sum();
    let mut cum = 0.0;
    let mut crossing = None;
    for b in (0..N_BUCKETS).rev() {
        if sums[b] != 0.0 && (cum + sums[b]) / total >= fraction {
            crossing = Some(b);
            break;
        }
        cum += sums[b];
    }
    let Some(b) = crossing else {
        return lowest;
    };
    let mut inside = Vec::new();
    each(&mut |x| {
        if bucket(x) == b {
            inside.push(x);
        }
    });
    inside.sort_by(|a, b| b.total_cmp(a));
    for &x in &inside {
        cum += x;
        if cum / total >= fraction {
            return x;
        }
    }
    inside.last().copied().unwrap_or(lowest)
}

/// What pruning keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// Per node: kept.
    pub node_mask: Vec<bool>,
    /// The kept edges.
    pub edge_mask: EdgeSet,
    /// Per node: cumulative share of influence of the nodes at least as influential (circuit-tracer's
    /// `influence` field of the frontend JSON).
    pub cumulative: Vec<f64>,
}

/// The logit weights: the logits' probabilities on the logit nodes, zero elsewhere.
pub fn logit_weights(g: &Graph) -> Vec<f64> {
    let mut w = vec![0.0f64; g.n_nodes()];
    for (i, &p) in g.logit_probs.iter().enumerate() {
        w[g.logit_start() + i] = f64::from(p);
    }
    w
}

/// Prunes `g` keeping the nodes covering `node_threshold` and edges covering `edge_threshold` of the
/// influence on the logits (both in [0, 1]).
pub fn prune(g: &Graph, node_threshold: f64, edge_threshold: f64) -> Result<Pruned> {
    for (name, t) in [("node", node_threshold), ("edge", edge_threshold)] {
        if !(0.0..=1.0).contains(&t) {
            return Err(AnalysisError::InvalidArgument(format!(
                "the {name} threshold is {t}; give a fraction between 0 and 1"
            )));
        }
    }
    let (n, a) = (g.n_nodes(), &g.adjacency[..]);
    let w = logit_weights(g);
    let node_infl = influence(a, n, &w, |_, _| true)?;
    let th = find_threshold(&node_infl, node_threshold);
    let mut node_mask: Vec<bool> = node_infl.iter().map(|&x| x >= th).collect();
    let (n_feat, first_keep) = (g.features.len(), g.token_start());
    node_mask[first_keep..].iter_mut().for_each(|m| *m = true);
    let mask = node_mask.clone();
    let keep = |t: usize, s: usize| mask[t] && mask[s];
    let sums = row_sums(a, n, keep);
    let mut out_w = influence(a, n, &w, keep)?;
    out_w.iter_mut().zip(&w).for_each(|(i, w)| *i += w);
    // Score of edge (t, s): Â[t,s]·(I[t] + w[t]) on the node-pruned graph (0 off it).
    let score = |t: usize, s: usize| {
        if keep(t, s) {
            normalized(a[t * n + s], sums[t]) * out_w[t]
        } else {
            0.0
        }
    };
    let each = |f: &mut dyn FnMut(f64)| {
        for t in 0..n {
            for s in 0..n {
                f(score(t, s));
            }
        }
    };
    let eth = find_threshold_streaming(&each, edge_threshold);
    let mut edge_mask = EdgeSet::from_fn(n, |t, s| score(t, s) >= eth);
    loop {
        let old = node_mask.clone();
        for t in 0..n {
            for s in 0..n {
                if (!node_mask[t] || !node_mask[s]) && edge_mask.contains(t, s) {
                    edge_mask.remove(t, s);
                }
            }
        }
        // Features and errors need a kept outgoing edge (to any node); features a kept incoming one.
        for (s, kept) in node_mask.iter_mut().enumerate().take(first_keep) {
            *kept &= (0..n).any(|t| edge_mask.contains(t, s));
        }
        for (t, kept) in node_mask.iter_mut().enumerate().take(n_feat) {
            *kept &= (0..n).any(|s| edge_mask.contains(t, s));
        }
        if node_mask == old {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| node_infl[b].total_cmp(&node_infl[a]));
    let total: f64 = node_infl.iter().sum();
    let mut cumulative = vec![0.0f64; n];
    let mut cum = 0.0;
    for &i in &order {
        cum += node_infl[i];
        cumulative[i] = if total > 0.0 { cum / total } else { 0.0 };
    }
    Ok(Pruned {
        node_mask,
        edge_mask,
        cumulative,
    })
}

/// Replacement and completeness scores of an adjacency (circuit-tracer's `compute_graph_scores`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GraphScores {
    /// Share of the tokens' and errors' influence on the logits that the tokens hold (1: every path from
    /// the input to the output runs through features).
    pub replacement: f64,
    /// Influence-weighted share of each node's input that comes from features and tokens, not errors.
    pub completeness: f64,
}

/// Scores `g` with its adjacency restricted to `keep` (`None`: the whole graph).
pub fn scores(g: &Graph, keep: Option<&Pruned>) -> Result<GraphScores> {
    match keep {
        None => scores_over(g, |_, _| true),
        Some(p) => scores_over(g, |t, s| p.edge_mask.contains(t, s)),
    }
}

fn scores_over(g: &Graph, keep: impl Fn(usize, usize) -> bool + Copy) -> Result<GraphScores> {
    let (n, a) = (g.n_nodes(), &g.adjacency[..]);
    let w = logit_weights(g);
    let sums = row_sums(a, n, keep);
    let infl = influence(a, n, &w, keep)?;
    let (e0, t0, l0) = (g.error_start(), g.token_start(), g.logit_start());
    let token: f64 = infl[t0..l0].iter().sum();
    let error: f64 = infl[e0..t0].iter().sum();
    let replacement = if token + error > 0.0 {
        token / (token + error)
    } else {
        0.0
    };
    let (mut num, mut den) = (0.0, 0.0);
    for t in 0..n {
        let error_share: f64 = (e0..t0)
            .filter(|&s| keep(t, s))
            .map(|s| normalized(a[t * n + s], sums[t]))
            .sum();
        let out = infl[t] + w[t];
        num += (1.0 - error_share) * out;
        den += out;
    }
    let completeness = if den > 0.0 { num / den } else { 0.0 };
    Ok(GraphScores {
        replacement,
        completeness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::json::{graph_file, GraphLabels};
    use crate::attribution::ActiveFeature;

    /// One layer, one position; nodes [f0 (feature 3), f1 (feature 7), error, token 5, logit 42].
    /// Edges: f0 ← token 2, f1 ← token 1, logit ← f0 3, f1 −1, error 1, token 1.
    fn hand_graph() -> Graph {
        let feat = |feature| ActiveFeature {
            layer: 0,
            pos: 0,
            feature,
            activation: 1.5,
            pre_activation: 1.5,
        };
        let mut adjacency = vec![0.0f32; 25];
        adjacency[3] = 2.0; // f0 ← token
        adjacency[5 + 3] = 1.0; // f1 ← token
        adjacency[20..24].copy_from_slice(&[3.0, -1.0, 1.0, 1.0]);
        Graph {
            tokens: vec![5],
            n_layers: 1,
            features: vec![feat(3), feat(7)],
            n_active: 2,
            logit_tokens: vec![42],
            logit_probs: vec![0.5],
            adjacency,
        }
    }

    #[test]
    fn influence_and_scores_match_hand_computed_values() {
        let g = hand_graph();
        // Â(logit row) = [1/2, 1/6, 1/6, 1/6]; influence = 0.5·Â + (1/4·f0 row + 1/12·f1 row).
        let infl = influence(&g.adjacency, 5, &logit_weights(&g), |_, _| true).unwrap();
        let want = [0.25, 1.0 / 12.0, 1.0 / 12.0, 5.0 / 12.0, 0.0];
        for (a, b) in infl.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{infl:?}");
        }
        let s = scores(&g, None).unwrap();
        // replacement = token / (token + error) = (5/12) / (5/12 + 1/12) = 5/6.
        assert!((s.replacement - 5.0 / 6.0).abs() < 1e-12, "{s:?}");
        // completeness = Σ (1 − error share)·(I + w) / Σ (I + w) = 2 / (2 + 2/15).
        assert!(
            (s.completeness - 2.0 / (2.0 + 2.0 / 15.0)).abs() < 1e-12,
            "{s:?}"
        );
    }

    #[test]
    fn pruning_keeps_the_influential_nodes_and_edges() {
        let g = hand_graph();
        // Node influences 1/4, 1/12, 1/12, 5/12: 75 % needs the token and f0 (threshold 1/4).
        let p = prune(&g, 0.75, 0.98).unwrap();
        assert_eq!(p.node_mask, vec![true, false, false, true, true]);
        // Pruned scores: logit←f0 3/8, f0←token 3/8, logit←token 1/8: 98 % keeps all three.
        let kept: Vec<usize> = (0..25)
            .filter(|&k| p.edge_mask.contains(k / 5, k % 5))
            .collect();
        assert_eq!(kept, vec![3, 20, 23]);
        // 80 % of edge influence (7/8 in all) needs only the two 3/8 edges.
        let p = prune(&g, 0.75, 0.8).unwrap();
        let kept: Vec<usize> = (0..25)
            .filter(|&k| p.edge_mask.contains(k / 5, k % 5))
            .collect();
        assert_eq!(kept, vec![3, 20]);
        assert!((p.cumulative[3] - 0.5).abs() < 1e-12 && (p.cumulative[0] - 0.8).abs() < 1e-12);
        assert!(prune(&g, 1.5, 0.9).is_err());
    }

    #[test]
    fn threshold_is_the_score_where_the_cumulative_share_reaches_the_fraction() {
        assert_eq!(find_threshold(&[1.0, 4.0, 3.0, 2.0], 0.7), 3.0); // 4, 7 (0.7) → 3
        assert_eq!(find_threshold(&[1.0, 4.0, 3.0, 2.0], 0.71), 2.0);
        assert_eq!(find_threshold(&[1.0, 4.0, 3.0, 2.0], 1.0), 1.0);
    }

    #[test]
    fn the_streaming_threshold_equals_the_sorted_one() {
        // 20 000 scores over many orders of magnitude, a quarter of them zero, some repeated.
        let mut x = 12345u64;
        let scores: Vec<f64> = (0..20_000)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                match i % 4 {
                    0 => 0.0,
                    1 => 0.125,
                    _ => (20.0 * u - 15.0).exp(),
                }
            })
            .collect();
        let each = |f: &mut dyn FnMut(f64)| scores.iter().for_each(|&s| f(s));
        for fraction in [0.0, 0.1, 0.5, 0.8, 0.98, 0.999, 1.0] {
            assert_eq!(
                find_threshold_streaming(&each, fraction),
                find_threshold(&scores, fraction),
                "fraction {fraction}"
            );
        }
        let none = |_: &mut dyn FnMut(f64)| {};
        assert_eq!(find_threshold_streaming(&none, 0.5), 0.0);
        let set = EdgeSet::from_fn(9, |t, s| (t * 9 + s) % 7 == 0);
        assert_eq!(set.len(), 12);
        assert!(set.contains(0, 0) && set.contains(7, 7) && !set.contains(8, 8));
    }

    #[test]
    fn graph_file_has_circuit_tracers_ids_and_fields() {
        let g = hand_graph();
        let p = prune(&g, 0.75, 0.8).unwrap();
        let labels = GraphLabels {
            slug: "hand",
            prompt: "x",
            prompt_tokens: &["x".to_string()],
            logit_tokens: &[" y\n".to_string()],
            transcoders: &["layer-0".to_string()],
            node_threshold: 0.75,
        };
        let file = graph_file(&g, &p, &labels);
        let ids: Vec<&str> = file.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, vec!["0_3_0", "E_5_0", "2_42_0"]);
        let links: Vec<(&str, &str, f64)> = file
            .links
            .iter()
            .map(|l| (l.source.as_str(), l.target.as_str(), l.weight))
            .collect();
        assert_eq!(
            links,
            vec![("E_5_0", "0_3_0", 2.0), ("0_3_0", "2_42_0", 3.0)]
        );
        let json = serde_json::to_value(&file).unwrap();
        let logit = &json["nodes"][2];
        assert_eq!(logit["feature_type"], "logit");
        assert_eq!(logit["jsNodeId"], "L_42-0");
        assert_eq!(logit["clerp"], "Output \" y⏎\" (p=0.500)");
        assert_eq!(logit["is_target_logit"], true);
        assert_eq!(json["nodes"][0]["jsNodeId"], "0_3-0");
        assert_eq!(json["nodes"][0]["feature_type"], "cross layer transcoder");
        assert_eq!(json["qParams"]["linkType"], "both");
        let back: crate::attribution::GraphFile = serde_json::from_value(json).unwrap();
        assert_eq!(back, file);
    }
}
