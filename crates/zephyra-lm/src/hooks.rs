//! Hook points ([`HookPoint`]), what to do at them ([`Hooks`]) and what comes back ([`Activations`]).
//!
//! Names follow TransformerLens: the residual stream (`blocks.{l}.hook_resid_pre`,
//! `hook_attn_out`, `hook_resid_mid`, `hook_mlp_out`, `hook_resid_post`,
//! `ln_final.hook_normalized`, each `[batch, seq, d_model]`) and the pieces inside a block (norm
//! scales and outputs, q/k/v, the attention pattern, `attn.hook_z`, `mlp.hook_post`), each with
//! its own shape ([`HookPoint::shape`]).
//!
//! Within one block the order is: `hook_resid_pre` → `ln1.hook_scale` → `ln1.hook_normalized` →
//! `attn.hook_q/k/v` → `attn.hook_pattern` → `attn.hook_z` → (`ln1_post.hook_scale`) →
//! `hook_attn_out` → `hook_resid_mid` (= pre + attn_out) → `ln2.hook_scale` →
//! `ln2.hook_normalized` → `mlp.hook_post` → (`ln2_post.hook_scale`) → `hook_mlp_out` →
//! `hook_resid_post` (= mid + mlp_out). A change made at a hook flows into everything computed
//! after it: replacing `attn.hook_pattern` freezes attention, replacing a `hook_scale` freezes
//! that normalisation (with both frozen a block is linear in its residual input, up to the MLP).

mod actions;
mod activations;
mod point;

pub use actions::{Hooks, ReplaceFn};
pub use activations::Activations;
pub use point::{HookPoint, HookShape};
