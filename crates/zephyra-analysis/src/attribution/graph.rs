//! The attribution graph: direct linear effects between nodes of the local replacement model, computed
//! with the frozen model's backward pass, many targets per pass.
//!
//! Edge `s → t` = activation(s) × (decoder vector of `s`) · (gradient of `t`'s pre-activation with
//! respect to the residual where `s` writes), through residual, frozen attention OV and skip paths only
//! (features are constants of the frozen model, so no path runs through another feature). Node order and
//! the choice of logits and of features follow circuit-tracer (Ameisen et al. 2025; the open-source
//! `circuit-tracer`, MIT licence, `attribution.py`): `[features…, errors (layer-major)…, tokens…,
//! logits…]`, logits covering `desired_logit_prob` of the next-token probability (at most
//! `max_n_logits`), features visited in order of their estimated influence on the logits up to
//! `max_feature_nodes`.

use zephyra_sae::kernels::simd::dot as fdot;

use super::local::{dot, ActiveFeature, LocalReplacement, Sources};
use crate::error::{AnalysisError, Result};

/// Knobs of [`attribute`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttributionConfig {
    /// At most this many logit nodes.
    pub max_n_logits: usize,
    /// Keep logits until their cumulative probability reaches this.
    pub desired_logit_prob: f64,
    /// At most this many feature nodes (`None`: every active feature).
    pub max_feature_nodes: Option<usize>,
    /// Targets per backward pass.
    pub batch_size: usize,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            max_n_logits: 10,
            desired_logit_prob: 0.95,
            max_feature_nodes: Some(4096),
            batch_size: 128,
        }
    }
}

/// An attribution graph of one prompt (circuit-tracer's `Graph`).
#[derive(Debug, Clone)]
pub struct Graph {
    /// The prompt's tokens.
    pub tokens: Vec<u32>,
    /// Layers of the model.
    pub n_layers: usize,
    /// The feature nodes, in (layer, pos, feature) order.
    pub features: Vec<ActiveFeature>,
    /// How many features were active in all (before `max_feature_nodes`).
    pub n_active: usize,
    /// The logit nodes' token ids, most probable first.
    pub logit_tokens: Vec<u32>,
    /// Their probabilities.
    pub logit_probs: Vec<f32>,
    /// `[n_nodes, n_nodes]`, row = target, column = source.
    pub adjacency: Vec<f32>,
}

impl Graph {
    /// Nodes in all.
    pub fn n_nodes(&self) -> usize {
        self.features.len() + (self.n_layers + 1) * self.tokens.len() + self.logit_tokens.len()
    }

    /// Index of the first error node (error of layer `l` at `p` is `error_start + l·n_pos + p`).
    pub fn error_start(&self) -> usize {
        self.features.len()
    }

    /// Index of the first token node.
    pub fn token_start(&self) -> usize {
        self.features.len() + self.n_layers * self.tokens.len()
    }

    /// Index of the first logit node.
    pub fn logit_start(&self) -> usize {
        self.token_start() + self.tokens.len()
    }

    /// Edge weight `source → target`.
    pub fn edge(&self, target: usize, source: usize) -> f32 {
        self.adjacency[target * self.n_nodes() + source]
    }
}

/// A target of the backward pass: where its gradient enters and what it is.
#[derive(Debug, Clone)]
struct Target {
    /// Layer whose `hook_resid_mid` it reads (`n_layers`: the final residual).
    stage: usize,
    pos: usize,
    /// Gradient with respect to that residual at `pos`, `[d_model]`.
    grad: Vec<f32>,
}

/// Where edges come from: every active feature, then errors (layer-major), then tokens.
struct SourceLayout {
    n_active: usize,
    n_layers: usize,
    seq: usize,
}

impl SourceLayout {
    fn n_cols(&self) -> usize {
        self.n_active + (self.n_layers + 1) * self.seq
    }
}

impl LocalReplacement<'_> {
    /// The gradient of active feature `i`'s pre-activation with respect to `hook_resid_mid` at its position.
    fn feature_target(&self, i: usize) -> Target {
        let a = &self.active[i];
        let w = self.transcoders[a.layer].encoder_row(a.feature);
        let gain = self.mlp_gain(a.layer);
        let s = self.prompt.mlp_inv_scale[a.layer][a.pos];
        let grad = w
            .iter()
            .zip(gain.iter())
            .map(|(&w, &g)| w * g * s)
            .collect();
        Target {
            stage: a.layer,
            pos: a.pos,
            grad,
        }
    }

    /// The gradient of `logit_v − mean logit` at the last position with respect to the final residual.
    fn logit_target(&self, v: u32, mean_u: &[f32]) -> Target {
        let d = self.weights.d_model;
        let p = self.prompt.seq() - 1;
        let u = &self.weights.unembed[v as usize * d..(v as usize + 1) * d];
        let s = self.prompt.final_inv_scale[p];
        let grad = (u.iter().zip(mean_u).zip(self.weights.final_gain))
            .map(|((&u, &m), &g)| (u - m) * g * s)
            .collect();
        Target {
            stage: self.n_layers(),
            pos: p,
            grad,
        }
    }

    /// The mean unembedding row, `[d_model]` (logit targets are demeaned by it).
    pub fn mean_unembedding(&self) -> Vec<f32> {
        let d = self.weights.d_model;
        let vocab = self.weights.unembed.len() / d;
        let mut m = vec![0.0f64; d];
        for row in self.weights.unembed.chunks_exact(d) {
            m.iter_mut().zip(row).for_each(|(m, &x)| *m += f64::from(x));
        }
        m.iter().map(|&x| (x / vocab as f64) as f32).collect()
    }

    /// Edge rows (over [`SourceLayout`] columns) of a batch of targets, one backward pass.
    fn edge_rows(&self, targets: &[Target], layout: &SourceLayout) -> Vec<f32> {
        let (d, n_b) = (self.weights.d_model, targets.len());
        let n_cols = layout.n_cols();
        let mut rows = vec![0.0f32; n_b * n_cols];
        let seq = targets.iter().map(|t| t.pos + 1).max().unwrap_or(0);
        let top = targets.iter().map(|t| t.stage).max().unwrap_or(0);
        let n_layers = self.n_layers();
        let mut g = vec![0.0f32; n_b * seq * d];
        let inject = |g: &mut [f32], stage: usize| {
            for (b, t) in targets.iter().enumerate().filter(|(_, t)| t.stage == stage) {
                let at = (b * seq + t.pos) * d;
                g[at..at + d]
                    .iter_mut()
                    .zip(&t.grad)
                    .for_each(|(g, &x)| *g += x);
            }
        };
        inject(&mut g, n_layers);
        // Active features of each layer: [start, end) in `self.active`.
        let mut starts = vec![self.active.len(); n_layers + 1];
        for (i, a) in self.active.iter().enumerate().rev() {
            starts[a.layer] = i;
        }
        for l in (0..n_layers).rev() {
            starts[l] = starts[l].min(starts[l + 1]);
        }
        for l in (0..n_layers.min(top + 1)).rev() {
            if l < top {
                // Sources writing at hook_resid_post(l): features and errors of layer l.
                let tc = &self.transcoders[l];
                for i in starts[l]..starts[l + 1] {
                    let a = &self.active[i];
                    if a.pos >= seq {
                        continue;
                    }
                    let wd = &tc.w_dec[a.feature * d..(a.feature + 1) * d];
                    for b in 0..n_b {
                        let gr = &g[(b * seq + a.pos) * d..(b * seq + a.pos + 1) * d];
                        rows[b * n_cols + i] = a.activation * fdot(wd, gr);
                    }
                }
                for p in 0..seq {
                    let e = &self.errors[l][p * d..(p + 1) * d];
                    let col = layout.n_active + l * layout.seq + p;
                    for b in 0..n_b {
                        let gr = &g[(b * seq + p) * d..(b * seq + p + 1) * d];
                        rows[b * n_cols + col] = fdot(e, gr);
                    }
                }
                let mut gm = g.clone();
                self.skip_backward(l, &g, seq, &mut gm);
                g = gm;
            }
            inject(&mut g, l);
            let mut gp = g.clone();
            self.weights
                .attn_backward(l, &self.prompt, &g, n_b, seq, &mut gp);
            g = gp;
        }
        let scale = self.weights.embed_scale;
        for p in 0..seq {
            let t = self.prompt.tokens[p] as usize;
            let e = &self.weights.embed[t * d..(t + 1) * d];
            let col = layout.n_active + n_layers * layout.seq + p;
            for b in 0..n_b {
                let gr = &g[(b * seq + p) * d..(b * seq + p + 1) * d];
                rows[b * n_cols + col] = scale * fdot(e, gr);
            }
        }
        rows
    }

    /// The constant part of every target's value: what the biases alone write (plus the encoder's bias),
    /// so that Σ incoming edges + bias = the target's value. `targets`: feature indices into
    /// [`LocalReplacement::active`]; `logits`: token ids (demeaned at the last position).
    pub fn target_biases(&self, features: &[usize], logits: &[u32]) -> (Vec<f64>, Vec<f64>) {
        let run = self.forward(Sources::BIASES, None);
        let fb = features
            .iter()
            .map(|&i| {
                let a = &self.active[i];
                let x = self.mlp_input(&run, a.layer, a.pos);
                let tc = &self.transcoders[a.layer];
                dot(&tc.encoder_row(a.feature), &x) + tc.encoder_bias(a.feature)
            })
            .collect();
        let lb = demeaned_logits(&self.logits(&run, self.prompt.seq() - 1), logits);
        (fb, lb)
    }
}

/// `logit_v − mean logit` for each `v` of `tokens`.
pub fn demeaned_logits(logits: &[f32], tokens: &[u32]) -> Vec<f64> {
    let mean = logits.iter().map(|&x| f64::from(x)).sum::<f64>() / logits.len().max(1) as f64;
    tokens
        .iter()
        .map(|&v| f64::from(logits[v as usize]) - mean)
        .collect()
}

/// The logits covering `desired` of the probability (at most `max_n`): `(ids, probabilities)`,
/// most probable first (circuit-tracer's `compute_salient_logits`).
pub fn salient_logits(logits: &[f32], max_n: usize, desired: f64) -> (Vec<u32>, Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let (mut ids, mut probs, mut cum) = (Vec::new(), Vec::new(), 0.0);
    for &v in order.iter().take(max_n) {
        let p = f64::from(logits[v as usize] - max).exp() / z;
        ids.push(v);
        probs.push(p as f32);
        cum += p;
        if cum >= desired {
            break;
        }
    }
    (ids, probs)
}

/// Builds the attribution graph of the local replacement model. `progress(done, total)` is called
/// after each backward pass over feature targets.
pub fn attribute(
    lr: &LocalReplacement<'_>,
    cfg: &AttributionConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Graph> {
    if cfg.batch_size == 0 || cfg.max_n_logits == 0 {
        return Err(AnalysisError::InvalidArgument(
            "attribution needs batch_size ≥ 1 and max_n_logits ≥ 1".into(),
        ));
    }
    let (n_layers, seq) = (lr.n_layers(), lr.prompt.seq());
    let run = lr.forward(Sources::ALL, None);
    let logits = lr.logits(&run, seq - 1);
    let (logit_tokens, logit_probs) =
        salient_logits(&logits, cfg.max_n_logits, cfg.desired_logit_prob);
    let n_active = lr.active.len();
    let layout = SourceLayout {
        n_active,
        n_layers,
        seq,
    };
    let n_cols = layout.n_cols();
    let n_logits = logit_tokens.len();
    let max_features = cfg.max_feature_nodes.unwrap_or(n_active).min(n_active);
    // Rows in visit order: logits, then features; row_node maps a row to its node in the full
    // [active…, errors…, tokens…, logits…] space.
    let mut rows: Vec<f32> = Vec::with_capacity((n_logits + max_features) * n_cols);
    let mut row_node: Vec<usize> = Vec::with_capacity(n_logits + max_features);
    let mean_u = lr.mean_unembedding();
    let logit_targets: Vec<Target> = logit_tokens
        .iter()
        .map(|&v| lr.logit_target(v, &mean_u))
        .collect();
    rows.extend(lr.edge_rows(&logit_targets, &layout));
    row_node.extend((0..n_logits).map(|i| n_cols + i));
    let mut visited = vec![false; n_active];
    let mut n_visited = 0;
    while n_visited < max_features {
        let pending: Vec<usize> = if max_features == n_active {
            (0..n_active).collect()
        } else {
            let infl = partial_influences(&rows, n_cols, &row_node, &logit_probs)?;
            let mut rank: Vec<usize> = (0..n_active).filter(|&i| !visited[i]).collect();
            rank.sort_by(|&a, &b| infl[b].total_cmp(&infl[a]));
            rank.truncate((4 * cfg.batch_size).min(max_features - n_visited));
            rank
        };
        for chunk in pending.chunks(cfg.batch_size) {
            let targets: Vec<Target> = chunk.iter().map(|&i| lr.feature_target(i)).collect();
            rows.extend(lr.edge_rows(&targets, &layout));
            row_node.extend_from_slice(chunk);
            for &i in chunk {
                visited[i] = true;
            }
            n_visited += chunk.len();
            progress(n_visited, max_features);
        }
    }
    Ok(assemble(
        lr,
        &layout,
        rows,
        &row_node,
        visited,
        logit_tokens,
        logit_probs,
    ))
}

/// Packs the visited rows into the square adjacency over the graph's nodes.
fn assemble(
    lr: &LocalReplacement<'_>,
    layout: &SourceLayout,
    rows: Vec<f32>,
    row_node: &[usize],
    visited: Vec<bool>,
    logit_tokens: Vec<u32>,
    logit_probs: Vec<f32>,
) -> Graph {
    let n_cols = layout.n_cols();
    let selected: Vec<usize> = (0..layout.n_active).filter(|&i| visited[i]).collect();
    let mut new_index = vec![usize::MAX; layout.n_active];
    for (k, &i) in selected.iter().enumerate() {
        new_index[i] = k;
    }
    let n_sel = selected.len();
    let n_nodes = n_sel + (n_cols - layout.n_active) + logit_tokens.len();
    let mut adjacency = vec![0.0f32; n_nodes * n_nodes];
    for (r, &node) in row_node.iter().enumerate() {
        let target = if node >= n_cols {
            n_nodes - logit_tokens.len() + (node - n_cols)
        } else {
            new_index[node]
        };
        let src = &rows[r * n_cols..(r + 1) * n_cols];
        let dst = &mut adjacency[target * n_nodes..(target + 1) * n_nodes];
        for &i in &selected {
            dst[new_index[i]] = src[i];
        }
        dst[n_sel..n_sel + n_cols - layout.n_active].copy_from_slice(&src[layout.n_active..]);
    }
    Graph {
        tokens: lr.prompt.tokens.clone(),
        n_layers: layout.n_layers,
        features: selected.iter().map(|&i| lr.active[i]).collect(),
        n_active: layout.n_active,
        logit_tokens,
        logit_probs,
        adjacency,
    }
}

/// Influence of every source column on the logits through the rows computed so far (circuit-tracer's
/// `compute_partial_influences`): `x ← x · Â` from the logits' probabilities, summed.
fn partial_influences(
    rows: &[f32],
    n_cols: usize,
    row_node: &[usize],
    logit_p: &[f32],
) -> Result<Vec<f64>> {
    let n_total = n_cols + logit_p.len();
    let norm: Vec<f64> = rows
        .chunks_exact(n_cols)
        .map(|r| r.iter().map(|x| f64::from(x.abs())).sum::<f64>().max(1e-8))
        .collect();
    let mut prod = vec![0.0f64; n_total];
    for (i, &p) in logit_p.iter().enumerate() {
        prod[n_cols + i] = f64::from(p);
    }
    let mut infl = vec![0.0f64; n_cols];
    for _ in 0..256 {
        let mut next = vec![0.0f64; n_cols];
        for (r, &node) in row_node.iter().enumerate() {
            let w = prod[node] / norm[r];
            if w == 0.0 {
                continue;
            }
            for (o, &a) in next.iter_mut().zip(&rows[r * n_cols..(r + 1) * n_cols]) {
                *o += w * f64::from(a.abs());
            }
        }
        if next.iter().all(|&x| x == 0.0) {
            return Ok(infl);
        }
        infl.iter_mut().zip(&next).for_each(|(a, b)| *a += b);
        prod[..n_cols].copy_from_slice(&next);
        prod[n_cols..].iter_mut().for_each(|x| *x = 0.0);
    }
    Err(AnalysisError::InvalidArgument(
        "influence did not converge in 256 steps: the graph has a cycle (a feature reading its own layer?)".into(),
    ))
}
