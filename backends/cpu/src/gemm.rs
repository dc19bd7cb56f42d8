//! GEMM for the CPU backend (to be written).
