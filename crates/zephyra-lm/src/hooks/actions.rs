//! [`Hooks`]: the actions of one forward pass or generation, and how they apply to a buffer.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use super::{Activations, HookPoint};
use crate::error::{LmError, Result};

/// A closure that rewrites an activation: gets the hook and its tensor ([`HookPoint::shape`]),
/// returns a tensor of the same shape. It may borrow (an SAE, a steering vector) for `'a`.
pub type ReplaceFn<'a> = Box<dyn FnMut(HookPoint, &Tensor) -> Result<Tensor> + Send + 'a>;

/// What to do at one hook point.
enum HookAction<'a> {
    /// Record the activation into [`Activations`].
    Capture,
    /// Replace the activation with the closure's result.
    Replace(ReplaceFn<'a>),
    /// Add one vector at every position (per-token hooks).
    AddVector(Vec<f32>),
    /// Add a tensor of the hook's shape, or one row at every position.
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
    /// `f` sees the hook's tensor ([`HookPoint::shape`]; during generation only the new positions)
    /// and must return the same shape; an error it returns aborts the forward pass.
    pub fn replace(
        &mut self,
        hook: HookPoint,
        f: impl FnMut(HookPoint, &Tensor) -> Result<Tensor> + Send + 'a,
    ) -> &mut Self {
        self.entries.push((hook, HookAction::Replace(Box::new(f))));
        self
    }

    /// Adds `vector` (the hook's per-token width, e.g. `d_model`) to the activation at `hook`, at
    /// every position. An error at run time for `attn.hook_pattern`, which has no per-token rows.
    pub fn add_vector(&mut self, hook: HookPoint, vector: Vec<f32>) -> &mut Self {
        self.entries.push((hook, HookAction::AddVector(vector)));
        self
    }

    /// Adds `tensor` to the activation at `hook`: a one-dimensional tensor of the per-token width
    /// is added at every position, a tensor of the hook's full shape elementwise.
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

    /// Checks every hook against a model with configuration `cfg` (block index and family).
    pub fn validate_for(&self, cfg: &crate::LlamaConfig) -> Result<()> {
        for (p, _) in &self.entries {
            p.validate_for(cfg)?;
        }
        Ok(())
    }

    /// Applies every action registered at `hook` to `data` (row-major, of dimensions `dims`:
    /// `[batch, seq, …]` for per-token hooks, `[batch, n_heads, seq, t]` for the pattern).
    pub(crate) fn apply(
        &mut self,
        hook: HookPoint,
        data: &mut [f32],
        dims: &[usize],
        out: &mut Activations,
    ) -> Result<()> {
        debug_assert_eq!(data.len(), dims.iter().product::<usize>());
        let shape_error = |got: Vec<usize>| LmError::HookShape {
            hook: hook.to_string(),
            expected: dims.to_vec(),
            got,
        };
        // Values per token; vectors added "at every position" have this length.
        let row = || -> Result<usize> {
            if hook.is_per_token() {
                Ok(dims[2..].iter().product())
            } else {
                Err(LmError::NotPerToken {
                    hook: hook.to_string(),
                })
            }
        };
        for (p, action) in self.entries.iter_mut() {
            if *p != hook {
                continue;
            }
            match action {
                HookAction::Capture => {
                    out.push(hook, Tensor::from_slice(data, dims, &Device::Cpu)?)?;
                }
                HookAction::Replace(f) => {
                    let t = Tensor::from_slice(data, dims, &Device::Cpu)?;
                    let new = f(hook, &t)?;
                    if new.dims() != dims {
                        return Err(shape_error(new.dims().to_vec()));
                    }
                    let new = new.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    data.copy_from_slice(&new);
                }
                HookAction::AddVector(v) => add_rows(hook, data, v, row()?)?,
                HookAction::AddTensor(t) => {
                    let got = t.dims().to_vec();
                    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    if got == dims {
                        data.iter_mut().zip(&v).for_each(|(x, a)| *x += a);
                    } else if got.len() == 1 {
                        add_rows(hook, data, &v, row()?)?;
                    } else {
                        return Err(shape_error(got));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Adds `v` to every `width`-long row of `data`.
fn add_rows(hook: HookPoint, data: &mut [f32], v: &[f32], width: usize) -> Result<()> {
    if v.len() != width {
        return Err(LmError::HookShape {
            hook: hook.to_string(),
            expected: vec![width],
            got: vec![v.len()],
        });
    }
    for row in data.chunks_exact_mut(width) {
        row.iter_mut().zip(v).for_each(|(x, a)| *x += a);
    }
    Ok(())
}
