//! # finetp-backend-cpu
//!
//! The reference backend: every other backend is tested against it. Each rank owns a
//! [`CpuBackend`] (its own rayon pool) and, per planned group, a communicator ([`comm`]): the
//! in-process collectives for ranks that are threads of one process, the same collectives over
//! the launcher's transport for groups that span processes.

pub mod comm;
mod backend;
mod gemm;
mod gemm_ops;
mod graph;
mod kernels;
pub mod on_host;
mod storage;

pub use graph::CpuGraph;
pub use storage::{CpuBackend, CpuStorage, CpuTensor};
