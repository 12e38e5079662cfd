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
#[derive(Debug)]
pub(crate) struct KvCache {
    batch: usize,
    n_kv: usize,
    d_head: usize,
    capacity: usize,
    /// Number of positions stored (the same for every layer once a pass completes).
    len: usize,
    /// Per layer: (keys, values), each `[batch, n_kv, capacity, d_head]`, allocated on first use.
    /// A transient cache has one slot that every layer reuses.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
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
            layers: (0..cfg.n_layers).map(|_| Default::default()).collect(),
        }
    }

    /// Scratch space for one pass over the whole sequence: each layer's keys and values are used
    /// only while that layer runs, so all layers share one slot.
    pub(crate) fn transient(cfg: &LlamaConfig, batch: usize, seq: usize) -> KvCache {
        KvCache {
            layers: vec![Default::default()],
            ..KvCache::new(cfg, batch, seq)
        }
    }

    /// The slot of `layer`, allocated on first use.
    fn slot(&mut self, layer: usize) -> &mut (Vec<f32>, Vec<f32>) {
        let size = self.batch * self.n_kv * self.capacity * self.d_head;
        let i = layer.min(self.layers.len() - 1);
        let slot = &mut self.layers[i];
        slot.0.resize(size, 0.0);
        slot.1.resize(size, 0.0);
        slot
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
        let (n_kv, d_head, cap, pos0) = (self.n_kv, self.d_head, self.capacity, self.len);
        let (keys, values) = self.slot(layer);
        for (dst, col) in [(keys, k_col), (values, v_col)] {
            dst.par_chunks_mut(cap * d_head)
                .enumerate()
                .for_each(|(bg, dst)| {
                    let (b, g) = (bg / n_kv, bg % n_kv);
                    for s in 0..seq {
                        let src = (b * seq + s) * qkv_width + col + g * d_head;
                        let at = (pos0 + s) * d_head;
                        dst[at..at + d_head].copy_from_slice(&qkv[src..src + d_head]);
                    }
                });
        }
    }

    /// Causal attention of `seq` new queries per sequence against the cached positions of `layer`
    /// (the new positions included; with a window, only the last `window` of them). `qkv` holds the queries (after RoPE) in its first
    /// `n_heads · d_head` columns; `out` receives `[batch, seq, n_heads · d_head]`; `scratch` must
    /// hold `batch · n_heads · seq · d_head` values.
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
    ) {
        let (n_kv, d_head, cap, pos0) = (self.n_kv, self.d_head, self.capacity, self.len);
        let t = pos0 + seq;
        let HeadLayout {
            n_heads,
            scale,
            window,
        } = heads;
        let group = n_heads / n_kv;
        // First position visible from absolute position `p`.
        let first = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
        let (keys, values) = &self.layers[layer.min(self.layers.len() - 1)];
        // Each task: one (sequence, head) pair → `[seq, d_head]` in `scratch`.
        scratch[..self.batch * n_heads * seq * d_head]
            .par_chunks_mut(seq * d_head)
            .enumerate()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, (bh, head_out)| {
                let (b, h) = (bh / n_heads, bh % n_heads);
                let g = h / group;
                let kv_at = (b * n_kv + g) * cap * d_head;
                let k = &keys[kv_at..kv_at + t * d_head];
                let v = &values[kv_at..kv_at + t * d_head];
                // Query blocks: block [s0, s1) only needs keys [first(pos0 + s0), pos0 + s1),
                // which skips most of the masked upper triangle (and, with a window, the far past).
                for s0 in (0..seq).step_by(QUERY_BLOCK) {
                    let rows = QUERY_BLOCK.min(seq - s0);
                    let lo = first(pos0 + s0);
                    let t = pos0 + s0 + rows - lo;
                    let q = &qkv[(b * seq + s0) * qkv_width + h * d_head..];
                    let (k, v) = (&k[lo * d_head..], &v[lo * d_head..]);
                    scores.resize(rows * t, 0.0);
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
            });
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
