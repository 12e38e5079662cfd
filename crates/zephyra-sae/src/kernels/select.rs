//! Top-k selection: the `k` largest values of a row, ties broken by the lower index (deterministic).

use std::cmp::Ordering;

use super::Real;

/// Descending by value, then ascending by index (NaN compares equal: inputs are validated upstream).
#[inline]
fn desc<T: Real>(a: &(T, u32), b: &(T, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Writes into `out` the `min(k, len)` largest entries of `row` as `(index, value)`, sorted by index.
/// `scratch` is reused between calls (no allocation once warm). Runs in O(len) for `k ≪ len`: a value is
/// only pushed when it beats the current k-th best, and the candidate buffer is cut back to `k` when full.
pub fn top_k<T: Real>(row: &[T], k: usize, scratch: &mut Vec<(T, u32)>, out: &mut Vec<(u32, T)>) {
    out.clear();
    scratch.clear();
    let k = k.min(row.len());
    if k == 0 {
        return;
    }
    let cap = (2 * k).max(k + 16);
    let mut floor: Option<T> = None;
    for (i, &v) in row.iter().enumerate() {
        if let Some(f) = floor {
            // Equal values lose to the earlier (lower-index) ones already kept.
            if v.partial_cmp(&f) != Some(Ordering::Greater) {
                continue;
            }
        }
        scratch.push((v, i as u32));
        if scratch.len() == cap {
            scratch.select_nth_unstable_by(k - 1, desc);
            scratch.truncate(k);
            floor = Some(scratch[k - 1].0);
        }
    }
    if scratch.len() > k {
        scratch.select_nth_unstable_by(k - 1, desc);
        scratch.truncate(k);
    }
    out.extend(scratch.iter().map(|&(v, i)| (i, v)));
    out.sort_unstable_by_key(|&(i, _)| i);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(row: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(f32, u32)> = row
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect();
        all.sort_by(desc);
        let mut top: Vec<(u32, f32)> = all.into_iter().take(k).map(|(v, i)| (i, v)).collect();
        top.sort_by_key(|p| p.0);
        top
    }

    #[test]
    fn top_k_matches_sorting_including_ties_and_odd_sizes() {
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        for &len in &[1usize, 2, 7, 33, 100, 1001] {
            for &k in &[1usize, 2, 5, 32, 64] {
                // Many ties: values on a coarse grid.
                let row: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919 % 23) as f32 - 11.0) * 0.5)
                    .collect();
                top_k(&row, k, &mut scratch, &mut out);
                assert_eq!(out, naive(&row, k), "len {len} k {k}");
            }
        }
    }
}
