//! The batched forward pass with hook points.
//!
//! All `batch × seq` rows go through each matrix product at once; the residual stream is one
//! row-major `[batch · seq, d_model]` buffer that hooks see as a `[batch, seq, d_model]` tensor.

use candle_core::{Device, Tensor};

use super::attention::{HeadLayout, Pattern};
use super::kernels::{
    add_assign, geglu_tanh, head_rms_norm, rms_apply, rms_norm, rms_scales, rope, rope_table,
    swiglu,
};
use super::{ForwardOutput, KvCache, Llama, Logits};
use crate::config::{Activation, LlamaConfig};
use crate::error::{LmError, Result};
use crate::hooks::{Activations, HookPoint, Hooks};

/// Work buffers of one pass, sized for `rows` rows; kept in the model between passes so large
/// batches do not pay for fresh zeroed pages every time.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    resid: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    branch: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    /// RMSNorm divisors, one per row.
    scales: Vec<f32>,
}

impl Llama {
    /// Runs the model over a batch of token sequences.
    ///
    /// Sequences may differ in length: they are right-padded to the longest (causal attention
    /// means padding never affects real positions; outputs at padded positions are meaningless,
    /// see [`ForwardOutput::lengths`]). Hooks see `[batch, seq, d_model]` activations.
    ///
    /// With [`Logits::None`] and no `ln_final.hook_normalized` hook the pass stops right after the
    /// deepest hook point in `hooks` (with no hooks at all, nothing is computed).
    ///
    /// Errors: an empty batch or sequence, a token id outside the vocabulary, a sequence longer
    /// than the context length, a hook that names a missing block, or an error from a hook.
    pub fn forward<S: AsRef<[u32]>>(
        &self,
        sequences: &[S],
        hooks: &mut Hooks<'_>,
        logits: Logits,
    ) -> Result<ForwardOutput> {
        if sequences.is_empty() {
            return Err(LmError::InvalidInput("the batch holds no sequences".into()));
        }
        let lengths: Vec<usize> = sequences.iter().map(|s| s.as_ref().len()).collect();
        let seq = lengths.iter().copied().max().unwrap_or(0);
        if let Some(i) = lengths.iter().position(|&n| n == 0) {
            return Err(LmError::InvalidInput(format!(
                "sequence {i} of the batch is empty; give at least one token"
            )));
        }
        self.check_len(seq)?;
        let batch = sequences.len();
        let mut ids = Vec::with_capacity(batch * seq);
        for s in sequences {
            let s = s.as_ref();
            ids.extend_from_slice(s);
            // Pad with the sequence's own last token: any valid id would do.
            ids.extend(std::iter::repeat_n(s[s.len() - 1], seq - s.len()));
        }
        let last: Vec<usize> = lengths.iter().map(|n| n - 1).collect();
        let mut cache = KvCache::transient(&self.config, batch, seq);
        let (logits, activations) = self.run(&ids, seq, &last, &mut cache, hooks, logits)?;
        Ok(ForwardOutput {
            logits,
            activations,
            lengths,
        })
    }

    /// Checks a sequence length against the context length.
    pub(crate) fn check_len(&self, seq: usize) -> Result<()> {
        if seq > self.config.context_length {
            return Err(LmError::InvalidInput(format!(
                "{seq} tokens exceed the model's context length of {}; split the text",
                self.config.context_length
            )));
        }
        Ok(())
    }

    /// The core pass: `ids` is `[batch, seq]` (batch = `cache.batch()`), at positions
    /// `cache.len()..`. `last[b]` is the row of sequence `b` whose logits [`Logits::Last`] returns.
    /// The cache advances by `seq` when every layer ran.
    pub(crate) fn run(
        &self,
        ids: &[u32],
        seq: usize,
        last: &[usize],
        cache: &mut KvCache,
        hooks: &mut Hooks<'_>,
        logits: Logits,
    ) -> Result<(Option<Tensor>, Activations)> {
        let cfg = &self.config;
        hooks.validate_for(cfg)?;
        let batch = cache.batch();
        let rows = batch * seq;
        debug_assert_eq!(ids.len(), rows);
        if cache.len() + seq > cache.capacity() {
            return Err(LmError::InvalidInput(format!(
                "{} positions exceed the cache capacity of {}",
                cache.len() + seq,
                cache.capacity()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(LmError::TokenOutOfRange {
                id: bad,
                vocab_size: cfg.vocab_size,
            });
        }
        let hook_final = hooks.has(HookPoint::LnFinal) || hooks.has(HookPoint::LnFinalScale);
        let need_final = logits != Logits::None || hook_final;
        let stop = if need_final { None } else { hooks.deepest() };
        if !need_final && stop.is_none() {
            return Ok((None, Activations::default()));
        }
        let _span = tracing::debug_span!("forward", batch, seq, pos0 = cache.len()).entered();

        let (d, d_mlp) = (cfg.d_model, cfg.d_mlp);
        let (q_width, kv_width) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let qkv_width = q_width + 2 * kv_width;
        let mut guard = BufferGuard {
            slot: &self.buffers,
            buf: self
                .buffers
                .lock()
                .map(|mut b| b.take())
                .ok()
                .flatten()
                .unwrap_or_default(),
        };
        let buf = &mut guard.buf;
        for (v, n) in [
            (&mut buf.resid, rows * d),
            (&mut buf.normed, rows * d),
            (&mut buf.qkv, rows * qkv_width),
            (&mut buf.attn, rows * q_width),
            (&mut buf.branch, rows * d),
            (&mut buf.gate_up, rows * 2 * d_mlp),
            (&mut buf.act, rows * d_mlp),
            (&mut buf.scales, rows),
        ] {
            v.resize(n, 0.0);
        }
        let embed_scale = cfg.embedding_scale();
        for (row, &id) in buf.resid.chunks_exact_mut(d).zip(ids) {
            let at = id as usize * d;
            row.copy_from_slice(&self.embed[at..at + d]);
            if embed_scale != 1.0 {
                row.iter_mut().for_each(|x| *x *= embed_scale);
            }
        }
        // One cos/sin table per distinct RoPE base (Gemma: local and global blocks differ).
        let mut rope_tables: Vec<(f32, Vec<f32>, Vec<f32>)> = Vec::new();
        for l in 0..cfg.n_layers {
            let theta = cfg.layer_rope_theta(l);
            if !rope_tables.iter().any(|t| t.0 == theta) {
                let (cos, sin) = rope_table(cache.len(), seq, cfg.d_head, theta);
                rope_tables.push((theta, cos, sin));
            }
        }
        let mut site = Site {
            hooks,
            acts: Activations::default(),
            stop,
            cfg,
            dims: (batch, seq, cache.len() + seq),
        };
        let eps = cfg.rms_norm_eps;

        for (l, blk) in self.blocks.iter().enumerate() {
            let _span = tracing::trace_span!("block", layer = l).entered();
            if site.at(HookPoint::ResidPre(l), &mut buf.resid)? {
                return Ok((None, site.acts));
            }
            // Attention.
            let hooks = (HookPoint::Ln1Scale(l), HookPoint::Ln1Normalized(l));
            if site.pre_norm(hooks, buf, &blk.attn_norm)? {
                return Ok((None, site.acts));
            }
            blk.qkv.forward(&mut buf.qkv, &buf.normed, d, rows);
            let parts = [
                (HookPoint::AttnQ(l), 0, q_width),
                (HookPoint::AttnK(l), q_width, kv_width),
                (HookPoint::AttnV(l), q_width + kv_width, kv_width),
            ];
            for (p, col, width) in parts {
                if site.columns(p, &mut buf.qkv, qkv_width, col, width)? {
                    return Ok((None, site.acts));
                }
            }
            if let Some(extra) = &blk.extra_norms {
                let (q, k) = (&extra.q_norm, &extra.k_norm);
                let (n_q, n_kv) = (cfg.n_heads, cfg.n_kv_heads);
                head_rms_norm(&mut buf.qkv, qkv_width, n_q, q, n_kv, k, eps);
            }
            let n_rot = cfg.n_heads + cfg.n_kv_heads; // q and k heads are adjacent in each row
            let theta = cfg.layer_rope_theta(l);
            let (_, cos, sin) = rope_tables
                .iter()
                .find(|t| t.0 == theta)
                .expect("a table was made for every block's base");
            rope(&mut buf.qkv, qkv_width, seq, n_rot, cfg.d_head, cos, sin);
            cache.store(l, &buf.qkv, qkv_width, seq, q_width, q_width + kv_width);
            let heads = HeadLayout {
                n_heads: cfg.n_heads,
                scale: cfg.attention_scale(),
                window: cfg.layer_window(l),
            };
            let (attn, qkv) = (&mut buf.attn, &buf.qkv);
            if site.pattern(HookPoint::AttnPattern(l), |pattern| {
                cache.attend(l, qkv, qkv_width, seq, heads, attn, pattern)
            })? {
                return Ok((None, site.acts));
            }
            if site.at(HookPoint::AttnZ(l), &mut buf.attn)? {
                return Ok((None, site.acts));
            }
            blk.o.forward(&mut buf.branch, &buf.attn, q_width, rows);
            if let Some(extra) = &blk.extra_norms {
                let p = HookPoint::Ln1PostScale(l);
                if site.post_norm(p, buf, &extra.post_attn)? {
                    return Ok((None, site.acts));
                }
            }
            if site.at(HookPoint::AttnOut(l), &mut buf.branch)? {
                return Ok((None, site.acts));
            }
            add_assign(&mut buf.resid, &buf.branch);
            if site.at(HookPoint::ResidMid(l), &mut buf.resid)? {
                return Ok((None, site.acts));
            }
            // MLP.
            let hooks = (HookPoint::Ln2Scale(l), HookPoint::Ln2Normalized(l));
            if site.pre_norm(hooks, buf, &blk.mlp_norm)? {
                return Ok((None, site.acts));
            }
            blk.gate_up.forward(&mut buf.gate_up, &buf.normed, d, rows);
            match cfg.activation() {
                Activation::Silu => swiglu(&mut buf.act, &buf.gate_up, d_mlp),
                Activation::GeluTanh => geglu_tanh(&mut buf.act, &buf.gate_up, d_mlp),
            }
            if site.at(HookPoint::MlpPost(l), &mut buf.act)? {
                return Ok((None, site.acts));
            }
            blk.down.forward(&mut buf.branch, &buf.act, d_mlp, rows);
            if let Some(extra) = &blk.extra_norms {
                let p = HookPoint::Ln2PostScale(l);
                if site.post_norm(p, buf, &extra.post_mlp)? {
                    return Ok((None, site.acts));
                }
            }
            if site.at(HookPoint::MlpOut(l), &mut buf.branch)? {
                return Ok((None, site.acts));
            }
            add_assign(&mut buf.resid, &buf.branch);
            if site.at(HookPoint::ResidPost(l), &mut buf.resid)? {
                return Ok((None, site.acts));
            }
        }
        cache.advance(seq);

        // Final norm (all rows when hooked or when every position's logits are wanted).
        let (normed, n_rows) = if logits == Logits::All || hook_final {
            let hooks = (HookPoint::LnFinalScale, HookPoint::LnFinal);
            site.pre_norm(hooks, buf, &self.final_norm)?;
            if logits == Logits::Last {
                let mut sel = Vec::with_capacity(batch * d);
                for (b, &s) in last.iter().enumerate() {
                    let r = b * seq + s;
                    sel.extend_from_slice(&buf.normed[r * d..(r + 1) * d]);
                }
                (sel, batch)
            } else if logits == Logits::All {
                (buf.normed.clone(), rows)
            } else {
                (Vec::new(), 0)
            }
        } else if logits == Logits::Last {
            let mut sel = Vec::with_capacity(batch * d);
            for (b, &s) in last.iter().enumerate() {
                let r = b * seq + s;
                sel.extend_from_slice(&buf.resid[r * d..(r + 1) * d]);
            }
            let mut normed = vec![0.0; batch * d];
            rms_norm(&mut normed, &sel, &self.final_norm, eps);
            (normed, batch)
        } else {
            (Vec::new(), 0)
        };
        drop(guard);
        let logits = match logits {
            Logits::None => None,
            Logits::Last | Logits::All => {
                let vocab = cfg.vocab_size;
                debug_assert_eq!(normed.len(), n_rows * d);
                let mut out = Vec::new();
                self.unembed_rows(&normed, &mut out)?;
                let t = if logits == Logits::All {
                    Tensor::from_vec(out, (batch, seq, vocab), &Device::Cpu)?
                } else {
                    Tensor::from_vec(out, (batch, vocab), &Device::Cpu)?
                };
                Some(t)
            }
        };
        Ok((logits, site.acts))
    }
}

/// The hooks of one pass and where they apply: each method runs a piece of the pass through its
/// hook points and returns true when the pass should stop there (the deepest hook was reached).
struct Site<'h, 'a> {
    hooks: &'h mut Hooks<'a>,
    acts: Activations,
    stop: Option<HookPoint>,
    cfg: &'h LlamaConfig,
    /// (batch, new positions, positions in all).
    dims: (usize, usize, usize),
}

impl Site<'_, '_> {
    /// Applies the hooks at `p` to `data`.
    fn at(&mut self, p: HookPoint, data: &mut [f32]) -> Result<bool> {
        if self.hooks.has(p) {
            let (batch, seq, t) = self.dims;
            let dims = p.shape(self.cfg).dims(batch, seq, t);
            self.hooks.apply(p, data, &dims, &mut self.acts)?;
        }
        Ok(self.stop == Some(p))
    }

    /// RMSNorm of `x` into `out` with the scale hook `p` in between (its replacement freezes
    /// the divisors); one fused pass over each row when `p` is not hooked.
    fn norm(
        &mut self,
        p: HookPoint,
        out: &mut [f32],
        x: &[f32],
        scales: &mut [f32],
        weight: &[f32],
    ) -> Result<bool> {
        if !self.hooks.has(p) {
            rms_norm(out, x, weight, self.cfg.rms_norm_eps);
            return Ok(self.stop == Some(p));
        }
        rms_scales(scales, x, weight.len(), self.cfg.rms_norm_eps);
        if self.at(p, scales)? {
            return Ok(true);
        }
        rms_apply(out, x, scales, weight);
        Ok(false)
    }

    /// A norm that reads the residual stream: `buf.normed` ← RMSNorm(`buf.resid`), through its
    /// scale hook and its output hook (`hooks`).
    fn pre_norm(
        &mut self,
        (scale, out): (HookPoint, HookPoint),
        buf: &mut Buffers,
        weight: &[f32],
    ) -> Result<bool> {
        Ok(
            self.norm(scale, &mut buf.normed, &buf.resid, &mut buf.scales, weight)?
                || self.at(out, &mut buf.normed)?,
        )
    }

    /// Gemma's norm of the branch output (`buf.branch`) before it joins the residual stream, with
    /// its scale hook `p`; `buf.normed` serves as scratch.
    fn post_norm(&mut self, p: HookPoint, buf: &mut Buffers, weight: &[f32]) -> Result<bool> {
        let stop = self.norm(p, &mut buf.normed, &buf.branch, &mut buf.scales, weight)?;
        std::mem::swap(&mut buf.normed, &mut buf.branch);
        Ok(stop)
    }

    /// Applies the hooks at `p` to columns `col..col + width` of every `stride`-wide row.
    fn columns(
        &mut self,
        p: HookPoint,
        data: &mut [f32],
        stride: usize,
        col: usize,
        width: usize,
    ) -> Result<bool> {
        if !self.hooks.has(p) {
            return Ok(self.stop == Some(p));
        }
        let mut part: Vec<f32> = data
            .chunks_exact(stride)
            .flat_map(|row| &row[col..col + width])
            .copied()
            .collect();
        let stop = self.at(p, &mut part)?;
        for (row, new) in data.chunks_exact_mut(stride).zip(part.chunks_exact(width)) {
            row[col..col + width].copy_from_slice(new);
        }
        Ok(stop)
    }

    /// Runs attention (`attend`) through the pattern hook `p`: when hooked, the pattern is
    /// computed, passed through the hooks, and attention reruns with the result.
    fn pattern(&mut self, p: HookPoint, mut attend: impl FnMut(Pattern<'_>)) -> Result<bool> {
        if !self.hooks.has(p) {
            attend(Pattern::Compute);
            return Ok(self.stop == Some(p));
        }
        let (batch, seq, t) = self.dims;
        let mut probs = vec![0.0; batch * self.cfg.n_heads * seq * t];
        attend(Pattern::Record(&mut probs));
        if self.at(p, &mut probs)? {
            return Ok(true);
        }
        attend(Pattern::Use(&mut probs));
        Ok(false)
    }
}

/// Returns the work buffers to the model when a pass ends (early returns and errors included).
struct BufferGuard<'a> {
    slot: &'a std::sync::Mutex<Option<Buffers>>,
    buf: Buffers,
}

impl Drop for BufferGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(std::mem::take(&mut self.buf));
        }
    }
}
