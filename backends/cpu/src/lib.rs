//! # finetp-backend-cpu
//!
//! The reference backend: every other backend is tested against it. Ranks are threads of one
//! process; each owns a [`CpuBackend`] (its own rayon pool) and, per planned group, a
//! communicator from the in-process collectives ([`comm`]).

pub mod comm;
mod backend;
mod gemm;
mod gemm_ops;
mod graph;
mod kernels;
mod storage;

pub use graph::CpuGraph;
pub use storage::{CpuBackend, CpuStorage, CpuTensor};
