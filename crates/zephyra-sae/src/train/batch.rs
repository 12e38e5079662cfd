//! Filling a reusable batch buffer from a source, dropping (and counting) rows with NaN/Inf.

use super::config::NonFinitePolicy;
use super::source::ActivationSource;
use crate::SaeError;

/// Fills `buf` (`batch_size × d_in`) with finite rows from `source`; returns `(rows, skipped)`. Fewer than
/// `batch_size` rows means the source is exhausted. Twice a pass of skipped rows in a row
/// ([`ActivationSource::rows_per_pass`]: a whole pass among them) is [`SaeError::NoUsableRows`]: a repeating source of NaN rows
/// would otherwise be read forever. No allocation.
pub fn fill_batch(
    source: &mut dyn ActivationSource,
    buf: &mut [f32],
    d_in: usize,
    policy: NonFinitePolicy,
    rows_seen: u64,
) -> Result<(usize, u64), SaeError> {
    let want = buf.len() / d_in;
    let mut rows = 0;
    let mut skipped = 0u64;
    // Unusable rows read since the last usable one.
    let mut run = 0u64;
    let pass = source.rows_per_pass().filter(|&n| n > 0);
    while rows < want {
        let got = source.next_rows(&mut buf[rows * d_in..want * d_in])?;
        if got == 0 {
            break;
        }
        // Compact the rows just read, keeping the finite ones in order.
        let mut kept = rows;
        for r in rows..rows + got {
            let finite = buf[r * d_in..(r + 1) * d_in].iter().all(|v| v.is_finite());
            if !finite {
                if policy == NonFinitePolicy::Error {
                    return Err(SaeError::NonFinite {
                        what: "training activations".into(),
                        row: (rows_seen + skipped + r as u64) as usize,
                    });
                }
                skipped += 1;
                run += 1;
                // A shuffled source draws a new permutation each pass, so two usable rows may be up
                // to 2n − 2 rows apart; 2n unusable rows in a row hold a whole pass.
                if let Some(n) = pass.filter(|&n| run >= n.saturating_mul(2)) {
                    return Err(SaeError::NoUsableRows { rows_per_pass: n });
                }
                continue;
            }
            run = 0;
            if kept != r {
                buf.copy_within(r * d_in..(r + 1) * d_in, kept * d_in);
            }
            kept += 1;
        }
        rows = kept;
    }
    Ok((rows, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::source::MemorySource;

    #[test]
    fn non_finite_rows_are_dropped_and_counted() {
        let rows = vec![
            1.0,
            2.0,
            f32::NAN,
            0.0,
            3.0,
            4.0,
            5.0,
            f32::INFINITY,
            6.0,
            7.0,
        ];
        let mut src = MemorySource::new(rows, 2, false).unwrap();
        let mut buf = vec![0.0; 6];
        let (n, skipped) = fill_batch(&mut src, &mut buf, 2, NonFinitePolicy::Skip, 0).unwrap();
        assert_eq!((n, skipped), (3, 2));
        assert_eq!(buf, [1.0, 2.0, 3.0, 4.0, 6.0, 7.0]);
        let (n, skipped) = fill_batch(&mut src, &mut buf, 2, NonFinitePolicy::Skip, 0).unwrap();
        assert_eq!((n, skipped), (0, 0));
        let mut src = MemorySource::new(vec![1.0, f32::NAN], 2, false).unwrap();
        let err = fill_batch(&mut src, &mut buf, 2, NonFinitePolicy::Error, 0).unwrap_err();
        assert!(matches!(err, SaeError::NonFinite { row: 0, .. }), "{err}");
    }
}
