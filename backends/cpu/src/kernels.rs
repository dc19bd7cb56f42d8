//! Decoder kernels for the CPU backend (to be written).
