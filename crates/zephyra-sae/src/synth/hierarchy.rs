//! The feature hierarchy of the synthetic data: a forest of trees over the lowest feature indices (the most
//! frequent features are the parents), built breadth first. A child can fire only when its parent fires;
//! the children of an *exclusive* parent never fire together (when several would, one is kept uniformly at
//! random). Design after SynthSAEBench (SAELens 6.54 `sae_lens.synthetic.hierarchy`, MIT); written anew.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SaeError};

/// The shape of the forest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HierarchyConfig {
    /// Trees (root features).
    pub roots: usize,
    /// Children of every non-leaf node.
    pub branching: usize,
    /// Levels below the roots (1: roots with leaf children).
    pub depth: usize,
    /// Fraction of the parents whose children are mutually exclusive.
    pub exclusive_portion: f64,
}

impl Default for HierarchyConfig {
    /// 128 trees of 4 children over 2 levels (2,688 features), every parent exclusive.
    fn default() -> Self {
        Self {
            roots: 128,
            branching: 4,
            depth: 2,
            exclusive_portion: 1.0,
        }
    }
}

impl HierarchyConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.roots == 0 {
            return Err(SaeError::invalid("--roots", 0, "use at least 1 tree"));
        }
        if self.branching < 2 {
            return Err(SaeError::invalid(
                "--branching",
                self.branching,
                "a parent needs at least 2 children",
            ));
        }
        if self.depth == 0 {
            return Err(SaeError::invalid("--depth", 0, "use at least 1 level"));
        }
        if !(0.0..=1.0).contains(&self.exclusive_portion) {
            return Err(SaeError::invalid(
                "--exclusive-portion",
                self.exclusive_portion,
                "must lie in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// One parent and its children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    /// The parent's feature index.
    pub feature: u32,
    /// Its children's feature indices.
    pub children: Vec<u32>,
    /// Whether at most one child fires at a time.
    pub exclusive: bool,
}

/// The forest: its parents in breadth-first order (a parent comes after its own parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Hierarchy {
    /// Parents, breadth first.
    pub parents: Vec<Parent>,
}

impl Hierarchy {
    /// Builds the forest over features `0..n_features` (it stops when they run out).
    pub fn generate<R: Rng + ?Sized>(
        cfg: &HierarchyConfig,
        n_features: usize,
        rng: &mut R,
    ) -> Self {
        let mut next = 0usize;
        let mut level: Vec<u32> = Vec::new();
        while level.len() < cfg.roots && next < n_features {
            level.push(next as u32);
            next += 1;
        }
        let mut parents = Vec::new();
        for _ in 0..cfg.depth {
            let mut below = Vec::new();
            for &feature in &level {
                let take = cfg.branching.min(n_features - next);
                if take == 0 {
                    break;
                }
                let children: Vec<u32> = (next..next + take).map(|i| i as u32).collect();
                next += take;
                below.extend_from_slice(&children);
                parents.push(Parent {
                    feature,
                    children,
                    exclusive: false,
                });
            }
            level = below;
        }
        // Mark the exclusive portion of the parents with ≥ 2 children, chosen at random.
        let mut eligible: Vec<usize> = (0..parents.len())
            .filter(|&i| parents[i].children.len() >= 2)
            .collect();
        let n_exclusive = (eligible.len() as f64 * cfg.exclusive_portion) as usize;
        for i in 0..n_exclusive {
            let j = rng.random_range(i..eligible.len());
            eligible.swap(i, j);
            parents[eligible[i]].exclusive = true;
        }
        Self { parents }
    }

    /// The parent of every feature (`None` for roots and features outside the forest).
    pub fn parent_of(&self, n_features: usize) -> Vec<Option<u32>> {
        let mut out = vec![None; n_features];
        for p in &self.parents {
            for &c in &p.children {
                if let Some(slot) = out.get_mut(c as usize) {
                    *slot = Some(p.feature);
                }
            }
        }
        out
    }

    /// Applies the rules to one row of feature values (0 = silent), top down.
    pub fn apply<R: Rng + ?Sized>(&self, values: &mut [f32], rng: &mut R, scratch: &mut Vec<u32>) {
        for p in &self.parents {
            if values[p.feature as usize] <= 0.0 {
                for &c in &p.children {
                    values[c as usize] = 0.0;
                }
                continue;
            }
            if !p.exclusive {
                continue;
            }
            scratch.clear();
            scratch.extend(
                p.children
                    .iter()
                    .copied()
                    .filter(|&c| values[c as usize] > 0.0),
            );
            if scratch.len() > 1 {
                let keep = scratch[rng.random_range(0..scratch.len())];
                for &c in scratch.iter() {
                    if c != keep {
                        values[c as usize] = 0.0;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn forest() -> Hierarchy {
        let cfg = HierarchyConfig {
            roots: 2,
            branching: 3,
            depth: 2,
            exclusive_portion: 1.0,
        };
        Hierarchy::generate(&cfg, 100, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
    }

    #[test]
    fn breadth_first_indices() {
        let h = forest();
        // roots 0,1; their children 2..=7; grandchildren 8..=25.
        assert_eq!(h.parents.len(), 2 + 6);
        assert_eq!(h.parents[0].children, vec![2, 3, 4]);
        assert_eq!(h.parents[1].children, vec![5, 6, 7]);
        assert_eq!(h.parents[2].feature, 2);
        assert_eq!(h.parents[7].children, vec![23, 24, 25]);
        assert!(h.parents.iter().all(|p| p.exclusive));
        let parent = h.parent_of(30);
        assert_eq!(parent[0], None);
        assert_eq!(parent[9], Some(2));
        assert_eq!(parent[26], None);
    }

    #[test]
    fn children_need_their_parent_and_exclude_each_other() {
        let h = forest();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut scratch = Vec::new();
        // Root 0 silent: its whole tree goes silent; root 1 on with all three children on: one stays.
        let mut v = vec![1.0f32; 26];
        v[0] = 0.0;
        h.apply(&mut v, &mut rng, &mut scratch);
        assert!((2..=4).all(|c| v[c] == 0.0));
        assert!((8..=16).all(|c| v[c] == 0.0), "grandchildren of 0: {v:?}");
        assert_eq!((5..=7).filter(|&c| v[c] > 0.0).count(), 1);
        // Each kept grandchild has a live parent, and at most one per parent.
        for p in &h.parents[2..] {
            let on = p.children.iter().filter(|&&c| v[c as usize] > 0.0).count();
            assert!(on <= usize::from(v[p.feature as usize] > 0.0));
        }
    }

    #[test]
    fn exclusive_portion_counts() {
        let cfg = HierarchyConfig {
            roots: 10,
            branching: 2,
            depth: 1,
            exclusive_portion: 0.3,
        };
        let h = Hierarchy::generate(&cfg, 100, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
        assert_eq!(h.parents.iter().filter(|p| p.exclusive).count(), 3);
    }
}
