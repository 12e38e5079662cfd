//! `--arch`, `--k`, `--expansion`: the shape of the SAE to train.

use clap::ValueEnum;
use zephyra_sae::Architecture;

/// `--arch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// ReLU, decoder-norm-weighted L1, free decoder (Anthropic April 2024; the seed's SAE).
    Relu,
    /// ReLU, unit-norm decoder, plain L1, resampling (Towards Monosemanticity).
    ReluUnit,
    /// TopK with AuxK (Gao et al. 2024).
    Topk,
    /// BatchTopK, saved as JumpReLU (Bussmann et al. 2024).
    Batchtopk,
    /// JumpReLU with an L0 penalty (Rajamanoharan et al. 2024).
    Jumprelu,
    /// Gated (Rajamanoharan et al. 2024).
    Gated,
}

impl Arch {
    /// The SAE architecture (with `k` for topk/batchtopk).
    pub fn with_k(self, k: usize) -> Architecture {
        match self {
            Arch::Relu => Architecture::Relu,
            Arch::ReluUnit => Architecture::ReluUnit,
            Arch::Topk => Architecture::TopK { k },
            Arch::Batchtopk => Architecture::BatchTopK { k },
            Arch::Jumprelu => Architecture::JumpRelu,
            Arch::Gated => Architecture::Gated,
        }
    }
}

/// Default `--arch`.
pub const DEFAULT_ARCH: Arch = Arch::Topk;
/// Default `--k`.
pub const DEFAULT_K: usize = 32;
/// Default `--expansion`.
pub const DEFAULT_EXPANSION: usize = 16;

/// The SAE's architecture and size. Unset flags take the defaults on a new run and the saved values on a
/// resume.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchArgs {
    /// Architecture [default: topk].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Active latents per row (topk, batchtopk) [default: 32].
    #[arg(long)]
    pub k: Option<usize>,
    /// d_sae = expansion × d_in [default: 16].
    #[arg(long)]
    pub expansion: Option<usize>,
}

impl ArchArgs {
    /// The architecture, with the defaults for unset flags.
    pub fn architecture(&self) -> Architecture {
        self.arch
            .unwrap_or(DEFAULT_ARCH)
            .with_k(self.k.unwrap_or(DEFAULT_K))
    }

    /// `--expansion` or its default.
    pub fn expansion(&self) -> usize {
        self.expansion.unwrap_or(DEFAULT_EXPANSION)
    }
}
