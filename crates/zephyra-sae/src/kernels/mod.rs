//! CPU kernels: dense GEMM on the `gemm` crate (runtime CPU-feature dispatch, rayon across cores), sparse
//! kernels over per-row active lists for the codes (their inner loops in [`simd`], also dispatched at run
//! time), and top-k selection. Everything is generic over
//! [`Real`] (`f32` in training, `f64` in the gradient checks).

pub mod dense;
pub mod real;
pub mod select;
pub mod simd;
#[cfg(target_arch = "x86_64")]
pub mod sliced;
pub mod sparse;

pub use dense::{matmul, matmul_at_b, MatRef};
pub use real::Real;
pub use sparse::Codes;
