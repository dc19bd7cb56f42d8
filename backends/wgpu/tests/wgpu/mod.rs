//! The wgpu backend's own cases, beyond the conformance suite's: its GEMM's reduction order bit
//! for bit, binding windows, shader-feature fallbacks, device-side error reporting.

pub mod common;
pub mod errors;
pub mod gemm_order;
pub mod options;
