//! The nested dictionary sizes of a Matryoshka SAE (`--groups 128,512,2048,9216`, SAELens'
//! `matryoshka_widths`): cumulative, strictly increasing, the last one `d_sae`.
//!
//! A fixed-capacity `Copy` list, so that [`crate::Architecture`] stays `Copy`; serialised as a JSON array.

use serde::{Deserialize, Serialize};

use crate::{Result, SaeError};

/// Which residual a Matryoshka SAE's dead latents learn to reconstruct under AuxK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatryoshkaAux {
    /// The whole dictionary's residual, as TopK's AuxK (SAELens' default).
    #[default]
    Whole,
    /// Per level: the dead latents of level `j` (latents `w_{j-1}..w_j`) reconstruct the residual of
    /// prefix `j`, each level with its own `k_aux` and scale (SAELens' `use_matryoshka_aux_loss`). An
    /// inner level's residual is large, so its dead latents get a signal even when the full SAE
    /// already reconstructs well.
    PerLevel,
}

impl std::fmt::Display for MatryoshkaAux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Whole => "whole",
            Self::PerLevel => "per-level",
        })
    }
}

/// The most nested levels a Matryoshka SAE may have.
pub const MAX_LEVELS: usize = 16;

/// Cumulative prefix widths `w_1 < w_2 < … < w_G = d_sae`: prefix `j` is latents `0..w_j`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<usize>", into = "Vec<usize>")]
pub struct MatryoshkaWidths {
    len: u8,
    widths: [u32; MAX_LEVELS],
}

impl MatryoshkaWidths {
    /// Checks `widths`: 1 to [`MAX_LEVELS`] positive, strictly increasing values below 2³².
    pub fn new(widths: &[usize]) -> Result<Self> {
        let bad = |why: String| {
            Err(SaeError::invalid(
                "--groups",
                format!("{widths:?}"),
                format!(
                    "{why}; give cumulative widths such as 128,512,2048,9216 (the last = d_sae)"
                ),
            ))
        };
        if widths.is_empty() || widths.len() > MAX_LEVELS {
            return bad(format!("it needs 1 to {MAX_LEVELS} widths"));
        }
        let mut out = [0u32; MAX_LEVELS];
        let mut prev = 0usize;
        for (slot, &w) in out.iter_mut().zip(widths) {
            if w <= prev {
                return bad("the widths must be positive and strictly increasing".into());
            }
            let Ok(w32) = u32::try_from(w) else {
                return bad(format!("{w} is too large"));
            };
            *slot = w32;
            prev = w;
        }
        Ok(Self {
            len: widths.len() as u8,
            widths: out,
        })
    }

    /// The widths, ascending.
    pub fn as_slice(&self) -> &[u32] {
        &self.widths[..self.len as usize]
    }

    /// Number of nested levels.
    pub fn levels(&self) -> usize {
        self.len as usize
    }

    /// The largest width (must equal `d_sae`).
    pub fn last(&self) -> usize {
        self.as_slice().last().map_or(0, |&w| w as usize)
    }

    /// `[start, end)` of level `j`'s own latents (`w_{j−1}..w_j`, `w_0 = 0`).
    pub fn level_range(&self, j: usize) -> std::ops::Range<usize> {
        let s = self.as_slice();
        let start = if j == 0 { 0 } else { s[j - 1] as usize };
        start..s[j] as usize
    }

    /// The level whose own latents include latent `i` (the last level for `i ≥ d_sae`).
    pub fn level_of(&self, i: usize) -> usize {
        self.as_slice()
            .iter()
            .position(|&w| i < w as usize)
            .unwrap_or(self.levels().saturating_sub(1))
    }

    /// Checks that the last width is `d_sae`.
    pub fn check_d_sae(&self, d_sae: usize) -> Result<()> {
        if self.last() != d_sae {
            return Err(SaeError::invalid(
                "--groups",
                self,
                format!(
                    "the last width must equal d_sae = {d_sae} (expansion × d_in); end the list with {d_sae}"
                ),
            ));
        }
        Ok(())
    }
}

impl TryFrom<Vec<usize>> for MatryoshkaWidths {
    type Error = SaeError;

    fn try_from(v: Vec<usize>) -> Result<Self> {
        Self::new(&v)
    }
}

impl From<MatryoshkaWidths> for Vec<usize> {
    fn from(w: MatryoshkaWidths) -> Self {
        w.as_slice().iter().map(|&v| v as usize).collect()
    }
}

impl std::fmt::Debug for MatryoshkaWidths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl std::fmt::Display for MatryoshkaWidths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.as_slice().iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl std::str::FromStr for MatryoshkaWidths {
    type Err = SaeError;

    /// Parses `128,512,2048,9216`.
    fn from_str(s: &str) -> Result<Self> {
        let widths = s
            .split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<usize>, _>>()
            .map_err(|e| {
                SaeError::invalid(
                    "--groups",
                    s,
                    format!("{e}: give comma-separated integers such as 128,512,2048,9216"),
                )
            })?;
        Self::new(&widths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validates_and_serialises_as_a_list() {
        let w: MatryoshkaWidths = "128, 512,2048".parse().unwrap();
        assert_eq!(w.as_slice(), &[128, 512, 2048]);
        assert_eq!(w.level_range(1), 128..512);
        assert_eq!((w.level_of(0), w.level_of(511), w.level_of(512)), (0, 1, 2));
        assert_eq!(serde_json::to_string(&w).unwrap(), "[128,512,2048]");
        let back: MatryoshkaWidths = serde_json::from_str("[128,512,2048]").unwrap();
        assert_eq!(back, w);
        assert!(w.check_d_sae(2048).is_ok() && w.check_d_sae(4096).is_err());
        for bad in ["", "0,4", "8,4", "4,4", "a,b"] {
            assert!(bad.parse::<MatryoshkaWidths>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<MatryoshkaWidths>("[3,2]").is_err());
        assert!(MatryoshkaWidths::new(&(1..=17).collect::<Vec<_>>()).is_err());
    }
}
