//! `--arch`, `--k`, `--expansion`, `--groups`: the shape of the SAE to train.

use anyhow::bail;
use clap::ValueEnum;
use zephyra_sae::{Architecture, MatryoshkaWidths};

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
    /// Matryoshka BatchTopK: nested prefixes (--groups), saved as JumpReLU (Bussmann et al. 2025).
    Matryoshka,
}

impl Arch {
    /// The SAE architecture (with `k` for topk/batchtopk/matryoshka; matryoshka gets
    /// [`default_groups`] of `d_sae`).
    pub fn with_k(self, k: usize, d_sae: usize) -> Architecture {
        match self {
            Arch::Relu => Architecture::Relu,
            Arch::ReluUnit => Architecture::ReluUnit,
            Arch::Topk => Architecture::TopK { k },
            Arch::Batchtopk => Architecture::BatchTopK { k },
            Arch::Jumprelu => Architecture::JumpRelu,
            Arch::Gated => Architecture::Gated,
            Arch::Matryoshka => Architecture::Matryoshka {
                k,
                groups: default_groups(d_sae),
            },
        }
    }
}

/// Default `--groups` for `d_sae` latents: `d_sae/64, d_sae/16, d_sae/4, d_sae` (the ×4 steps of Bussmann
/// et al. 2025's widths), dropping repeats and zeros for small dictionaries.
pub fn default_groups(d_sae: usize) -> MatryoshkaWidths {
    let mut widths: Vec<usize> = [64, 16, 4, 1].iter().map(|q| d_sae / q).collect();
    widths.retain(|&w| w > 0);
    widths.dedup();
    MatryoshkaWidths::new(&widths)
        .unwrap_or_else(|_| MatryoshkaWidths::new(&[d_sae.max(1)]).expect("one positive width"))
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
    /// Matryoshka: cumulative prefix widths, the last = d_sae, e.g. 128,512,2048,9216 (SAELens'
    /// matryoshka_widths) [default: d_sae/64, d_sae/16, d_sae/4, d_sae].
    #[arg(long, value_name = "W1,W2,…")]
    pub groups: Option<MatryoshkaWidths>,
}

impl ArchArgs {
    /// The architecture of a `d_sae`-latent SAE, with the defaults for unset flags.
    pub fn architecture(&self, d_sae: usize) -> anyhow::Result<Architecture> {
        let arch = self
            .arch
            .unwrap_or(DEFAULT_ARCH)
            .with_k(self.k.unwrap_or(DEFAULT_K), d_sae);
        self.with_groups(arch)
    }

    /// `arch` with `--groups` applied (an error for an architecture without groups).
    pub fn with_groups(&self, arch: Architecture) -> anyhow::Result<Architecture> {
        match (arch, self.groups) {
            (Architecture::Matryoshka { k, .. }, Some(groups)) => {
                Ok(Architecture::Matryoshka { k, groups })
            }
            (_, Some(_)) => bail!(
                "--groups sets the nested prefixes of --arch matryoshka; {} has none: drop --groups",
                arch.name()
            ),
            (arch, None) => Ok(arch),
        }
    }

    /// `--expansion` or its default.
    pub fn expansion(&self) -> usize {
        self.expansion.unwrap_or(DEFAULT_EXPANSION)
    }
}
