//! [`Activations`]: what the capture hooks recorded.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::HookPoint;
use crate::error::Result;

/// Captured activations, one tensor per captured hook point (shape: [`HookPoint::shape`]).
///
/// During generation the captures of successive steps are concatenated along `seq`, so the
/// tensor covers the prompt and every generated position (a pattern: every query and key).
#[derive(Debug, Default, Clone)]
pub struct Activations {
    map: BTreeMap<HookPoint, Tensor>,
}

impl Activations {
    /// The activation captured at `hook`.
    pub fn get(&self, hook: HookPoint) -> Option<&Tensor> {
        self.map.get(&hook)
    }

    /// Removes and returns the activation captured at `hook`.
    pub fn take(&mut self, hook: HookPoint) -> Option<Tensor> {
        self.map.remove(&hook)
    }

    /// All captures, in forward-pass order.
    pub fn iter(&self) -> impl Iterator<Item = (HookPoint, &Tensor)> {
        self.map.iter().map(|(p, t)| (*p, t))
    }

    /// Number of captured hook points.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Stores `t` at `hook`, appending along `seq` when something is already there (a pattern
    /// `[batch, heads, seq, t]` grows in `t` too: earlier rows get zeros for the new keys).
    pub(crate) fn push(&mut self, hook: HookPoint, t: Tensor) -> Result<()> {
        let merged = match self.map.remove(&hook) {
            Some(prev) if hook.is_per_token() => Tensor::cat(&[&prev, &t], 1)?,
            Some(prev) => {
                let extra = t.dim(3)?.saturating_sub(prev.dim(3)?);
                Tensor::cat(&[&prev.pad_with_zeros(3, 0, extra)?, &t], 2)?
            }
            None => t,
        };
        self.map.insert(hook, merged);
        Ok(())
    }
}

impl IntoIterator for Activations {
    type Item = (HookPoint, Tensor);
    type IntoIter = std::collections::btree_map::IntoIter<HookPoint, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.into_iter()
    }
}
