//! Hook points ([`HookPoint`]), what to do at them ([`Hooks`]) and what comes back ([`Activations`]).
//!
//! Names follow TransformerLens: `blocks.{l}.hook_resid_pre`, `blocks.{l}.hook_attn_out`,
//! `blocks.{l}.hook_resid_mid`, `blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_post` and
//! `ln_final.hook_normalized`. Every activation is a `[batch, seq, d_model]` `f32` tensor.
//!
//! Within one block the order is: `hook_resid_pre` → attention → `hook_attn_out` →
//! `hook_resid_mid` (= pre + attn_out) → MLP → `hook_mlp_out` → `hook_resid_post` (= mid + mlp_out).
//! A change made at a hook flows into everything computed after it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use crate::error::{LmError, Result};

/// A named place in the forward pass where activations can be read or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `blocks.{l}.hook_resid_pre`: the residual stream entering block `l`.
    ResidPre(usize),
    /// `blocks.{l}.hook_attn_out`: the attention output of block `l` (after the output projection).
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid`: the residual stream between attention and MLP of block `l`.
    ResidMid(usize),
    /// `blocks.{l}.hook_mlp_out`: the MLP output of block `l`.
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post`: the residual stream leaving block `l`.
    ResidPost(usize),
    /// `ln_final.hook_normalized`: the residual stream after the final RMSNorm (input to the unembedding).
    LnFinal,
}

/// Description of the valid names, used in error messages.
const VALID_NAMES: &str = "`blocks.{l}.hook_resid_pre`, `blocks.{l}.hook_attn_out`, \
    `blocks.{l}.hook_resid_mid`, `blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_post` \
    (l = block index) and `ln_final.hook_normalized`";

impl HookPoint {
    /// The block this hook belongs to (`None` for [`HookPoint::LnFinal`]).
    pub fn layer(self) -> Option<usize> {
        match self {
            HookPoint::ResidPre(l)
            | HookPoint::AttnOut(l)
            | HookPoint::ResidMid(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
            HookPoint::LnFinal => None,
        }
    }

    /// Position in forward-pass order: a hook with a larger key is computed later.
    pub fn depth(self) -> (usize, u8) {
        match self {
            HookPoint::ResidPre(l) => (l, 0),
            HookPoint::AttnOut(l) => (l, 1),
            HookPoint::ResidMid(l) => (l, 2),
            HookPoint::MlpOut(l) => (l, 3),
            HookPoint::ResidPost(l) => (l, 4),
            HookPoint::LnFinal => (usize::MAX, 0),
        }
    }

    /// Every hook point of a model with `n_layers` blocks, in forward-pass order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut all = Vec::with_capacity(5 * n_layers + 1);
        for l in 0..n_layers {
            all.extend([
                HookPoint::ResidPre(l),
                HookPoint::AttnOut(l),
                HookPoint::ResidMid(l),
                HookPoint::MlpOut(l),
                HookPoint::ResidPost(l),
            ]);
        }
        all.push(HookPoint::LnFinal);
        all
    }

    /// Checks that the hook exists in a model with `n_layers` blocks.
    pub fn validate(self, n_layers: usize) -> Result<Self> {
        match self.layer() {
            Some(l) if l >= n_layers => Err(LmError::LayerOutOfRange {
                hook: self.to_string(),
                n_layers,
            }),
            _ => Ok(self),
        }
    }

    /// Parses `name` and checks it against a model with `n_layers` blocks.
    pub fn parse_for(name: &str, n_layers: usize) -> Result<Self> {
        name.parse::<HookPoint>()?.validate(n_layers)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookPoint::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookPoint::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            HookPoint::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookPoint::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            HookPoint::LnFinal => f.write_str("ln_final.hook_normalized"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = LmError;

    fn from_str(name: &str) -> Result<Self> {
        let unknown = || LmError::UnknownHook {
            name: name.to_string(),
            valid: VALID_NAMES.to_string(),
        };
        if name == "ln_final.hook_normalized" {
            return Ok(HookPoint::LnFinal);
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, kind) = rest.split_once('.').ok_or_else(unknown)?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let layer: usize = layer.parse().map_err(|_| unknown())?;
        match kind {
            "hook_resid_pre" => Ok(HookPoint::ResidPre(layer)),
            "hook_attn_out" => Ok(HookPoint::AttnOut(layer)),
            "hook_resid_mid" => Ok(HookPoint::ResidMid(layer)),
            "hook_mlp_out" => Ok(HookPoint::MlpOut(layer)),
            "hook_resid_post" => Ok(HookPoint::ResidPost(layer)),
            _ => Err(unknown()),
        }
    }
}

/// A closure that rewrites an activation: gets the hook and the `[batch, seq, d_model]` tensor,
/// returns a tensor of the same shape. It may borrow (an SAE, a steering vector) for `'a`.
pub type ReplaceFn<'a> = Box<dyn FnMut(HookPoint, &Tensor) -> Result<Tensor> + Send + 'a>;

/// What to do at one hook point.
pub(crate) enum HookAction<'a> {
    /// Record the activation into [`Activations`].
    Capture,
    /// Replace the activation with the closure's result.
    Replace(ReplaceFn<'a>),
    /// Add one `d_model` vector at every position.
    AddVector(Vec<f32>),
    /// Add a `[batch, seq, d_model]` tensor.
    AddTensor(Tensor),
}

/// The hooks of one forward pass or generation: a list of (hook point, action), applied in the
/// order they were added when several share a hook point.
///
/// ```
/// use zephyra_lm::{HookPoint, Hooks};
/// let mut hooks = Hooks::new();
/// hooks
///     .capture(HookPoint::ResidPre(3))
///     .add_vector(HookPoint::ResidPost(5), vec![0.0; 576]);
/// assert_eq!(hooks.deepest(), Some(HookPoint::ResidPost(5)));
/// ```
#[derive(Default)]
pub struct Hooks<'a> {
    entries: Vec<(HookPoint, HookAction<'a>)>,
}

impl fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (hook, action) in &self.entries {
            let what = match action {
                HookAction::Capture => "capture",
                HookAction::Replace(_) => "replace",
                HookAction::AddVector(_) => "add vector",
                HookAction::AddTensor(_) => "add tensor",
            };
            list.entry(&format_args!("{hook}: {what}"));
        }
        list.finish()
    }
}

impl<'a> Hooks<'a> {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hooks that capture each of `points`.
    pub fn capturing(points: impl IntoIterator<Item = HookPoint>) -> Self {
        let mut hooks = Self::new();
        for p in points {
            hooks.capture(p);
        }
        hooks
    }

    /// Records the activation at `hook` (as it is at this point in the action list).
    pub fn capture(&mut self, hook: HookPoint) -> &mut Self {
        self.entries.push((hook, HookAction::Capture));
        self
    }

    /// Replaces the activation at `hook` with `f(hook, activation)`.
    ///
    /// `f` sees `[batch, seq, d_model]` (during generation: only the new positions) and must return
    /// the same shape; an error it returns aborts the forward pass.
    pub fn replace(
        &mut self,
        hook: HookPoint,
        f: impl FnMut(HookPoint, &Tensor) -> Result<Tensor> + Send + 'a,
    ) -> &mut Self {
        self.entries.push((hook, HookAction::Replace(Box::new(f))));
        self
    }

    /// Adds `vector` (length `d_model`) to the activation at `hook`, at every position.
    pub fn add_vector(&mut self, hook: HookPoint, vector: Vec<f32>) -> &mut Self {
        self.entries.push((hook, HookAction::AddVector(vector)));
        self
    }

    /// Adds `tensor` to the activation at `hook`: a `[d_model]` tensor is added at every position,
    /// a `[batch, seq, d_model]` tensor elementwise.
    pub fn add(&mut self, hook: HookPoint, tensor: Tensor) -> &mut Self {
        self.entries.push((hook, HookAction::AddTensor(tensor)));
        self
    }

    /// The hook points used, in forward-pass order, without repeats.
    pub fn points(&self) -> Vec<HookPoint> {
        let mut points: Vec<HookPoint> = self.entries.iter().map(|(p, _)| *p).collect();
        points.sort_by_key(|p| p.depth());
        points.dedup();
        points
    }

    /// The hook point computed last in the forward pass, if any.
    pub fn deepest(&self) -> Option<HookPoint> {
        self.entries
            .iter()
            .map(|(p, _)| *p)
            .max_by_key(|p| p.depth())
    }

    /// Whether any action is registered at `hook`.
    pub(crate) fn has(&self, hook: HookPoint) -> bool {
        self.entries.iter().any(|(p, _)| *p == hook)
    }

    /// Whether no hooks are registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks every hook against a model with `n_layers` blocks.
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        for (p, _) in &self.entries {
            p.validate(n_layers)?;
        }
        Ok(())
    }

    /// Applies every action registered at `hook` to `data` (`[batch, seq, d_model]`, row-major).
    pub(crate) fn apply(
        &mut self,
        hook: HookPoint,
        data: &mut [f32],
        shape: [usize; 3],
        out: &mut Activations,
    ) -> Result<()> {
        let [batch, seq, d_model] = shape;
        for (p, action) in self.entries.iter_mut() {
            if *p != hook {
                continue;
            }
            match action {
                HookAction::Capture => {
                    let t = Tensor::from_slice(data, (batch, seq, d_model), &Device::Cpu)?;
                    out.push(hook, t)?;
                }
                HookAction::Replace(f) => {
                    let t = Tensor::from_slice(data, (batch, seq, d_model), &Device::Cpu)?;
                    let new = f(hook, &t)?;
                    if new.dims() != [batch, seq, d_model] {
                        return Err(LmError::HookShape {
                            hook: hook.to_string(),
                            expected: vec![batch, seq, d_model],
                            got: new.dims().to_vec(),
                        });
                    }
                    let new = new.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    data.copy_from_slice(&new);
                }
                HookAction::AddVector(v) => add_rows(hook, data, v, d_model)?,
                HookAction::AddTensor(t) => {
                    let dims = t.dims().to_vec();
                    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    if dims == [d_model] {
                        add_rows(hook, data, &v, d_model)?;
                    } else if dims == [batch, seq, d_model] {
                        data.iter_mut().zip(&v).for_each(|(x, a)| *x += a);
                    } else {
                        return Err(LmError::HookShape {
                            hook: hook.to_string(),
                            expected: vec![batch, seq, d_model],
                            got: dims,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn add_rows(hook: HookPoint, data: &mut [f32], v: &[f32], d_model: usize) -> Result<()> {
    if v.len() != d_model {
        return Err(LmError::HookShape {
            hook: hook.to_string(),
            expected: vec![d_model],
            got: vec![v.len()],
        });
    }
    for row in data.chunks_exact_mut(d_model) {
        row.iter_mut().zip(v).for_each(|(x, a)| *x += a);
    }
    Ok(())
}

/// Captured activations, one `[batch, seq, d_model]` tensor per captured hook point.
///
/// During generation the captures of successive steps are concatenated along `seq`, so the
/// tensor covers the prompt and every generated position.
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

    /// Stores `t` at `hook`, appending along `seq` when something is already there.
    pub(crate) fn push(&mut self, hook: HookPoint, t: Tensor) -> Result<()> {
        let merged = match self.map.remove(&hook) {
            Some(prev) => Tensor::cat(&[&prev, &t], 1)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in HookPoint::all(30) {
            let s = p.to_string();
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
        }
        assert_eq!(HookPoint::all(30).len(), 151);
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in [
            "",
            "blocks.x.hook_resid_pre",
            "blocks..hook_resid_pre",
            "blocks.3.hook_resid",
            "blocks.+3.hook_resid_pre",
            "ln_final",
            "hook_resid_pre",
        ] {
            let err = bad.parse::<HookPoint>().unwrap_err();
            assert!(err.to_string().contains("hook_resid_pre"), "{err}");
        }
    }

    #[test]
    fn out_of_range_layer() {
        let err = HookPoint::parse_for("blocks.40.hook_mlp_out", 30).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("30 blocks (0..=29)"), "{msg}");
        assert!(HookPoint::parse_for("blocks.29.hook_mlp_out", 30).is_ok());
    }

    #[test]
    fn depth_order_matches_forward_order() {
        let all = HookPoint::all(3);
        let mut sorted = all.clone();
        sorted.sort_by_key(|p| p.depth());
        assert_eq!(all, sorted);
    }
}
