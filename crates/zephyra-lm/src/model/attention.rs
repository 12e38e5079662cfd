//! Causal grouped-query attention over a key/value cache, optionally within a sliding window.
//!
//! Keys and values of every position (after RoPE for keys) live in a [`KvCache`] laid out
//! `[batch, n_kv_heads, capacity, d_head]`, so one head's keys are a contiguous `[t, d_head]`
//! matrix. A plain forward pass uses a cache sized to the batch; generation keeps one across steps.

use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels::{matmul_strided, softmax_row};
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
    /// One slot per layer, allocated on first use. A transient cache has one slot that every
    /// layer reuses.
    layers: Vec<Slot>,
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
            layers: (0..cfg.n_layers)
                .map(|l| Slot {
                    window: cfg.layer_window(l),
                    ..Slot::default()
                })
                .collect(),
        }
    }

    /// Scratch space for one pass over the whole sequence: each layer's keys and values are used
    /// only while that layer runs, so all layers share one slot.
    pub(crate) fn transient(cfg: &LlamaConfig, batch: usize, seq: usize) -> KvCache {
        KvCache {
            layers: vec![Slot::default()],
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

    /// Causal attention of `seq` new queries per sequence against the cached positions of `layer`
    /// (the new positions included; with a window, only the last `window` of them). `qkv` holds
    /// the queries (after RoPE) in its first `n_heads · d_head` columns; `out` receives
    /// `[batch, seq, n_heads · d_head]`; `scratch` must hold `batch · n_heads · seq · d_head`
    /// values.
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
        scratch: &mut [f32],
        pattern: Pattern<'_>,
    ) {
        let (n_kv, d_head, pos0) = (self.n_kv, self.d_head, self.len);
        let slot = &self.layers[self.slot_index(layer)];
        let (cap, offset) = (slot.rows, slot.offset);
        let t = pos0 + seq;
        let HeadLayout {
            n_heads,
            scale,
            window,
        } = heads;
        let group = n_heads / n_kv;
        // First position visible from absolute position `p`.
        let first = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
        let (keys, values) = (&slot.keys, &slot.values);
        let frozen = matches!(pattern, Pattern::Use(_));
        // One `[seq, t]` block of the pattern per (sequence, head) pair, when there is one.
        let mut pattern_blocks: Vec<Option<&mut [f32]>> = match pattern {
            Pattern::Compute => (0..self.batch * n_heads).map(|_| None).collect(),
            Pattern::Record(p) => {
                p.fill(0.0);
                p.chunks_mut(seq * t).map(Some).collect()
            }
            Pattern::Use(p) => p.chunks_mut(seq * t).map(Some).collect(),
        };
        // Each task: one (sequence, head) pair → `[seq, d_head]` in `scratch`.
        scratch[..self.batch * n_heads * seq * d_head]
            .par_chunks_mut(seq * d_head)
            .zip(pattern_blocks.par_iter_mut())
            .enumerate()
            .for_each_init(
                Vec::new,
                |scores: &mut Vec<f32>, (bh, (head_out, probs))| {
                    let (b, h) = (bh / n_heads, bh % n_heads);
                    let g = h / group;
                    let kv_at = (b * n_kv + g) * cap * d_head;
                    let k = &keys[kv_at..kv_at + (t - offset) * d_head];
                    let v = &values[kv_at..kv_at + (t - offset) * d_head];
                    // Query blocks: block [s0, s1) only needs keys [first(pos0 + s0), pos0 + s1),
                    // which skips most of the masked upper triangle (and, with a window, the far past).
                    for s0 in (0..seq).step_by(QUERY_BLOCK) {
                        let rows = QUERY_BLOCK.min(seq - s0);
                        let lo = first(pos0 + s0);
                        let t = pos0 + s0 + rows - lo;
                        let q = &qkv[(b * seq + s0) * qkv_width + h * d_head..];
                        let (k, v) = (&k[(lo - offset) * d_head..], &v[(lo - offset) * d_head..]);
                        scores.resize(rows * t, 0.0);
                        if frozen {
                            if let Some(p) = probs.as_deref() {
                                for (i, row) in scores.chunks_exact_mut(t).enumerate() {
                                    let at = (s0 + i) * (pos0 + seq) + lo;
                                    row.copy_from_slice(&p[at..at + t]);
                                    let pos = pos0 + s0 + i;
                                    let (start, end) = (first(pos) - lo, pos + 1 - lo);
                                    row[..start].fill(0.0);
                                    row[end..].fill(0.0);
                                }
                            }
                        } else {
                            // scores[s, j] = q[s] · k[lo + j]
                            matmul_strided(
                                scores,
                                q,
                                qkv_width,
                                1,
                                k,
                                1,
                                d_head,
                                rows,
                                t,
                                d_head,
                                Parallelism::None,
                            );
                            for (i, row) in scores.chunks_exact_mut(t).enumerate() {
                                let p = pos0 + s0 + i;
                                let (start, end) = (first(p) - lo, p + 1 - lo);
                                row[..start].fill(0.0);
                                softmax_row(&mut row[start..end], scale);
                                row[end..].fill(0.0);
                            }
                            if let Some(p) = probs.as_deref_mut() {
                                for (i, row) in scores.chunks_exact(t).enumerate() {
                                    let at = (s0 + i) * (pos0 + seq) + lo;
                                    p[at..at + t].copy_from_slice(row);
                                }
                            }
                        }
                        let dst = &mut head_out[s0 * d_head..(s0 + rows) * d_head];
                        matmul_strided(
                            dst,
                            scores,
                            t,
                            1,
                            v,
                            d_head,
                            1,
                            rows,
                            d_head,
                            t,
                            Parallelism::None,
                        );
                    }
                },
            );
        // Scatter [batch, head, seq, d_head] → [batch, seq, head · d_head].
        let width = n_heads * d_head;
        out[..self.batch * seq * width]
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| {
                let (b, s) = (r / seq, r % seq);
                for h in 0..n_heads {
                    let src = ((b * n_heads + h) * seq + s) * d_head;
                    row[h * d_head..(h + 1) * d_head].copy_from_slice(&scratch[src..src + d_head]);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_gemma_config;

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
