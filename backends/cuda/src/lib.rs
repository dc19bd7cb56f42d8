//! # finetp-backend-cuda
//!
//! The NVIDIA GPU backend: the backend contract over CUDA through `cudarc` (driver, cuBLASLt,
//! NVRTC, all loaded at run time) and NCCL (loaded by its soname, `nccl.rs`), so a binary built
//! with it starts, and says in one line what is missing, on a machine without CUDA.
//!
//! - **Devices and memory.** A rank's handle holds its GPU's primary context and a stream of its
//!   own; every copy, kernel, GEMM and collective is enqueued on it. Memory is stream-ordered
//!   (`buffer.rs`); activations are f32; weights are f32, bf16 or f16, and GGUF block formats are
//!   decoded to bf16 at load (this backend keeps no block formats yet).
//! - **Compute.** cuBLASLt for `linear` (`gemm.rs`); NVRTC kernels compiled once per
//!   architecture at start (`ptx.rs`, `cu/`) for RMSNorm, RoPE, SiLU·mul, add, the
//!   vocab-parallel embedding, the paged KV cache and its attention, and sampling, all reading
//!   the step's index tensors on the device (`kernels.rs`). MoE routing runs on the host.
//! - **Collectives.** With one GPU per rank, one NCCL communicator per fine-grained group in the
//!   plan's order, its unique id carried by the `Rendezvous`; uneven counts as grouped
//!   send/recv (`nccl_comm.rs`, `comm.rs`). With several ranks on one GPU (NCCL refuses that),
//!   the single-GPU path: per-rank streams and buffers, device-to-device copies ordered by
//!   events (`local.rs`).
//! - **Graphs.** A real CUDA graph per decode step; on the single-GPU path one capture over
//!   every rank's stream (`graph.rs`).
//!
//! `docs/backends.md` says what has run on a GPU and what has only been compiled and run
//! against stubs.

mod buffer;
mod comm;
mod device;
mod gemm;
mod graph;
mod kernels;
mod local;
pub mod nccl;
pub mod nccl_comm;
mod placement;
pub mod ptx;
mod runtime;

pub use buffer::CudaBuffer;
pub use comm::NcclGroup;
pub use device::CudaBackend;
pub use placement::{Placement, placement};
pub use local::LocalGroup;

/// Shorthand for a CUDA tensor.
pub type CudaTensor = finetp_core::backend::Tensor<CudaBackend>;
