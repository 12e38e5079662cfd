//! Sparse autoencoders: architectures, hand-derived gradients, CPU kernels, training and checkpoints.
#![deny(missing_docs)]
