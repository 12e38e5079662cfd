//! Matching learned latents to true features: absolute cosines between decoder rows and true directions,
//! and the minimum-cost one-to-one assignment (the Hungarian method in its shortest-augmenting-path form
//! with row and column potentials, Kuhn 1955 / Munkres 1957; O(n²·m) for `n ≤ m`) that SAELens' MCC takes
//! from `scipy.optimize.linear_sum_assignment`.

use zephyra_sae::kernels::{matmul, MatRef};

use crate::error::{AnalysisError, Result};

/// `|cos|` between every row of `a` (`[n_a, d]`) and every row of `b` (`[n_b, d]`), `[n_a, n_b]` row-major.
/// A zero row has cosine 0 with everything.
pub fn abs_cosines(a: &[f32], n_a: usize, b: &[f32], n_b: usize, d: usize) -> Result<Vec<f32>> {
    for (what, m, n) in [("first matrix", a, n_a), ("second matrix", b, n_b)] {
        if m.len() != n * d {
            return Err(AnalysisError::ShapeMismatch {
                what,
                expected: n * d,
                got: m.len(),
            });
        }
    }
    let unit = |m: &[f32]| -> Vec<f32> {
        let mut out = m.to_vec();
        for row in out.chunks_exact_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let s = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            row.iter_mut().for_each(|v| *v *= s);
        }
        out
    };
    let (ua, ub) = (unit(a), unit(b));
    let mut out = vec![0f32; n_a * n_b];
    matmul(
        &mut out,
        MatRef::row_major(&ua, n_a, d),
        MatRef::row_major(&ub, n_b, d).t(),
        false,
        1.0,
    );
    for v in &mut out {
        *v = v.abs();
        if !v.is_finite() {
            return Err(AnalysisError::NotFinite {
                what: "a cosine between decoder rows and true features",
                value: f64::from(*v),
            });
        }
    }
    Ok(out)
}

/// The column assigned to each row of the `n × m` cost matrix (`n ≤ m`) that minimises the total cost.
pub fn min_cost_assignment(cost: &[f64], n: usize, m: usize) -> Vec<usize> {
    assert!(n <= m && cost.len() == n * m, "min_cost_assignment: n ≤ m");
    // 1-based rows and columns; column 0 is the virtual start of each augmenting search.
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; m + 1];
    let mut row_of = vec![0usize; m + 1];
    let mut came_from = vec![0usize; m + 1];
    let mut slack = vec![0f64; m + 1];
    let mut visited = vec![false; m + 1];
    for i in 1..=n {
        row_of[0] = i;
        slack.fill(f64::INFINITY);
        visited.fill(false);
        let mut col = 0usize;
        loop {
            visited[col] = true;
            let r = row_of[col];
            let cost_row = &cost[(r - 1) * m..r * m];
            let (mut delta, mut next) = (f64::INFINITY, 0usize);
            for j in 1..=m {
                if visited[j] {
                    continue;
                }
                let reduced = cost_row[j - 1] - u[r] - v[j];
                if reduced < slack[j] {
                    slack[j] = reduced;
                    came_from[j] = col;
                }
                if slack[j] < delta {
                    delta = slack[j];
                    next = j;
                }
            }
            for j in 0..=m {
                if visited[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    slack[j] -= delta;
                }
            }
            col = next;
            if row_of[col] == 0 {
                break;
            }
        }
        while col != 0 {
            let prev = came_from[col];
            row_of[col] = row_of[prev];
            col = prev;
        }
    }
    let mut out = vec![0usize; n];
    for j in 1..=m {
        if row_of[j] != 0 {
            out[row_of[j] - 1] = j - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The best total over every injective map of rows to columns, by enumeration.
    fn brute(cost: &[f64], n: usize, m: usize) -> f64 {
        fn go(cost: &[f64], n: usize, m: usize, i: usize, used: &mut Vec<bool>) -> f64 {
            if i == n {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..m {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[i * m + j] + go(cost, n, m, i + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(cost, n, m, 0, &mut vec![false; m])
    }

    #[test]
    fn assignment_is_optimal_against_enumeration() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for trial in 0..60 {
            let n = 1 + trial % 6;
            let m = n + trial % 3;
            let cost: Vec<f64> = (0..n * m).map(|_| rng.random::<f64>()).collect();
            let a = min_cost_assignment(&cost, n, m);
            let mut seen = a.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), n, "not one-to-one: {a:?}");
            let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i * m + j]).sum();
            assert!((total - brute(&cost, n, m)).abs() < 1e-12, "trial {trial}");
        }
    }

    #[test]
    fn greedy_is_not_enough() {
        // Row 0 prefers column 0 (1.0 vs 0.9), but taking it forces row 1 onto a bad column.
        let cost = [0.0, 0.1, 0.2, 1.0];
        assert_eq!(min_cost_assignment(&cost, 2, 2), vec![1, 0]);
    }

    #[test]
    fn cosines_by_hand() {
        let a = [3.0, 4.0, 0.0, 0.0];
        let b = [1.0, 0.0, 0.0, -2.0, 0.0, 0.0];
        let c = abs_cosines(&a, 2, &b, 3, 2).unwrap();
        assert_eq!(c.len(), 6);
        let want = [0.6, 0.8, 0.0, 0.0, 0.0, 0.0];
        for (x, y) in c.iter().zip(want) {
            assert!((x - y).abs() < 1e-6, "{c:?}");
        }
    }
}
