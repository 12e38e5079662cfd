//! [`HookPoint`]: the typed hook names, their TransformerLens spelling and their shapes.

use std::fmt;
use std::str::FromStr;

use crate::config::{Family, LlamaConfig};
use crate::error::{LmError, Result};

/// A named place in the forward pass where activations can be read or rewritten.
///
/// Names and shapes follow TransformerLens (`batch`, `seq` = query positions, `t` = key positions
/// = positions before this pass plus `seq`). Norm conventions: `hook_scale` is TransformerLens'
/// divisor `sqrt(mean(x²) + ε)`, `[batch, seq, 1]`; `hook_normalized` is the norm's *output*
/// `x / scale · w`, i.e. exactly what the next layer reads (as `ln_final.hook_normalized` always
/// was here; TransformerLens' unfolded `RMSNorm` hooks `x / scale` before `· w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `blocks.{l}.hook_resid_pre`: the residual stream entering block `l`.
    ResidPre(usize),
    /// `blocks.{l}.ln1.hook_scale`: `[batch, seq, 1]`, the attention norm's divisor.
    Ln1Scale(usize),
    /// `blocks.{l}.ln1.hook_normalized`: `[batch, seq, d_model]`, the attention's input.
    Ln1Normalized(usize),
    /// `blocks.{l}.attn.hook_q`: `[batch, seq, n_heads, d_head]`, queries right after the
    /// projection (before Gemma's q-norm and before RoPE).
    AttnQ(usize),
    /// `blocks.{l}.attn.hook_k`: `[batch, seq, n_kv_heads, d_head]`, keys after the projection.
    AttnK(usize),
    /// `blocks.{l}.attn.hook_v`: `[batch, seq, n_kv_heads, d_head]`, values after the projection.
    AttnV(usize),
    /// `blocks.{l}.attn.hook_pattern`: `[batch, n_heads, seq, t]`, the attention weights (zero
    /// outside the causal / sliding-window range). Replacing it freezes attention: entries
    /// outside that range are ignored.
    AttnPattern(usize),
    /// `blocks.{l}.attn.hook_z`: `[batch, seq, n_heads, d_head]`, pattern · values, the input
    /// of the output projection `W_O`.
    AttnZ(usize),
    /// `blocks.{l}.ln1_post.hook_scale` (Gemma 3 only): `[batch, seq, 1]`, the divisor of the
    /// post-attention norm.
    Ln1PostScale(usize),
    /// `blocks.{l}.hook_attn_out`: what attention adds to the residual stream (Gemma: after the
    /// post-attention norm).
    AttnOut(usize),
    /// `blocks.{l}.hook_resid_mid`: the residual stream between attention and MLP of block `l`.
    ResidMid(usize),
    /// `blocks.{l}.ln2.hook_scale`: `[batch, seq, 1]`, the MLP norm's divisor.
    Ln2Scale(usize),
    /// `blocks.{l}.ln2.hook_normalized`: `[batch, seq, d_model]`, the MLP's input.
    Ln2Normalized(usize),
    /// `blocks.{l}.mlp.hook_post`: `[batch, seq, d_mlp]`, `act(gate) · up`, the input of `W_down`.
    MlpPost(usize),
    /// `blocks.{l}.ln2_post.hook_scale` (Gemma 3 only): `[batch, seq, 1]`, the divisor of the
    /// post-MLP norm.
    Ln2PostScale(usize),
    /// `blocks.{l}.hook_mlp_out`: what the MLP adds to the residual stream (Gemma: after the
    /// post-feedforward norm).
    MlpOut(usize),
    /// `blocks.{l}.hook_resid_post`: the residual stream leaving block `l`.
    ResidPost(usize),
    /// `ln_final.hook_scale`: `[batch, seq, 1]`, the final norm's divisor.
    LnFinalScale,
    /// `ln_final.hook_normalized`: the residual stream after the final RMSNorm (input to the unembedding).
    LnFinal,
}

/// The layout of a hook's tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookShape {
    /// `[batch, seq, width]`: one row per token.
    Rows {
        /// Values per token.
        width: usize,
    },
    /// `[batch, seq, n_heads, d_head]`: one row of `n_heads · d_head` values per token.
    Heads {
        /// Number of heads.
        n_heads: usize,
        /// Width of one head.
        d_head: usize,
    },
    /// `[batch, n_heads, seq, t]`: not one row per token.
    Pattern {
        /// Number of query heads.
        n_heads: usize,
    },
}

impl HookShape {
    /// The tensor's dimensions for `batch` sequences of `seq` new positions attending to `t`
    /// positions in all.
    pub fn dims(self, batch: usize, seq: usize, t: usize) -> Vec<usize> {
        match self {
            HookShape::Rows { width } => vec![batch, seq, width],
            HookShape::Heads { n_heads, d_head } => vec![batch, seq, n_heads, d_head],
            HookShape::Pattern { n_heads } => vec![batch, n_heads, seq, t],
        }
    }

    /// Values per token, `None` for [`HookShape::Pattern`].
    pub fn row_width(self) -> Option<usize> {
        match self {
            HookShape::Rows { width } => Some(width),
            HookShape::Heads { n_heads, d_head } => Some(n_heads * d_head),
            HookShape::Pattern { .. } => None,
        }
    }
}

/// Description of the valid names, used in error messages.
const VALID_NAMES: &str = "`blocks.{l}.hook_resid_pre`, `blocks.{l}.hook_attn_out`, \
    `blocks.{l}.hook_resid_mid`, `blocks.{l}.hook_mlp_out`, `blocks.{l}.hook_resid_post`, \
    `blocks.{l}.ln1.hook_scale`, `blocks.{l}.ln1.hook_normalized`, `blocks.{l}.ln2.hook_scale`, \
    `blocks.{l}.ln2.hook_normalized`, `blocks.{l}.attn.hook_q`, `blocks.{l}.attn.hook_k`, \
    `blocks.{l}.attn.hook_v`, `blocks.{l}.attn.hook_pattern`, `blocks.{l}.attn.hook_z`, \
    `blocks.{l}.mlp.hook_post`, `blocks.{l}.ln1_post.hook_scale` and \
    `blocks.{l}.ln2_post.hook_scale` (Gemma 3) (l = block index), `ln_final.hook_scale` and \
    `ln_final.hook_normalized`";

/// Makes a per-block hook from its block index.
type MakeHook = fn(usize) -> HookPoint;

/// The per-block hooks in forward-pass order with their names after `blocks.{l}.`.
const BLOCK_HOOKS: [(MakeHook, &str); 17] = [
    (HookPoint::ResidPre, "hook_resid_pre"),
    (HookPoint::Ln1Scale, "ln1.hook_scale"),
    (HookPoint::Ln1Normalized, "ln1.hook_normalized"),
    (HookPoint::AttnQ, "attn.hook_q"),
    (HookPoint::AttnK, "attn.hook_k"),
    (HookPoint::AttnV, "attn.hook_v"),
    (HookPoint::AttnPattern, "attn.hook_pattern"),
    (HookPoint::AttnZ, "attn.hook_z"),
    (HookPoint::Ln1PostScale, "ln1_post.hook_scale"),
    (HookPoint::AttnOut, "hook_attn_out"),
    (HookPoint::ResidMid, "hook_resid_mid"),
    (HookPoint::Ln2Scale, "ln2.hook_scale"),
    (HookPoint::Ln2Normalized, "ln2.hook_normalized"),
    (HookPoint::MlpPost, "mlp.hook_post"),
    (HookPoint::Ln2PostScale, "ln2_post.hook_scale"),
    (HookPoint::MlpOut, "hook_mlp_out"),
    (HookPoint::ResidPost, "hook_resid_post"),
];

impl HookPoint {
    /// The block this hook belongs to (`None` for the `ln_final` hooks).
    pub fn layer(self) -> Option<usize> {
        use HookPoint::*;
        match self {
            ResidPre(l) | Ln1Scale(l) | Ln1Normalized(l) | AttnQ(l) | AttnK(l) | AttnV(l)
            | AttnPattern(l) | AttnZ(l) | Ln1PostScale(l) | AttnOut(l) | ResidMid(l)
            | Ln2Scale(l) | Ln2Normalized(l) | MlpPost(l) | Ln2PostScale(l) | MlpOut(l)
            | ResidPost(l) => Some(l),
            LnFinalScale | LnFinal => None,
        }
    }

    /// Index of this hook's kind in [`BLOCK_HOOKS`] (`None` for the `ln_final` hooks).
    fn block_index(self) -> Option<usize> {
        let l = self.layer()?;
        BLOCK_HOOKS.iter().position(|(make, _)| make(l) == self)
    }

    /// Position in forward-pass order: a hook with a larger key is computed later.
    pub fn depth(self) -> (usize, u8) {
        match (self, self.layer(), self.block_index()) {
            (_, Some(l), Some(i)) => (l, i as u8),
            (HookPoint::LnFinalScale, ..) => (usize::MAX, 0),
            _ => (usize::MAX, 1),
        }
    }

    /// The residual-stream hooks (`[batch, seq, d_model]`) of a model with `n_layers` blocks, in
    /// forward-pass order: the five per block and `ln_final.hook_normalized`. The other hook
    /// points are listed by [`HookPoint::all_for`].
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

    /// Every hook point of a model with this configuration, in forward-pass order (the Gemma-only
    /// post-norm hooks only for Gemma 3).
    pub fn all_for(cfg: &LlamaConfig) -> Vec<HookPoint> {
        let mut all = Vec::with_capacity(BLOCK_HOOKS.len() * cfg.n_layers + 2);
        for l in 0..cfg.n_layers {
            all.extend(BLOCK_HOOKS.iter().map(|(make, _)| make(l)));
        }
        all.extend([HookPoint::LnFinalScale, HookPoint::LnFinal]);
        all.retain(|p| p.exists_in(cfg.family));
        all
    }

    /// Whether the family computes this hook (the post-norm hooks are Gemma 3's).
    pub fn exists_in(self, family: Family) -> bool {
        !matches!(
            self,
            HookPoint::Ln1PostScale(_) | HookPoint::Ln2PostScale(_)
        ) || family == Family::Gemma3
    }

    /// The layout of this hook's tensor in a model with configuration `cfg`.
    pub fn shape(self, cfg: &LlamaConfig) -> HookShape {
        use HookPoint::*;
        let rows = |width| HookShape::Rows { width };
        let heads = |n_heads| HookShape::Heads {
            n_heads,
            d_head: cfg.d_head,
        };
        match self {
            Ln1Scale(_) | Ln2Scale(_) | Ln1PostScale(_) | Ln2PostScale(_) | LnFinalScale => rows(1),
            AttnQ(_) | AttnZ(_) => heads(cfg.n_heads),
            AttnK(_) | AttnV(_) => heads(cfg.n_kv_heads),
            AttnPattern(_) => HookShape::Pattern {
                n_heads: cfg.n_heads,
            },
            MlpPost(_) => rows(cfg.d_mlp),
            ResidPre(_) | Ln1Normalized(_) | AttnOut(_) | ResidMid(_) | Ln2Normalized(_)
            | MlpOut(_) | ResidPost(_) | LnFinal => rows(cfg.d_model),
        }
    }

    /// Whether the hook's tensor has one row per token (all but `attn.hook_pattern`).
    pub fn is_per_token(self) -> bool {
        !matches!(self, HookPoint::AttnPattern(_))
    }

    /// Values per token (`d_model`, `d_mlp`, `heads · d_head` or 1), `None` for
    /// `attn.hook_pattern`, which is not one row per token.
    pub fn width(self, cfg: &LlamaConfig) -> Option<usize> {
        self.shape(cfg).row_width()
    }

    /// Like [`HookPoint::width`], but a hook without per-token rows is an error that says so
    /// (for consumers that store rows: harvest, training, encoding).
    pub fn row_width(self, cfg: &LlamaConfig) -> Result<usize> {
        self.width(cfg).ok_or_else(|| LmError::NotPerToken {
            hook: self.to_string(),
        })
    }

    /// Checks that the hook's block exists in a model with `n_layers` blocks.
    pub fn validate(self, n_layers: usize) -> Result<Self> {
        match self.layer() {
            Some(l) if l >= n_layers => Err(LmError::LayerOutOfRange {
                hook: self.to_string(),
                n_layers,
            }),
            _ => Ok(self),
        }
    }

    /// Checks the block index and that the model's family computes this hook.
    pub fn validate_for(self, cfg: &LlamaConfig) -> Result<Self> {
        self.validate(cfg.n_layers)?;
        if !self.exists_in(cfg.family) {
            return Err(LmError::HookNotInFamily {
                hook: self.to_string(),
                architecture: cfg.architecture.clone(),
            });
        }
        Ok(self)
    }

    /// Parses `name` and checks it against a model with `n_layers` blocks.
    pub fn parse_for(name: &str, n_layers: usize) -> Result<Self> {
        name.parse::<HookPoint>()?.validate(n_layers)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.layer(), self.block_index()) {
            (Some(l), Some(i)) => write!(f, "blocks.{l}.{}", BLOCK_HOOKS[i].1),
            _ if *self == HookPoint::LnFinalScale => f.write_str("ln_final.hook_scale"),
            _ => f.write_str("ln_final.hook_normalized"),
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
        match name {
            "ln_final.hook_normalized" => return Ok(HookPoint::LnFinal),
            "ln_final.hook_scale" => return Ok(HookPoint::LnFinalScale),
            _ => {}
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, kind) = rest.split_once('.').ok_or_else(unknown)?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let layer: usize = layer.parse().map_err(|_| unknown())?;
        BLOCK_HOOKS
            .iter()
            .find(|(_, n)| *n == kind)
            .map(|(make, _)| make(layer))
            .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{tiny_config, tiny_gemma_config};

    #[test]
    fn names_round_trip() {
        for p in HookPoint::all(30) {
            let s = p.to_string();
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
        }
        assert_eq!(HookPoint::all(30).len(), 151);
        let gemma = tiny_gemma_config();
        let every = HookPoint::all_for(&gemma);
        assert_eq!(every.len(), 17 * gemma.n_layers + 2);
        for p in every {
            let s = p.to_string();
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
        }
        assert_eq!(HookPoint::all_for(&tiny_config(true)).len(), 15 * 2 + 2);
    }

    #[test]
    fn transformer_lens_spellings() {
        for (name, p) in [
            ("blocks.2.ln1.hook_normalized", HookPoint::Ln1Normalized(2)),
            ("blocks.2.ln2.hook_scale", HookPoint::Ln2Scale(2)),
            ("blocks.0.mlp.hook_post", HookPoint::MlpPost(0)),
            ("blocks.11.attn.hook_pattern", HookPoint::AttnPattern(11)),
            ("blocks.1.attn.hook_z", HookPoint::AttnZ(1)),
            ("blocks.1.attn.hook_k", HookPoint::AttnK(1)),
            ("blocks.4.ln2_post.hook_scale", HookPoint::Ln2PostScale(4)),
            ("ln_final.hook_scale", HookPoint::LnFinalScale),
        ] {
            assert_eq!(name.parse::<HookPoint>().unwrap(), p);
            assert_eq!(p.to_string(), name);
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in [
            "",
            "blocks.x.hook_resid_pre",
            "blocks..hook_resid_pre",
            "blocks.3.hook_resid",
            "blocks.+3.hook_resid_pre",
            "blocks.3.attn.hook_zz",
            "blocks.3.ln3.hook_scale",
            "ln_final",
            "hook_resid_pre",
        ] {
            let err = bad.parse::<HookPoint>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("hook_resid_pre"), "{msg}");
            assert!(msg.contains("attn.hook_pattern"), "{msg}");
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
    fn post_norm_hooks_are_gemma_only() {
        let llama = tiny_config(true);
        let err = HookPoint::Ln1PostScale(0).validate_for(&llama).unwrap_err();
        assert!(err.to_string().contains("gemma3"), "{err}");
        assert!(HookPoint::Ln1PostScale(0)
            .validate_for(&tiny_gemma_config())
            .is_ok());
    }

    #[test]
    fn shapes_and_widths() {
        let cfg = tiny_gemma_config(); // d_model 256, d_mlp 512, 4 heads, 1 KV head of 64
        assert_eq!(HookPoint::MlpPost(0).width(&cfg), Some(512));
        assert_eq!(HookPoint::AttnZ(0).width(&cfg), Some(4 * 64));
        assert_eq!(HookPoint::AttnK(0).shape(&cfg).dims(2, 5, 5), [2, 5, 1, 64]);
        assert_eq!(HookPoint::Ln2Scale(1).width(&cfg), Some(1));
        assert_eq!(HookPoint::AttnPattern(1).width(&cfg), None);
        assert_eq!(
            HookPoint::AttnPattern(1).shape(&cfg).dims(2, 3, 7),
            [2, 4, 3, 7]
        );
        let err = HookPoint::AttnPattern(1).row_width(&cfg).unwrap_err();
        assert!(err.to_string().contains("not one row per token"), "{err}");
    }

    #[test]
    fn depth_order_matches_forward_order() {
        let all = HookPoint::all_for(&tiny_gemma_config());
        let mut sorted = all.clone();
        sorted.sort_by_key(|p| p.depth());
        assert_eq!(all, sorted);
        let resid = HookPoint::all(3);
        let mut sorted = resid.clone();
        sorted.sort_by_key(|p| p.depth());
        assert_eq!(resid, sorted);
    }
}
