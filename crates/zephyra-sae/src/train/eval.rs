//! Held-out evaluation: L0 and centred FVE of an SAE on rows it was not trained on (a transcoder: of its
//! prediction of `y` from `x`, on `[x | y]` rows).

use super::source::ActivationSource;
use crate::{Sae, SaeError, Workspace};

/// Quality figures on a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalStats {
    /// Finite rows evaluated.
    pub n_rows: u64,
    /// Mean active latents per row.
    pub l0: f64,
    /// 1 − Σ‖x−x̂‖² / Σ‖x−mean(x)‖² over all the rows (mean taken over the same rows).
    pub fve: f64,
    /// Mean ‖x−x̂‖² per row.
    pub mse: f64,
}

/// Evaluates `sae` (for raw activations, e.g. [`super::Trainer::inference_sae`]) on every finite row of
/// `source` (read to exhaustion, `chunk_rows` at a time, at most `max_rows`).
pub fn evaluate(
    sae: &Sae,
    source: &mut dyn ActivationSource,
    chunk_rows: usize,
    max_rows: u64,
) -> Result<EvalStats, SaeError> {
    let (d_in, d_sae, d_out) = (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.d_out());
    let width = sae.cfg.row_width();
    if source.d_in() != width {
        return Err(SaeError::shape(
            format!("evaluation {}", super::trainer::row_width_name(&sae.cfg)),
            &[width],
            &[source.d_in()],
        ));
    }
    let mut buf = vec![0.0f32; chunk_rows.max(1) * width];
    let mut ws = Workspace::default();
    let (mut n, mut active, mut sse, mut sum_sq) = (0u64, 0u64, 0.0f64, 0.0f64);
    let mut sum = vec![0.0f64; d_out];
    let (mut x, mut y) = (Vec::new(), Vec::new());
    while n < max_rows {
        let want = ((max_rows - n) as usize).min(chunk_rows.max(1));
        let (rows, _) = super::batch::fill_batch(
            source,
            &mut buf[..want * width],
            width,
            super::config::NonFinitePolicy::Skip,
            0,
        )?;
        if rows == 0 {
            break;
        }
        x.clear();
        y.clear();
        for row in buf[..rows * width].chunks_exact(width) {
            x.extend_from_slice(&row[..d_in]);
            y.extend_from_slice(&row[width - d_out..]);
        }
        let codes = sae.encode_with(&x, rows, &mut ws)?;
        active += codes.iter().filter(|&&v| v != 0.0).count() as u64;
        let mut yhat = sae.decode(codes, rows)?;
        sae.add_skip(&x, rows, &mut yhat);
        for r in 0..rows {
            let (row, rec) = (
                &y[r * d_out..(r + 1) * d_out],
                &yhat[r * d_out..(r + 1) * d_out],
            );
            for j in 0..d_out {
                let v = row[j] as f64;
                sse += (v - rec[j] as f64).powi(2);
                sum_sq += v * v;
                sum[j] += v;
            }
        }
        debug_assert_eq!(codes.len(), rows * d_sae);
        n += rows as u64;
    }
    if n == 0 {
        return Err(SaeError::Training("no finite rows to evaluate on".into()));
    }
    let sst = sum_sq - sum.iter().map(|s| s * s).sum::<f64>() / n as f64;
    Ok(EvalStats {
        n_rows: n,
        l0: active as f64 / n as f64,
        fve: 1.0 - sse / sst.max(f64::MIN_POSITIVE),
        mse: sse / n as f64,
    })
}
