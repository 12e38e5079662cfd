//! Around an optimizer step: unit-norm decoder maintenance and dead-latent resampling (Bricken et al.
//! 2023, "Towards Monosemanticity", appendix on neuron resampling).

use rand::Rng;

use crate::kernels::sparse::dot;
use crate::kernels::Real;
use crate::sae::{GradientsOf, SaeOf};
use crate::{Result, SaeError};

impl<T: Real> SaeOf<T> {
    /// Before the optimizer step, for unit-norm-decoder architectures: removes from each decoder
    /// direction's gradient its component along the direction, `g_i ← g_i − (g_i·d_i) d_i / ‖d_i‖²`.
    /// No-op otherwise.
    pub fn project_decoder_grad(&self, grads: &mut GradientsOf<T>) {
        if !self.cfg.architecture.unit_norm_decoder() {
            return;
        }
        let d_out = self.cfg.d_out();
        for (g, w) in grads
            .w_dec
            .chunks_exact_mut(d_out)
            .zip(self.w_dec.chunks_exact(d_out))
        {
            let nn = dot(w, w);
            if nn > T::ZERO {
                let c = dot(g, w) / nn;
                for (gv, &wv) in g.iter_mut().zip(w) {
                    *gv -= c * wv;
                }
            }
        }
    }

    /// After the optimizer step: renormalises the decoder directions to unit norm (unit-norm
    /// architectures) and projects JumpReLU's threshold onto `θ ≥ 0`.
    pub fn post_step(&mut self) {
        if self.cfg.architecture.unit_norm_decoder() {
            let d_out = self.cfg.d_out();
            for w in self.w_dec.chunks_exact_mut(d_out) {
                let n = dot(w, w).sqrt();
                if n > T::ZERO {
                    for v in w.iter_mut() {
                        *v = *v / n;
                    }
                }
            }
        }
        self.project_threshold();
    }

    /// Resamples the `dead` latents (Towards Monosemanticity): for each, draws a training row of `rows`
    /// (`n_rows × row_width`: `x`, or a transcoder's `[x | y]`) with probability ∝ `row_loss²` (`row_loss` = each row's `‖x̂−x‖²`, e.g.
    /// [`crate::WorkspaceOf::row_sq_err`]), sets the decoder direction to the row's unit vector (times the
    /// latent's current decoder norm convention: unit norm for unit-norm architectures, else 0.1; a
    /// transcoder's decoder takes the row's target `y`, its encoder the input `x`), the
    /// encoder column to the input's unit vector times `0.2 ×` the mean encoder norm of the alive latents,
    /// and the encoder bias to 0. Returns the resampled latents: the caller must also reset their
    /// optimizer state ([`zero_latent`] on each Adam moment).
    pub fn resample_dead<R: Rng + ?Sized>(
        &mut self,
        rows: &[T],
        n_rows: usize,
        row_loss: &[T],
        dead: &[usize],
        rng: &mut R,
    ) -> Result<Vec<usize>> {
        let (d_in, d_sae, d_out) = (self.cfg.d_in, self.cfg.d_sae, self.cfg.d_out());
        let width = self.cfg.row_width();
        if rows.len() != n_rows * width || row_loss.len() != n_rows || n_rows == 0 {
            return Err(SaeError::shape(
                "resampling batch / losses",
                &[n_rows, width],
                &[rows.len(), row_loss.len()],
            ));
        }
        if let Some(&bad) = dead.iter().find(|&&i| i >= d_sae) {
            return Err(SaeError::invalid(
                "dead latent",
                bad,
                format!("it must lie in 0..{d_sae} (d_sae)"),
            ));
        }
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let enc_norm = |sae: &Self, i: usize| {
            (0..d_in)
                .map(|j| sae.w_enc[j * d_sae + i].to_f64().powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let mut is_dead = vec![false; d_sae];
        for &i in dead {
            is_dead[i] = true;
        }
        let alive: Vec<usize> = (0..d_sae).filter(|&i| !is_dead[i]).collect();
        let mean_alive = if alive.is_empty() {
            1.0
        } else {
            alive.iter().map(|&i| enc_norm(self, i)).sum::<f64>() / alive.len() as f64
        };
        let weights: Vec<f64> = row_loss.iter().map(|l| l.to_f64().powi(2)).collect();
        let total: f64 = weights.iter().sum();
        let dec_norm = if self.cfg.architecture.unit_norm_decoder() {
            1.0
        } else {
            0.1
        };
        let mut done = Vec::with_capacity(dead.len());
        for &i in dead {
            let r = if total > 0.0 && total.is_finite() {
                let mut u = rng.random::<f64>() * total;
                let mut pick = n_rows - 1;
                for (r, &w) in weights.iter().enumerate() {
                    if u < w {
                        pick = r;
                        break;
                    }
                    u -= w;
                }
                pick
            } else {
                rng.random_range(0..n_rows)
            };
            let row = &rows[r * width..(r + 1) * width];
            let (x, y) = (&row[..d_in], &row[width - d_out..]);
            let norm = |v: &[T]| v.iter().map(|v| v.to_f64().powi(2)).sum::<f64>().sqrt();
            let (nx, ny) = (norm(x), norm(y));
            if nx <= 0.0 || ny <= 0.0 {
                continue;
            }
            for (j, &v) in y.iter().enumerate() {
                self.w_dec[i * d_out + j] = T::from_f64(v.to_f64() / ny * dec_norm);
            }
            for (j, &v) in x.iter().enumerate() {
                self.w_enc[j * d_sae + i] = T::from_f64(v.to_f64() / nx * 0.2 * mean_alive);
            }
            if !self.b_enc.is_empty() {
                self.b_enc[i] = T::ZERO;
            }
            done.push(i);
        }
        tracing::debug!(
            n_resampled = done.len(),
            mean_alive,
            "resampled dead latents"
        );
        Ok(done)
    }
}

/// Zeros latent `latent`'s entries in a buffer laid out like parameter `name` (an Adam moment, a
/// gradient): column `latent` of `W_enc`, row `latent` of `W_dec` (its width is `buf.len() / d_sae`: `d_in`,
/// or a transcoder's `d_out`), entry `latent` of the per-latent vectors; `b_dec` and `W_skip` have none.
pub fn zero_latent<T: Real>(name: &str, buf: &mut [T], latent: usize, d_in: usize, d_sae: usize) {
    match name {
        "W_enc" => {
            for j in 0..d_in {
                if let Some(v) = buf.get_mut(j * d_sae + latent) {
                    *v = T::ZERO;
                }
            }
        }
        "W_dec" => {
            let width = buf.len() / d_sae.max(1);
            if let Some(row) = buf.get_mut(latent * width..(latent + 1) * width) {
                row.fill(T::ZERO);
            }
        }
        "b_dec" | "W_skip" => {}
        _ => {
            if let Some(v) = buf.get_mut(latent) {
                *v = T::ZERO;
            }
        }
    }
}
