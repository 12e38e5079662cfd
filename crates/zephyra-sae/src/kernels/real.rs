//! The float types the kernels run on: `f32` for training, `f64` for the finite-difference checks.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real scalar (`f32` or `f64`). The math is written once over this trait so that the gradient checks
/// run, in `f64`, exactly the code the trainer runs in `f32`.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// From an `f64` (rounded for `f32`).
    fn from_f64(v: f64) -> Self;
    /// To an `f64`.
    fn to_f64(self) -> f64;
    /// From an `f32` (exact: through `f64`, which holds every `f32`).
    #[inline]
    fn from_f32(v: f32) -> Self {
        Self::from_f64(f64::from(v))
    }
    /// To an `f32` (rounded for `f64`; through `f64`, exact for `f32`).
    #[inline]
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    /// `eˣ`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The larger of two values.
    fn max(self, other: Self) -> Self;
    /// Not NaN and not infinite.
    fn is_finite(self) -> bool;
    /// `out[j] += Σ_t c·src[row·d + j]` with `(c, row) = term(t)`: see [`super::simd::weighted_row_sum`].
    fn weighted_row_sum(
        out: &mut [Self],
        n_terms: usize,
        term: impl Fn(usize) -> (Self, usize),
        src: &[Self],
        d: usize,
    );
    /// `x·y`: see [`super::simd::dot`].
    fn dot(x: &[Self], y: &[Self]) -> Self;
    /// The values as `f32`, when `Self` is `f32` (the type the specialised kernels take).
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
    /// The values as `f32`, when `Self` is `f32`.
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]>;
}

macro_rules! impl_real {
    (@unary $t:ty: $($f:ident),*) => {
        $(
            #[inline]
            fn $f(self) -> Self {
                <$t>::$f(self)
            }
        )*
    };
    ($t:ty, $kernels:path, $view:path, $view_mut:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            impl_real!(@unary $t: exp, ln, sqrt, abs);
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn weighted_row_sum(
                out: &mut [Self],
                n_terms: usize,
                term: impl Fn(usize) -> (Self, usize),
                src: &[Self],
                d: usize,
            ) {
                use $kernels as k;
                k::weighted_row_sum(out, n_terms, term, src, d)
            }
            #[inline]
            fn dot(x: &[Self], y: &[Self]) -> Self {
                use $kernels as k;
                k::dot(x, y)
            }
            #[inline]
            fn as_f32(values: &[Self]) -> Option<&[f32]> {
                $view(values)
            }
            #[inline]
            fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]> {
                $view_mut(values)
            }
        }
    };
}

fn not_f32<T>(_: &[T]) -> Option<&[f32]> {
    None
}

fn not_f32_mut<T>(_: &mut [T]) -> Option<&mut [f32]> {
    None
}

impl_real!(f32, super::simd::f32_dispatch, Some, Some);
impl_real!(f64, super::simd::portable, not_f32, not_f32_mut);
