//! Causal grouped-query attention over a key/value cache, optionally within a sliding window.
//!
//! Keys and values of every position (after RoPE for keys) live in a [`KvCache`] laid out
//! `[batch, n_kv_heads, capacity, d_head]`, so one head's keys are a contiguous `[t, d_head]`
//! matrix. Generation keeps one across steps. A plain forward pass uses a transient cache that
//! stores nothing: attention reads the keys and values straight from the pass's Q/K/V rows.
//!
//! The query heads that share a key/value head are stacked into one matrix, so each
//! (sequence, query block, key/value head) costs one score product (`[group · rows, d_head] × Kᵀ`)
//! and one value product per query head, written straight into the output rows.

use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels::{matmul_strided, softmax_row, MatRef};
use crate::config::LlamaConfig;

/// Query rows per attention block.
const QUERY_BLOCK: usize = 32;

/// Where the attention weights come from, and whether they are kept.
pub(crate) enum Pattern<'p> {
    /// Computed and discarded.
    Compute,
    /// Computed and written into the buffer.
    Record(&'p mut [f32]),
    /// Read from the buffer (a frozen pattern).
    Use(&'p mut [f32]),
}

/// How the query heads of one block attend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLayout {
    /// Number of query heads.
    pub(crate) n_heads: usize,
    /// Factor applied to `q · k` before the softmax.
    pub(crate) scale: f32,
    /// Positions each query sees, itself included (`None`: all earlier positions).
    pub(crate) window: Option<usize>,
}

/// Keys and values of all layers for the positions seen so far.
///
/// A global block keeps every position. A sliding-window block keeps only the last `window - 1`
/// positions before the current pass (all a new query can see) plus the pass's own, so during
/// generation its memory stays near `2 · window` positions however long the text grows.
#[derive(Debug)]
pub(crate) struct KvCache {
    batch: usize,
    n_kv: usize,
    d_head: usize,
    capacity: usize,
    /// Number of positions stored (the same for every layer once a pass completes).
    len: usize,
    /// One slot per layer, allocated on first use (unused by a transient cache).
    layers: Vec<Slot>,
    /// Transient: nothing is stored; [`KvCache::attend`] reads the keys and values from `qkv`.
    direct: bool,
}

/// The keys and values of one layer: `[batch, n_kv, rows, d_head]` each, row `r` holding
/// absolute position `offset + r`.
#[derive(Debug, Default)]
struct Slot {
    keys: Vec<f32>,
    values: Vec<f32>,
    rows: usize,
    offset: usize,
    /// The layer's attention window (`None`: keep every position).
    window: Option<usize>,
}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `capacity` positions, kept across passes.
    pub(crate) fn new(cfg: &LlamaConfig, batch: usize, capacity: usize) -> KvCache {
        KvCache {
            batch,
            n_kv: cfg.n_kv_heads,
            d_head: cfg.d_head,
            capacity,
            len: 0,
            direct: false,
            layers: (0..cfg.n_layers)
                .map(|l| Slot {
                    window: cfg.layer_window(l),
                    ..Slot::default()
                })
                .collect(),
        }
    }

    /// A cache for one pass over the whole sequence from position 0: each layer's keys and
    /// values are used only while that layer runs, so none is copied; attention reads them from
    /// the pass's Q/K/V rows.
    pub(crate) fn transient(cfg: &LlamaConfig, batch: usize, seq: usize) -> KvCache {
        KvCache {
            layers: vec![Slot::default()],
            direct: true,
            ..KvCache::new(cfg, batch, seq)
        }
    }

    /// The slot of `layer`.
    fn slot_index(&self, layer: usize) -> usize {
        layer.min(self.layers.len() - 1)
    }

    /// Positions the slot of `layer` has room for (memory, not content).
    #[cfg(test)]
    pub(crate) fn slot_rows(&self, layer: usize) -> usize {
        self.layers[self.slot_index(layer)].rows
    }

    /// Positions already stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Maximum number of positions.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of sequences.
    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// Marks `n` more positions as stored (after every layer has written them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Makes room in the slot of `layer` for `seq` new positions: a sliding-window slot drops
    /// the positions no new query can see, moving the rest to its front (and grows when the
    /// pass is longer than its room).
    fn make_room(&mut self, layer: usize, seq: usize) {
        let (blocks, d_head, pos0, capacity) =
            (self.batch * self.n_kv, self.d_head, self.len, self.capacity);
        let i = self.slot_index(layer);
        let slot = &mut self.layers[i];
        if pos0 + seq - slot.offset <= slot.rows {
            return;
        }
        let (keep_from, rows) = match slot.window {
            None => (0, capacity),
            Some(w) => {
                let keep_from = pos0.saturating_sub(w - 1).max(slot.offset);
                let needed = pos0 + seq - keep_from;
                (keep_from, slot.rows.max((needed + w).min(capacity)))
            }
        };
        let (n_keep, src0) = (pos0 - keep_from, keep_from - slot.offset);
        for data in [&mut slot.keys, &mut slot.values] {
            let mut fresh = vec![0.0; blocks * rows * d_head];
            if n_keep > 0 {
                for bg in 0..blocks {
                    let src = (bg * slot.rows + src0) * d_head;
                    let dst = bg * rows * d_head;
                    fresh[dst..dst + n_keep * d_head]
                        .copy_from_slice(&data[src..src + n_keep * d_head]);
                }
            }
            *data = fresh;
        }
        slot.rows = rows;
        slot.offset = keep_from;
    }

    /// Copies the keys and values of `seq` new positions (rows `[batch, seq]` of `qkv`, row width
    /// `qkv_width`, k at column `k_col`, v at `v_col`) into layer `layer` at positions `len..`.
    pub(crate) fn store(
        &mut self,
        layer: usize,
        qkv: &[f32],
        qkv_width: usize,
        seq: usize,
        k_col: usize,
        v_col: usize,
    ) {
        if self.direct {
            return;
        }
        self.make_room(layer, seq);
        let (n_kv, d_head, pos0) = (self.n_kv, self.d_head, self.len);
        let i = self.slot_index(layer);
        let slot = &mut self.layers[i];
        let (rows, row0) = (slot.rows, pos0 - slot.offset);
        for (dst, col) in [(&mut slot.keys, k_col), (&mut slot.values, v_col)] {
            dst.par_chunks_mut(rows * d_head)
                .enumerate()
                .for_each(|(bg, dst)| {
                    let (b, g) = (bg / n_kv, bg % n_kv);
                    for s in 0..seq {
                        let src = (b * seq + s) * qkv_width + col + g * d_head;
                        let at = (row0 + s) * d_head;
                        dst[at..at + d_head].copy_from_slice(&qkv[src..src + d_head]);
                    }
                });
        }
    }

    /// Where the keys and values of `layer` are read for this pass.
    fn source<'a>(
        &'a self,
        layer: usize,
        qkv: &'a [f32],
        qkv_width: usize,
        seq: usize,
        n_heads: usize,
    ) -> KvSource<'a> {
        let d_head = self.d_head;
        if self.direct {
            debug_assert_eq!(
                self.len, 0,
                "a transient cache serves one pass from position 0"
            );
            let (k_col, v_col) = (n_heads * d_head, (n_heads + self.n_kv) * d_head);
            return KvSource {
                keys: &qkv[k_col..],
                values: &qkv[v_col..],
                seq_stride: seq * qkv_width,
                head_stride: d_head,
                row_stride: qkv_width,
                offset: 0,
            };
        }
        let slot = &self.layers[self.slot_index(layer)];
        KvSource {
            keys: &slot.keys,
            values: &slot.values,
            seq_stride: self.n_kv * slot.rows * d_head,
            head_stride: slot.rows * d_head,
            row_stride: d_head,
            offset: slot.offset,
        }
    }

    /// Causal attention of `seq` new queries per sequence against the cached positions of `layer`
    /// (the new positions included; with a window, only the last `window` of them). `qkv` holds
    /// the queries (after RoPE) in its first `n_heads · d_head` columns (and, for a transient cache,
    /// the keys and values after them); `out` receives `[batch, seq, n_heads · d_head]`.
    ///
    /// `pattern` (`[batch, n_heads, seq, len + seq]`, absolute key positions): with
    /// [`Pattern::Record`] the attention weights are written there (zeros outside the visible
    /// range), with [`Pattern::Use`] they are read from there instead of being computed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend(
        &self,
        layer: usize,
        qkv: &[f32],
        qkv_width: usize,
        seq: usize,
        heads: HeadLayout,
        out: &mut [f32],
        pattern: Pattern<'_>,
    ) {
        let (n_kv, d_head, pos0) = (self.n_kv, self.d_head, self.len);
        let HeadLayout {
            n_heads,
            scale,
            window,
        } = heads;
        let src = self.source(layer, qkv, qkv_width, seq, n_heads);
        let (group, width, t_all) = (n_heads / n_kv, n_heads * d_head, pos0 + seq);
        let n_blocks = seq.div_ceil(QUERY_BLOCK);
        // First position visible from absolute position `p`.
        let first = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
        let frozen = matches!(pattern, Pattern::Use(_));
        // Each task is one (sequence, query block): its output rows and, when there is a
        // pattern, its `[rows, t_all]` rows of the pattern for every head in order.
        let mut probs: Vec<Vec<&mut [f32]>> =
            (0..self.batch * n_blocks).map(|_| Vec::new()).collect();
        if let Pattern::Record(p) | Pattern::Use(p) = pattern {
            if !frozen {
                p.fill(0.0);
            }
            for (bh, per_head) in p.chunks_mut(seq * t_all).enumerate() {
                let b = bh / n_heads;
                for (qi, part) in per_head.chunks_mut(QUERY_BLOCK * t_all).enumerate() {
                    probs[b * n_blocks + qi].push(part);
                }
            }
        }
        let tasks: Vec<_> = out[..self.batch * seq * width]
            .chunks_mut(seq * width)
            .flat_map(|rows| rows.chunks_mut(QUERY_BLOCK * width))
            .zip(probs)
            .enumerate()
            .collect();
        tasks.into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(q, scores): &mut (Vec<f32>, Vec<f32>), (task, (out, mut probs))| {
                let (b, s0) = (task / n_blocks, task % n_blocks * QUERY_BLOCK);
                let rows = out.len() / width;
                // Block [s0, s0 + rows) only needs keys [first(pos0 + s0), pos0 + s0 + rows),
                // which skips most of the masked upper triangle (and, with a window, the far past).
                let lo = first(pos0 + s0);
                let t = pos0 + s0 + rows - lo;
                let m = group * rows;
                scores.resize(m * t, 0.0);
                for g in 0..n_kv {
                    let at = src.at(b, g, lo);
                    let (k, v) = (&src.keys[at..], &src.values[at..]);
                    // Score rows are ordered (head of the group, query): `i = hh · rows + s`.
                    let head_of = |i: usize| (g * group + i / rows, i % rows);
                    if frozen {
                        for (i, row) in scores.chunks_exact_mut(t).enumerate() {
                            let (h, s) = head_of(i);
                            let at = s * t_all + lo;
                            row.copy_from_slice(&probs[h][at..at + t]);
                            let pos = pos0 + s0 + s;
                            row[..first(pos) - lo].fill(0.0);
                            row[pos + 1 - lo..].fill(0.0);
                        }
                    } else {
                        q.resize(m * d_head, 0.0);
                        for (i, q_row) in q.chunks_exact_mut(d_head).enumerate() {
                            let (h, s) = head_of(i);
                            let at = (b * seq + s0 + s) * qkv_width + h * d_head;
                            q_row.copy_from_slice(&qkv[at..at + d_head]);
                        }
                        // scores[i, j] = q[i] · k[lo + j]
                        let (lhs, rhs) = (
                            MatRef::rows(q, d_head),
                            MatRef::transposed(k, src.row_stride),
                        );
                        matmul_strided(scores, t, lhs, rhs, (m, t, d_head), Parallelism::None);
                        for (i, row) in scores.chunks_exact_mut(t).enumerate() {
                            let p = pos0 + s0 + i % rows;
                            let (start, end) = (first(p) - lo, p + 1 - lo);
                            row[..start].fill(0.0);
                            softmax_row(&mut row[start..end], scale);
                            row[end..].fill(0.0);
                        }
                        for (i, row) in scores.chunks_exact(t).enumerate() {
                            let (h, s) = head_of(i);
                            if let Some(p) = probs.get_mut(h) {
                                let at = s * t_all + lo;
                                p[at..at + t].copy_from_slice(row);
                            }
                        }
                    }
                    // out[s, head h] = Σ_j probs[(h, s), j] · v[lo + j], one product per head.
                    for hh in 0..group {
                        let h = g * group + hh;
                        let lhs = MatRef::rows(&scores[hh * rows * t..], t);
                        let rhs = MatRef::rows(v, src.row_stride);
                        let dst = &mut out[h * d_head..];
                        matmul_strided(dst, width, lhs, rhs, (rows, d_head, t), Parallelism::None);
                    }
                }
            },
        );
    }
}

/// Where one layer's keys and values are read: row `pos` of key/value head `g` of sequence `b`
/// starts at `at(b, g, pos)` in `keys` and in `values`.
struct KvSource<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    seq_stride: usize,
    head_stride: usize,
    row_stride: usize,
    /// Absolute position of the first stored row.
    offset: usize,
}

impl KvSource<'_> {
    /// Start of the row of absolute position `pos` of key/value head `g` of sequence `b`.
    fn at(&self, b: usize, g: usize, pos: usize) -> usize {
        b * self.seq_stride + g * self.head_stride + (pos - self.offset) * self.row_stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_gemma_config;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Causal attention by definition in f64: `out[b, p, h] = Σ_j softmax_j(scale · q·k_j) v_j` over
    /// the positions `j` that position `p` sees; rows of `qkv` are `[batch, positions]`, each holding
    /// q heads, k heads, v heads. Returns (out `[batch, positions, n_heads · d_head]`, weights
    /// `[batch, n_heads, positions, positions]`).
    fn naive_attention(
        qkv: &[f32],
        cfg: &LlamaConfig,
        batch: usize,
        heads: HeadLayout,
    ) -> (Vec<f64>, Vec<f64>) {
        let (nh, nkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let width = (nh + 2 * nkv) * d;
        let n = qkv.len() / width / batch;
        let row = |b: usize, p: usize| &qkv[(b * n + p) * width..(b * n + p + 1) * width];
        let (mut out, mut weights) = (vec![0.0; batch * n * nh * d], vec![0.0; batch * nh * n * n]);
        for b in 0..batch {
            for h in 0..nh {
                let g = h / (nh / nkv);
                for p in 0..n {
                    let lo = heads.window.map_or(0, |w| (p + 1).saturating_sub(w));
                    let q = &row(b, p)[h * d..(h + 1) * d];
                    let scores: Vec<f64> = (lo..=p)
                        .map(|j| {
                            let k = &row(b, j)[(nh + g) * d..(nh + g + 1) * d];
                            let dot: f64 = q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum();
                            dot * f64::from(heads.scale)
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for (j, s) in (lo..=p).zip(&scores) {
                        let w = (s - max).exp() / sum;
                        weights[((b * nh + h) * n + p) * n + j] = w;
                        let v = &row(b, j)[(nh + nkv + g) * d..(nh + nkv + g + 1) * d];
                        for (i, v) in v.iter().enumerate() {
                            out[((b * n + p) * nh + h) * d + i] += w * f64::from(*v);
                        }
                    }
                }
            }
        }
        (out, weights)
    }

    /// Worst absolute difference.
    fn worst(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max)
    }

    /// A Gemma-like configuration with two key/value heads shared by three query heads each, small
    /// heads, window 5 on blocks 0 and 1.
    fn grouped_config() -> LlamaConfig {
        let mut cfg = tiny_gemma_config();
        (cfg.n_heads, cfg.n_kv_heads, cfg.d_head) = (6, 2, 8);
        if let Some(w) = cfg.sliding_window.as_mut() {
            w.window = 5;
        }
        cfg
    }

    /// The heads of block `layer` with a fixed score scale.
    fn test_heads(cfg: &LlamaConfig, layer: usize) -> HeadLayout {
        HeadLayout {
            n_heads: cfg.n_heads,
            scale: 0.35,
            window: cfg.layer_window(layer),
        }
    }

    fn random_qkv(cfg: &LlamaConfig, rows: usize, seed: u64) -> Vec<f32> {
        let width = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..rows * width)
            .map(|_| rng.random_range(-1.5..1.5))
            .collect()
    }

    #[test]
    fn one_pass_attention_matches_the_definition_with_and_without_window() {
        let cfg = grouped_config();
        let (batch, seq) = (2, 45); // two query blocks, the second one ragged
        let width = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head;
        let q_width = cfg.n_heads * cfg.d_head;
        let qkv = random_qkv(&cfg, batch * seq, 7);
        for layer in [0, 2] {
            let heads = test_heads(&cfg, layer);
            let (want, want_w) = naive_attention(&qkv, &cfg, batch, heads);
            let cache = KvCache::transient(&cfg, batch, seq);
            let mut out = vec![f32::NAN; batch * seq * q_width];
            cache.attend(layer, &qkv, width, seq, heads, &mut out, Pattern::Compute);
            assert!(
                worst(&out, &want) < 1e-5,
                "layer {layer}: {}",
                worst(&out, &want)
            );
            // Recording gives the weights; using them gives the same output.
            let mut pattern = vec![f32::NAN; want_w.len()];
            let mut recorded = vec![f32::NAN; out.len()];
            let record = Pattern::Record(&mut pattern);
            cache.attend(layer, &qkv, width, seq, heads, &mut recorded, record);
            assert!(worst(&pattern, &want_w) < 1e-6, "layer {layer} pattern");
            assert_eq!(recorded, out);
            let mut used = vec![f32::NAN; out.len()];
            let frozen = Pattern::Use(&mut pattern);
            cache.attend(layer, &qkv, width, seq, heads, &mut used, frozen);
            assert_eq!(used, out, "layer {layer}: a frozen pattern");
        }
    }

    #[test]
    fn cached_passes_match_one_pass_over_the_whole_text() {
        let cfg = grouped_config();
        let batch = 2;
        let width = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head;
        let (q_width, kv_width) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let passes = [40, 7, 1, 1];
        let total: usize = passes.iter().sum();
        let all = random_qkv(&cfg, batch * total, 11);
        let row = |b: usize, p: usize| &all[(b * total + p) * width..(b * total + p + 1) * width];
        for layer in [0, 2] {
            let heads = test_heads(&cfg, layer);
            let (want, _) = naive_attention(&all, &cfg, batch, heads);
            let mut cache = KvCache::new(&cfg, batch, total);
            for &seq in &passes {
                let pos0 = cache.len();
                let qkv: Vec<f32> = (0..batch)
                    .flat_map(|b| (pos0..pos0 + seq).flat_map(move |p| row(b, p)))
                    .copied()
                    .collect();
                for l in 0..cfg.n_layers {
                    cache.store(l, &qkv, width, seq, q_width, q_width + kv_width);
                }
                let mut out = vec![f32::NAN; batch * seq * q_width];
                cache.attend(layer, &qkv, width, seq, heads, &mut out, Pattern::Compute);
                let want: Vec<f64> = (0..batch)
                    .flat_map(|b| {
                        let at = (b * total + pos0) * q_width;
                        want[at..at + seq * q_width].to_vec()
                    })
                    .collect();
                assert!(
                    worst(&out, &want) < 1e-5,
                    "layer {layer}, positions {pos0}.."
                );
                cache.advance(seq);
            }
        }
    }

    /// Stores `seq` positions whose keys and values all equal their absolute position.
    fn store_positions(cache: &mut KvCache, cfg: &LlamaConfig, seq: usize) {
        let (q, kv) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let width = q + 2 * kv;
        let qkv: Vec<f32> = (0..seq)
            .flat_map(|s| std::iter::repeat_n((cache.len() + s) as f32, width))
            .collect();
        for l in 0..cfg.n_layers {
            cache.store(l, &qkv, width, seq, q, q + kv);
        }
        cache.advance(seq);
    }

    #[test]
    fn sliding_slots_stay_bounded_and_keep_the_visible_positions() {
        let cfg = tiny_gemma_config(); // window 4 on blocks 0 and 1, block 2 global
        let (window, capacity, prompt) = (4, 120, 10);
        let mut cache = KvCache::new(&cfg, 1, capacity);
        store_positions(&mut cache, &cfg, prompt);
        for _ in prompt..capacity {
            store_positions(&mut cache, &cfg, 1);
            // Memory: the prompt plus one window, however long generation runs.
            assert!(
                cache.slot_rows(0) <= prompt + window,
                "{}",
                cache.slot_rows(0)
            );
            // Content: the last `window - 1` positions (what the next query sees besides itself).
            let slot = &cache.layers[0];
            for pos in cache.len() - (window - 1)..cache.len() {
                let row = pos - slot.offset;
                assert_eq!(slot.keys[row * cfg.d_head], pos as f32);
                assert_eq!(slot.values[row * cfg.d_head + 1], pos as f32);
            }
        }
        assert_eq!(cache.slot_rows(1), cache.slot_rows(0));
        // The global block keeps every position.
        assert_eq!(cache.slot_rows(2), capacity);
        let slot = &cache.layers[2];
        assert_eq!(slot.keys[7 * cfg.d_head], 7.0);
    }
}
