//! The attention-sink exclusion rule: which harvested token positions become training rows.
//!
//! SmolLM2's residual stream has "massive activations" (attention sinks): norms of ≈23,000–27,000 against
//! ≈160 elsewhere, at position 0 of every context and sometimes at position 1. Kept in, a handful of such rows
//! dominates the variance, makes explained variance meaningless and wrecks training. The default rule drops,
//! with one verdict per row for all the hooks read together ([`apply_joint`]), in this order (a row is counted under the first clause that drops it):
//!
//! 1. position 0 of every context;
//! 2. special tokens (the tokenizer's control tokens, e.g. the end-of-sequence token between documents);
//! 3. any remaining row whose L2 norm (computed in float32 at that hook, before any bfloat16 rounding) exceeds
//!    `max_norm_multiple` × the median norm of the rows that survived clauses 1–2 **within the same shard**
//!    at that hook — at *any* of the hooks read together
//!    (the group of `contexts_per_shard` consecutive contexts written together; on-the-fly harvesting uses
//!    the same groups, so both give the same rows). The median of an even count is the lower middle value.
//!
//! [`ExclusionRule::keep_all`] (`--keep-sinks`) keeps every row.

use serde::{Deserialize, Serialize};

/// Which rows to drop. Recorded in every store's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExclusionRule {
    /// Drop position 0 of each context.
    pub exclude_position_zero: bool,
    /// Drop special tokens.
    pub exclude_special: bool,
    /// Drop rows whose norm exceeds this multiple of the shard's median norm (`None`: no norm clause).
    pub max_norm_multiple: Option<f32>,
}

/// The default norm multiple.
pub const DEFAULT_MAX_NORM_MULTIPLE: f32 = 10.0;

impl Default for ExclusionRule {
    fn default() -> Self {
        Self {
            exclude_position_zero: true,
            exclude_special: true,
            max_norm_multiple: Some(DEFAULT_MAX_NORM_MULTIPLE),
        }
    }
}

impl ExclusionRule {
    /// The rule of the command-line flags: [`keep_all`](Self::keep_all) with `keep_sinks`, otherwise the
    /// default rule with its norm clause at `max_norm_multiple` × the shard's median norm.
    pub fn from_flags(keep_sinks: bool, max_norm_multiple: f32) -> Self {
        if keep_sinks {
            Self::keep_all()
        } else {
            Self {
                max_norm_multiple: Some(max_norm_multiple),
                ..Self::default()
            }
        }
    }

    /// Keeps every row (`--keep-sinks`).
    pub fn keep_all() -> Self {
        Self {
            exclude_position_zero: false,
            exclude_special: false,
            max_norm_multiple: None,
        }
    }

    /// A human-readable statement of the rule, stored in the manifest.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.exclude_position_zero {
            parts.push("position 0 of each context".to_string());
        }
        if self.exclude_special {
            parts.push("special tokens".to_string());
        }
        if let Some(m) = self.max_norm_multiple {
            parts.push(format!(
                "rows with L2 norm > {m} x the median norm of the remaining rows of their shard"
            ));
        }
        if parts.is_empty() {
            "keep every row".to_string()
        } else {
            format!("exclude {}", parts.join("; "))
        }
    }
}

/// How many rows each clause dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionCounts {
    /// Rows considered.
    pub total: u64,
    /// Rows kept.
    pub kept: u64,
    /// Dropped as position 0.
    pub position_zero: u64,
    /// Dropped as special tokens.
    pub special: u64,
    /// Dropped by the norm clause.
    pub high_norm: u64,
}

impl ExclusionCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &ExclusionCounts) {
        self.total += other.total;
        self.kept += other.kept;
        self.position_zero += other.position_zero;
        self.special += other.special;
        self.high_norm += other.high_norm;
    }
}

/// The decision for one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardExclusion {
    /// `keep[i]` for row `i` (context-major, `n_contexts × ctx`).
    pub keep: Vec<bool>,
    /// Counts.
    pub counts: ExclusionCounts,
    /// Median norm of the rows surviving clauses 1–2 (0 when there are none).
    pub median_norm: f32,
    /// Norm above which rows were dropped (`None` without a norm clause).
    pub norm_threshold: Option<f32>,
}

/// L2 norm of each row of `acts` (`n × d`), accumulated in f64.
pub fn row_norms(acts: &[f32], d: usize) -> Vec<f32> {
    acts.chunks_exact(d)
        .map(|r| {
            r.iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect()
}

/// Applies `rule` to a shard of `tokens.len() / ctx` contexts whose row norms are `norms`.
pub fn apply(
    rule: &ExclusionRule,
    tokens: &[u32],
    ctx: usize,
    norms: &[f32],
    is_special: &dyn Fn(u32) -> bool,
) -> ShardExclusion {
    apply_joint(rule, tokens, ctx, &[norms], is_special)
        .pop()
        .expect("one verdict per hook, and one hook was given")
}

/// Applies `rule` to a shard read at several hooks at once (`norms[h]` the row norms at hook `h`) and
/// returns one [`ShardExclusion`] per hook, all with the **same** `keep` and counts: clauses 1–2 do not
/// depend on the hook, and the norm clause drops a row when it is an outlier at *any* hook, each hook
/// measured against its own median (its `median_norm` and `norm_threshold`).
///
/// Why one verdict: the dictionaries trained from one forward pass (one SAE per hook, or a transcoder
/// reading one hook and predicting another) must see the same token positions, or a transcoder's input
/// and target rows would not pair up and a multi-hook run could not advance all its dictionaries with one
/// cursor. An attention sink is an outlier of the token, not of one hook (its norm is extreme from the
/// block where it forms onwards): dropping it everywhere keeps every hook's statistics clean at the cost
/// of a few rows that were ordinary at an early hook. With one hook this is [`apply`].
pub fn apply_joint(
    rule: &ExclusionRule,
    tokens: &[u32],
    ctx: usize,
    norms: &[&[f32]],
    is_special: &dyn Fn(u32) -> bool,
) -> Vec<ShardExclusion> {
    let n = tokens.len();
    let mut keep = vec![true; n];
    let mut counts = ExclusionCounts {
        total: n as u64,
        ..Default::default()
    };
    for i in 0..n {
        if rule.exclude_position_zero && i % ctx == 0 {
            keep[i] = false;
            counts.position_zero += 1;
        } else if rule.exclude_special && is_special(tokens[i]) {
            keep[i] = false;
            counts.special += 1;
        }
    }
    // Each hook's median over the rows surviving clauses 1–2, and its threshold.
    let limits: Vec<(f32, Option<f32>)> = norms
        .iter()
        .map(|hook_norms| {
            let mut candidates: Vec<f32> =
                (0..n).filter(|&i| keep[i]).map(|i| hook_norms[i]).collect();
            let median_norm = if candidates.is_empty() {
                0.0
            } else {
                let mid = (candidates.len() - 1) / 2;
                *candidates.select_nth_unstable_by(mid, f32::total_cmp).1
            };
            (median_norm, rule.max_norm_multiple.map(|m| m * median_norm))
        })
        .collect();
    for i in 0..n {
        let outlier = norms
            .iter()
            .zip(&limits)
            .any(|(hook_norms, &(_, t))| t.is_some_and(|t| hook_norms[i] > t));
        if keep[i] && outlier {
            keep[i] = false;
            counts.high_norm += 1;
        }
    }
    counts.kept = keep.iter().filter(|&&k| k).count() as u64;
    limits
        .into_iter()
        .map(|(median_norm, norm_threshold)| ShardExclusion {
            keep: keep.clone(),
            counts,
            median_norm,
            norm_threshold,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_drops_position_zero_specials_and_sinks() {
        // 2 contexts of 4; token 9 is special; row 5 (context 1, position 1) is a sink.
        let tokens = [1, 2, 9, 3, 4, 5, 6, 7];
        let norms = [5000.0, 1.0, 1.0, 2.0, 4000.0, 100.0, 3.0, 4.0];
        let ex = apply(&ExclusionRule::default(), &tokens, 4, &norms, &|t| t == 9);
        // Candidates after clauses 1-2: rows 1,3,5,6,7 → norms 1,2,100,3,4 → lower median 3 → threshold 30.
        assert_eq!(ex.median_norm, 3.0);
        assert_eq!(ex.norm_threshold, Some(30.0));
        assert_eq!(
            ex.keep,
            vec![false, true, false, true, false, false, true, true]
        );
        assert_eq!(
            ex.counts,
            ExclusionCounts {
                total: 8,
                kept: 4,
                position_zero: 2,
                special: 1,
                high_norm: 1
            }
        );
        let all = apply(&ExclusionRule::keep_all(), &tokens, 4, &norms, &|t| t == 9);
        assert!(all.keep.iter().all(|&k| k));
        assert_eq!(all.counts.kept, 8);
    }

    #[test]
    fn several_hooks_share_one_verdict() {
        // 1 context of 6. Hook a: row 2 is a sink (median of rows 1..6 = 2 → threshold 20);
        // hook b: row 4 is (median 1 → threshold 10). Both rows go at both hooks.
        let tokens = [1, 2, 3, 4, 5, 6];
        let a = [900.0, 1.0, 500.0, 2.0, 3.0, 2.0];
        let b = [900.0, 1.0, 1.0, 1.0, 50.0, 1.0];
        let ex = apply_joint(&ExclusionRule::default(), &tokens, 6, &[&a, &b], &|_| false);
        assert_eq!(ex.len(), 2);
        let keep = vec![false, true, false, true, false, true];
        assert_eq!((&ex[0].keep, &ex[1].keep), (&keep, &keep));
        assert_eq!((ex[0].median_norm, ex[0].norm_threshold), (2.0, Some(20.0)));
        assert_eq!((ex[1].median_norm, ex[1].norm_threshold), (1.0, Some(10.0)));
        assert_eq!((ex[0].counts.high_norm, ex[0].counts.kept), (2, 3));
        assert_eq!(ex[0].counts, ex[1].counts);
        // One hook: the same as `apply`.
        let one = apply_joint(&ExclusionRule::default(), &tokens, 6, &[&a], &|_| false);
        assert_eq!(
            one[0],
            apply(&ExclusionRule::default(), &tokens, 6, &a, &|_| false)
        );
    }

    #[test]
    fn row_norms_are_l2() {
        assert_eq!(row_norms(&[3.0, 4.0, 0.0, 0.0], 2), vec![5.0, 0.0]);
    }
}
