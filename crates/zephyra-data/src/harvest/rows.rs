//! The pipeline, once: batches of contexts → the model, stopping at the deepest hook → activations at
//! every hook → one exclusion verdict per row → kept rows, one shard of contexts at a time.
//!
//! [`Activations`] is the iterator every consumer runs on: the harvest writer (shards to disk), training on
//! the fly ([`StreamFeed`](super::StreamFeed), one or many dictionaries), and the analysis crate's
//! feature statistics, `explain` and eval (each an accumulator over its [`ShardRows`]). Its position —
//! [`Activations::position`], contexts consumed — is the one resume cursor: the context order is a pure
//! function of the corpus, the tokenizer and the options, so starting at shard `s` re-packs (without
//! running the model) the contexts before it and continues with exactly the rows an uninterrupted run
//! would have produced next.
//!
//! Where the contexts come from is the only difference between consumers: a harvest's [`Packer`] thread
//! ([`Activations::start`]), or any iterator of token-id sequences ([`Activations::over`]). Contexts of
//! different lengths are padded to the longest of their shard, as the model pads a batch; padded rows are
//! never kept and not counted.

use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use zephyra_lm::HookPoint;

use super::threads::{pack_thread, spawn, Packer};
use super::{HookModel, Pipeline};
use crate::error::Result;
use crate::exclude::{self, ExclusionRule, ShardExclusion};
use crate::pack::{ContextStream, PackOptions, TextEncoder};

/// One shard of contexts through the model: the activations of every row at every hook, and the rule's
/// verdict, shared by all hooks ([`exclude::apply_joint`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRows {
    /// Shard index (0-based, counting resumed shards).
    pub index: usize,
    /// Index of the shard's first context in the pass.
    pub first_context: u64,
    /// Tokens per context (the longest context of the shard; shorter ones are padded).
    pub ctx: usize,
    /// The contexts' tokens, concatenated and padded with their last token (`n_contexts × ctx`).
    pub tokens: Vec<u32>,
    /// Length of each context before padding (all `ctx` in a harvest).
    pub lengths: Vec<usize>,
    /// Per hook (plan order): activations of every row, `[tokens.len() × d]` row-major.
    pub acts: Vec<Vec<f32>>,
    /// Per hook: L2 norm of each row.
    pub norms: Vec<Vec<f32>>,
    /// Per voting hook ([`RowPlan::voting`]): the verdict (the same `keep` and counts at every hook; each
    /// hook's own median/threshold).
    pub exclusion: Vec<ShardExclusion>,
}

impl ShardRows {
    /// `keep[i]` for row `i` (every hook).
    pub fn keep(&self) -> &[bool] {
        self.exclusion.first().map_or(&[], |e| &e.keep)
    }

    /// Contexts in the shard.
    pub fn n_contexts(&self) -> usize {
        self.lengths.len()
    }

    /// Tokens of the shard's contexts, padding not counted.
    pub fn n_tokens(&self) -> u64 {
        self.lengths.iter().map(|&l| l as u64).sum()
    }

    /// The contexts as they were read (padding removed).
    pub fn contexts(&self) -> Vec<Vec<u32>> {
        let width = self.ctx.max(1);
        self.tokens
            .chunks(width)
            .zip(&self.lengths)
            .map(|(c, &len)| c[..len].to_vec())
            .collect()
    }

    /// The kept rows of the hooks `hooks` (indices into the plan's hooks) side by side: each kept row is
    /// `[acts[hooks[0]] | acts[hooks[1]] | …]` (one hook: an SAE's rows; input and target: a transcoder's).
    pub fn kept_rows(&self, hooks: &[usize]) -> Vec<f32> {
        let n = self.tokens.len();
        let widths: Vec<usize> = hooks
            .iter()
            .map(|&h| self.acts[h].len() / n.max(1))
            .collect();
        let n_kept = self.keep().iter().filter(|&&k| k).count();
        let mut out = Vec::with_capacity(n_kept * widths.iter().sum::<usize>());
        for (i, _) in self.keep().iter().enumerate().filter(|(_, &k)| k) {
            for (&h, &w) in hooks.iter().zip(&widths) {
                out.extend_from_slice(&self.acts[h][i * w..(i + 1) * w]);
            }
        }
        out
    }
}

/// What a pass reads and how it groups contexts.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPlan {
    /// Hook points captured, in this order in [`ShardRows::acts`].
    pub hooks: Vec<HookPoint>,
    /// The first `voting` hooks decide the verdict (their norms); the others are only captured (eval's
    /// final-norm rows).
    pub voting: usize,
    /// Contexts per forward pass.
    pub batch_contexts: usize,
    /// Contexts per shard: the group whose median norm the rule compares each row with.
    pub contexts_per_shard: usize,
    /// Exclusion rule.
    pub rule: ExclusionRule,
}

impl RowPlan {
    /// Every hook votes and a shard is one forward batch (the analysis passes: the rule's median is taken
    /// over each batch).
    pub fn per_batch(hooks: Vec<HookPoint>, batch_contexts: usize, rule: ExclusionRule) -> Self {
        Self {
            voting: hooks.len(),
            hooks,
            batch_contexts,
            contexts_per_shard: batch_contexts,
            rule,
        }
    }
}

/// Which token ids are special (dropped by the rule's special-token clause).
pub trait SpecialTokens {
    /// Whether `id` is a special token.
    fn is_special(&self, id: u32) -> bool;
}

impl SpecialTokens for Arc<dyn TextEncoder> {
    fn is_special(&self, id: u32) -> bool {
        TextEncoder::is_special(self.as_ref(), id)
    }
}

impl<F: Fn(u32) -> bool + ?Sized> SpecialTokens for &F {
    fn is_special(&self, id: u32) -> bool {
        self(id)
    }
}

/// The pipeline as an iterator of [`ShardRows`]: `next` reads one shard of contexts from `C`, runs their
/// forward passes on the calling thread and applies the exclusion rule.
pub struct Activations<'a, C = Packer, S = Arc<dyn TextEncoder>> {
    model: Arc<dyn HookModel + 'a>,
    specials: S,
    plan: RowPlan,
    contexts: C,
    next_index: usize,
    next_context: u64,
}

impl<C, S> std::fmt::Debug for Activations<'_, C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activations")
            .field("plan", &self.plan)
            .field("next_index", &self.next_index)
            .field("position", &self.next_context)
            .finish()
    }
}

impl Activations<'static> {
    /// A harvest's pass: starts the packer over `pipeline`'s corpus (files shuffled by the seed); the
    /// first shard produced is `start_shard` (earlier contexts are packed and dropped, without the model).
    pub fn start(pipeline: Pipeline, start_shard: usize) -> Result<Self> {
        let cfg = &pipeline.config;
        let mut corpus = pipeline.corpus.clone();
        corpus.shuffle_inputs(cfg.seed);
        let stream = ContextStream::new(
            corpus.documents(),
            pipeline.encoder.clone(),
            PackOptions {
                ctx: cfg.ctx,
                seed: cfg.seed,
                shuffle_contexts: cfg.shuffle_contexts,
            },
        )?;
        let target = cfg.target_contexts();
        let (tx, rx) = sync_channel(cfg.batch_contexts * 4 + 16);
        let thread = spawn("packer", "packer", move || pack_thread(stream, target, tx))?;
        let packer = Packer {
            rx,
            _thread: thread,
            read_stats: None,
            exhausted: false,
        };
        let plan = RowPlan {
            hooks: cfg.hooks.clone(),
            voting: cfg.hooks.len(),
            batch_contexts: cfg.batch_contexts,
            contexts_per_shard: cfg.contexts_per_shard,
            rule: cfg.rule,
        };
        let skip = start_shard as u64 * cfg.contexts_per_shard as u64;
        let mut rows = Activations::over(pipeline.model, pipeline.encoder, packer, plan);
        rows.skip_contexts(skip)?;
        rows.next_index = start_shard;
        Ok(rows)
    }

    /// What the corpus reader saw, once the corpus has been read to its end or the target.
    pub fn read_stats(&self) -> Option<&crate::corpus::ReadStats> {
        self.contexts.read_stats()
    }
}

impl<'a, C, S> Activations<'a, C, S>
where
    C: Iterator<Item = Result<Vec<u32>>>,
    S: SpecialTokens,
{
    /// A pass over `contexts` (token-id sequences; empty ones are an error of the model).
    pub fn over(model: Arc<dyn HookModel + 'a>, specials: S, contexts: C, plan: RowPlan) -> Self {
        Self {
            model,
            specials,
            plan,
            contexts,
            next_index: 0,
            next_context: 0,
        }
    }

    /// Contexts consumed so far (skipped ones included): the resume cursor.
    pub fn position(&self) -> u64 {
        self.next_context
    }

    /// Reads and drops contexts, without the model, until [`Self::position`] is `position` (or the
    /// contexts run out): where a resumed pass starts.
    pub fn skip_contexts(&mut self, position: u64) -> Result<()> {
        while self.next_context < position {
            if self.next_context()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn next_context(&mut self) -> Result<Option<Vec<u32>>> {
        match self.contexts.next() {
            Some(Ok(c)) => {
                self.next_context += 1;
                Ok(Some(c))
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// The next shard, running the model; `on_batch` gets the tokens of each forward batch.
    pub fn next_shard(&mut self, on_batch: &mut dyn FnMut(u64)) -> Result<Option<ShardRows>> {
        let (per_shard, per_batch) = (self.plan.contexts_per_shard, self.plan.batch_contexts);
        let first_context = self.next_context;
        let mut batches: Vec<Forward> = Vec::new();
        let mut n_contexts = 0;
        while n_contexts < per_shard {
            let mut batch = Vec::with_capacity(per_batch);
            while batch.len() < per_batch && n_contexts + batch.len() < per_shard {
                match self.next_context()? {
                    Some(c) => batch.push(c),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let acts = self.model.capture(&batch, &self.plan.hooks)?;
            n_contexts += batch.len();
            on_batch(batch.iter().map(|c| c.len() as u64).sum());
            batches.push(Forward {
                contexts: batch,
                acts,
            });
        }
        if n_contexts == 0 {
            return Ok(None);
        }
        let index = self.next_index;
        self.next_index += 1;
        let (ctx, tokens, lengths, acts) = join_batches(batches, self.plan.hooks.len());
        let n = tokens.len();
        let norms: Vec<Vec<f32>> = acts
            .iter()
            .map(|a| exclude::row_norms(a, (a.len() / n).max(1)))
            .collect();
        let voting = self.plan.voting.clamp(1, norms.len().max(1));
        let norm_refs: Vec<&[f32]> = norms.iter().take(voting).map(Vec::as_slice).collect();
        let specials = &self.specials;
        let mut exclusion = exclude::apply_joint(&self.plan.rule, &tokens, ctx, &norm_refs, &|t| {
            specials.is_special(t)
        });
        for e in &mut exclusion {
            drop_padding(e, &lengths, ctx);
        }
        Ok(Some(ShardRows {
            index,
            first_context,
            ctx,
            tokens,
            lengths,
            acts,
            norms,
            exclusion,
        }))
    }
}

/// One forward batch: its contexts and each hook's rows `[batch × seq × d]`.
struct Forward {
    contexts: Vec<Vec<u32>>,
    acts: Vec<Vec<f32>>,
}

/// The batches of a shard as one `[n_contexts × ctx]` block, `ctx` the longest context: tokens padded
/// with each context's last token, rows of a batch narrower than `ctx` padded with each context's last row.
type Joined = (usize, Vec<u32>, Vec<usize>, Vec<Vec<f32>>);

fn join_batches(batches: Vec<Forward>, n_hooks: usize) -> Joined {
    let ctx = batches
        .iter()
        .flat_map(|b| b.contexts.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut tokens = Vec::new();
    let mut lengths = Vec::new();
    let mut acts: Vec<Vec<f32>> = vec![Vec::new(); n_hooks];
    for Forward {
        contexts: batch,
        acts: got,
    } in batches
    {
        let seq = batch.iter().map(Vec::len).max().unwrap_or(0);
        for c in &batch {
            tokens.extend_from_slice(c);
            tokens.extend(std::iter::repeat_n(
                c.last().copied().unwrap_or(0),
                ctx - c.len(),
            ));
            lengths.push(c.len());
        }
        for (all, got) in acts.iter_mut().zip(got) {
            if seq == ctx {
                all.extend_from_slice(&got);
                continue;
            }
            let d = got.len() / (batch.len() * seq).max(1);
            for rows in got.chunks(seq * d) {
                all.extend_from_slice(rows);
                let last = &rows[rows.len().saturating_sub(d)..];
                for _ in seq..ctx {
                    all.extend_from_slice(last);
                }
            }
        }
    }
    (ctx, tokens, lengths, acts)
}

/// Marks the padded rows (position ≥ the context's length) as not kept and takes them out of the counts.
fn drop_padding(e: &mut ShardExclusion, lengths: &[usize], ctx: usize) {
    for (i, &len) in lengths.iter().enumerate() {
        for r in i * ctx + len..(i + 1) * ctx {
            if e.keep[r] {
                e.keep[r] = false;
                e.counts.kept -= 1;
            }
            e.counts.total -= 1;
        }
    }
}

impl<C, S> Iterator for Activations<'_, C, S>
where
    C: Iterator<Item = Result<Vec<u32>>>,
    S: SpecialTokens,
{
    type Item = Result<ShardRows>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_shard(&mut |_| {}).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A planted model: at hook `h`, row (token `t`, position `p`) is `[t·(h+1), p]`, except token 99:
    /// `[1, p]` at hook 0 (ordinary), `[198000, p]` at hook 1 (an outlier). A batch is padded to its longest context with the last token, as the
    /// model pads.
    struct Planted;

    impl HookModel for Planted {
        fn d_model(&self) -> usize {
            2
        }
        fn n_layers(&self) -> usize {
            2
        }
        fn context_length(&self) -> usize {
            64
        }
        fn capture(&self, contexts: &[Vec<u32>], hooks: &[HookPoint]) -> Result<Vec<Vec<f32>>> {
            let seq = contexts.iter().map(Vec::len).max().unwrap_or(0);
            Ok((0..hooks.len())
                .map(|h| {
                    let mut out = Vec::new();
                    for c in contexts {
                        for p in 0..seq {
                            let t = c[p.min(c.len() - 1)];
                            let v = match (h, t) {
                                (0, 99) => 1.0,
                                (1, 99) => 99_000.0,
                                _ => t as f32,
                            };
                            out.extend([v * (h + 1) as f32, p as f32]);
                        }
                    }
                    out
                })
                .collect())
        }
    }

    fn pass(
        contexts: Vec<Vec<u32>>,
        plan: RowPlan,
    ) -> Activations<'static, impl Iterator<Item = Result<Vec<u32>>>, &'static dyn Fn(u32) -> bool>
    {
        let none: &'static dyn Fn(u32) -> bool = &|_| false;
        Activations::over(Arc::new(Planted), none, contexts.into_iter().map(Ok), plan)
    }

    const HOOKS: [HookPoint; 2] = [HookPoint::ResidPre(0), HookPoint::ResidPre(1)];

    #[test]
    fn ragged_contexts_are_padded_and_their_padding_never_kept() {
        // Batches of 2 in a shard of 3: {[1,2,3],[4,5]} (width 3), then {[6]} (width 1, padded to 3 with
        // its last row).
        let plan = RowPlan {
            contexts_per_shard: 3,
            ..RowPlan::per_batch(HOOKS[..1].to_vec(), 2, ExclusionRule::keep_all())
        };
        let mut rows = pass(vec![vec![1, 2, 3], vec![4, 5], vec![6]], plan);
        let mut batches = Vec::new();
        let shard = rows.next_shard(&mut |n| batches.push(n)).unwrap().unwrap();
        assert_eq!(batches, vec![5, 1]);
        assert_eq!((shard.ctx, shard.n_contexts(), shard.n_tokens()), (3, 3, 6));
        assert_eq!(shard.tokens, vec![1, 2, 3, 4, 5, 5, 6, 6, 6]);
        assert_eq!(
            shard.keep(),
            &[true, true, true, true, true, false, true, false, false]
        );
        let counts = shard.exclusion[0].counts;
        assert_eq!((counts.total, counts.kept), (6, 6));
        assert_eq!(
            &shard.acts[0][16..18],
            &[6.0, 0.0],
            "re-padded with the last row"
        );
        let kept: Vec<f32> = shard.kept_rows(&[0]).chunks(2).map(|r| r[0]).collect();
        assert_eq!(kept, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(shard.contexts(), vec![vec![1, 2, 3], vec![4, 5], vec![6]]);
        assert_eq!(rows.position(), 3);
        assert!(rows.next().is_none());
    }

    #[test]
    fn only_the_voting_hooks_decide_the_verdict() {
        // Token 99 is an outlier at hook 1 only: dropped when both hooks vote, kept when hook 0 alone does.
        let rule = ExclusionRule {
            exclude_position_zero: false,
            exclude_special: false,
            max_norm_multiple: Some(10.0),
        };
        let ctx = vec![vec![5, 5, 99, 5, 5, 5]];
        let both = RowPlan::per_batch(HOOKS.to_vec(), 1, rule);
        let shard = pass(ctx.clone(), both.clone()).next().unwrap().unwrap();
        assert_eq!(shard.exclusion.len(), 2);
        assert_eq!(shard.keep(), &[true, true, false, true, true, true]);
        let first = RowPlan { voting: 1, ..both };
        let shard = pass(ctx, first).next().unwrap().unwrap();
        assert_eq!(shard.exclusion.len(), 1);
        assert!(shard.keep().iter().all(|&k| k));
        assert_eq!(shard.acts.len(), 2, "the non-voting hook is still captured");
        assert_eq!(shard.acts[1][4], 99_000.0 * 2.0);
    }

    #[test]
    fn a_pass_resumed_at_a_position_continues_with_the_same_shards() {
        let contexts: Vec<Vec<u32>> = (1..=5).map(|i| vec![i, i + 10]).collect();
        let plan = RowPlan::per_batch(HOOKS[..1].to_vec(), 2, ExclusionRule::default());
        let straight: Vec<ShardRows> = pass(contexts.clone(), plan.clone())
            .map(|s| s.unwrap())
            .collect();
        let mut resumed = pass(contexts, plan);
        resumed.skip_contexts(2).unwrap();
        assert_eq!(resumed.position(), 2);
        let rest: Vec<ShardRows> = resumed.map(|s| s.unwrap()).collect();
        assert_eq!(rest.len(), 2);
        for (a, b) in straight[1..].iter().zip(&rest) {
            assert_eq!(
                (a.first_context, &a.tokens, &a.acts),
                (b.first_context, &b.tokens, &b.acts)
            );
            assert_eq!(a.keep(), b.keep());
        }
    }
}
