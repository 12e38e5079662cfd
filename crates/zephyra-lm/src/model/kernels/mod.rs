//! Kernels of the forward pass, by number format.
//!
//! | module | responsibility |
//! |---|---|
//! | `fp32` | `f32` matrix products (the `gemm` crate), RMSNorm, RoPE, SwiGLU/GeGLU, softmax |
//! | `bf16` | bfloat16 weight storage and the bf16 × bf16 → f32 matrix product of linear layers, with an AVX-512 BF16 kernel chosen at run time and a portable fallback |
//! | `simd` | run-time choice of AVX-512 / AVX2 code generation for the elementwise loops |

pub(crate) mod bf16;
mod fp32;
mod simd;

pub(crate) use fp32::*;
