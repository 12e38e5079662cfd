//! Run-time choice of the vector unit for the elementwise kernels.
//!
//! The crate is compiled for baseline x86-64 (SSE2), so a plain loop vectorizes 4 lanes wide.
//! [`vectorized`] runs a closure inside a function compiled for AVX-512 (or AVX2 + FMA) when the CPU
//! has it; the closure, marked `#[inline(always)]` by its caller, is inlined there and its loops are
//! vectorized 16 (or 8) lanes wide. The arithmetic is the same in every case (no contraction into
//! FMA happens without fast-math flags), so results are bit-identical to the baseline build.

/// Runs `f` compiled for the widest vector unit this CPU has.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has avx512f (checked above).
            return unsafe { x86::avx512(f) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has avx2 and fma (checked above).
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Runs `f` with AVX-512 code generation.
    ///
    /// # Safety
    /// The CPU must support `avx512f`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Runs `f` with AVX2 code generation.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectorized_returns_the_closures_value() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let got = vectorized(
            #[inline(always)]
            || x.iter().map(|v| v * v).collect::<Vec<f32>>(),
        );
        let want: Vec<f32> = x.iter().map(|v| v * v).collect();
        assert_eq!(got, want);
    }
}
