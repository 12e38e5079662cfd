//! Where `train` gets its activations: a `.npy` file, an activation store, or the model on the fly.
