//! The SAE's configuration: its architecture (with that architecture's hyper-parameters), sizes and
//! provenance ([`SaeMetadata`], SAELens' `metadata`), checked by [`SaeConfig::validate`].

use serde::{Deserialize, Serialize};

use crate::transcoder::TranscoderShape;
use crate::{Result, SaeError};

/// The SAE architecture and its architecture-specific hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Architecture {
    /// Anthropic April-2024 recipe: `f = ReLU(W_enc x + b_enc)`, loss `‖x̂−x‖² + λ Σ f_i ‖d_i‖`, free decoder.
    Relu,
    /// Towards Monosemanticity: unit-norm decoder directions, plain L1, dead-latent resampling.
    ReluUnit,
    /// Keep the `k` largest pre-activations per row (Gao et al. 2024), AuxK on dead latents.
    #[serde(rename = "topk")]
    TopK {
        /// Active latents per row.
        k: usize,
    },
    /// Keep the `k × batch` largest pre-activations across the batch (Bussmann et al. 2024); inference
    /// uses the learned `threshold` (a JumpReLU).
    #[serde(rename = "batchtopk")]
    BatchTopK {
        /// Mean active latents per row.
        k: usize,
    },
    /// `f = z·H(z − θ)`, `θ ≥ 0` trained directly, L0 penalty with straight-through estimators.
    #[serde(rename = "jumprelu")]
    JumpRelu,
    /// Gated SAE (Rajamanoharan et al. 2024): gate and magnitude paths sharing `W_enc`.
    Gated,
    /// Matryoshka BatchTopK (Bussmann et al. 2025; Nabeshima 2024): BatchTopK over the whole dictionary,
    /// the reconstruction loss summed over the nested prefixes `0..w_j`; inference as batchtopk.
    #[serde(rename = "matryoshka")]
    Matryoshka {
        /// Mean active latents per row.
        k: usize,
        /// Cumulative prefix widths, the last = `d_sae`.
        groups: crate::arch::MatryoshkaWidths,
    },
}

impl Architecture {
    /// The name used on the command line (`--arch`) and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::ReluUnit => "relu-unit",
            Self::TopK { .. } => "topk",
            Self::BatchTopK { .. } => "batchtopk",
            Self::JumpRelu => "jumprelu",
            Self::Gated => "gated",
            Self::Matryoshka { .. } => "matryoshka",
        }
    }

    /// Whether the decoder directions are kept at unit norm (renormalised after each step, gradient
    /// component along each direction removed before it).
    pub fn unit_norm_decoder(&self) -> bool {
        matches!(
            self,
            Self::ReluUnit | Self::TopK { .. } | Self::BatchTopK { .. } | Self::Matryoshka { .. }
        )
    }

    /// Whether inference compares pre-activations against a per-latent `threshold` (JumpReLU's trained
    /// one, BatchTopK's and Matryoshka's learned estimate).
    pub fn has_threshold(&self) -> bool {
        matches!(
            self,
            Self::JumpRelu | Self::BatchTopK { .. } | Self::Matryoshka { .. }
        )
    }

    /// `k` for TopK / BatchTopK.
    pub fn k(&self) -> Option<usize> {
        match self {
            Self::TopK { k } | Self::BatchTopK { k } | Self::Matryoshka { k, .. } => Some(*k),
            _ => None,
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.k(), self) {
            (Some(k), Self::Matryoshka { groups, .. }) => {
                write!(f, "{}(k={k}, groups={groups})", self.name())
            }
            (Some(k), _) => write!(f, "{}(k={k})", self.name()),
            (None, _) => f.write_str(self.name()),
        }
    }
}

/// Where the SAE's inputs came from (SAELens' `metadata` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaeMetadata {
    /// Model the activations were taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Hook point (TransformerLens name, e.g. `blocks.3.hook_resid_post`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_name: Option<String>,
    /// Tokens per context during harvesting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<usize>,
    /// A transcoder's output hook (the activation it predicts, e.g. `blocks.3.hook_mlp_out`); SAELens 6.54
    /// keeps it under the same key in `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_name_out: Option<String>,
    /// Any other keys, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An SAE's configuration (validated: build with [`SaeConfig::new`] or [`SaeConfig::transcoder`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Input dimension.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Architecture.
    pub architecture: Architecture,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Input scaling applied during training, already folded into saved weights (`None` = no scaling).
    pub normalization_factor: Option<f32>,
    /// Provenance.
    pub metadata: SaeMetadata,
    /// `Some` for a transcoder (output width and skip path); `None` for an SAE (output = input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoder: Option<TranscoderShape>,
}

impl SaeConfig {
    /// A configuration with `apply_b_dec_to_input = true`, no normalisation and empty metadata.
    pub fn new(d_in: usize, d_sae: usize, architecture: Architecture) -> Result<Self> {
        let cfg = Self {
            d_in,
            d_sae,
            architecture,
            apply_b_dec_to_input: true,
            normalization_factor: None,
            metadata: SaeMetadata::default(),
            transcoder: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks sizes and hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        if self.d_in == 0 || self.d_sae == 0 {
            return Err(SaeError::invalid(
                "d_in × d_sae",
                format!("{} × {}", self.d_in, self.d_sae),
                "both must be positive (expansion factor 0?)",
            ));
        }
        if u32::try_from(self.d_sae).is_err() {
            return Err(SaeError::invalid(
                "d_sae",
                self.d_sae,
                format!("it is too large (max {})", u32::MAX),
            ));
        }
        let weight_bytes = self
            .d_in
            .checked_mul(self.d_sae)
            .and_then(|n| n.checked_mul(4))
            .filter(|&b| b <= isize::MAX as usize);
        if weight_bytes.is_none() {
            return Err(SaeError::invalid(
                "d_in × d_sae",
                format!("{} × {}", self.d_in, self.d_sae),
                "so many weights cannot be held in memory (the byte size overflows): a corrupt \
                 cfg.json or checkpoint?",
            ));
        }
        if let Some(t) = self.transcoder {
            self.validate_transcoder(t)?;
        }
        if let Some(k) = self.architecture.k() {
            if k == 0 || k >= self.d_sae {
                return Err(SaeError::invalid(
                    "--k",
                    k,
                    format!(
                        "k = {k} must satisfy 0 < k < d_sae = {}; lower --k or raise --expansion",
                        self.d_sae
                    ),
                ));
            }
        }
        if let Architecture::Matryoshka { groups, .. } = self.architecture {
            groups.check_d_sae(self.d_sae)?;
        }
        Ok(())
    }
}
