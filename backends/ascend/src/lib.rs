//! # finetp-backend-ascend
//!
//! The Ascend NPU backend: the backend contract over CANN, loaded at run time through
//! `ascend-sys` (ACL runtime, aclnn operators) and `hccl-sys` (HCCL), so a binary built with it
//! starts, and reports what is missing in one line, on a machine without CANN.
//!
//! - **Devices and memory.** A rank's handle binds its NPU (`aclrtSetDevice`, local rank modulo
//!   the devices), makes a context and one stream; every copy, kernel and collective is
//!   enqueued on that stream. Buffers are `aclrtMalloc`ed; a dropped buffer is freed at the
//!   next sync point (`buffer.rs`), so a temporary never returns to ACL while the stream may
//!   read it.
//! - **Compute.** `aclnnMatmul` over a transposed view of the HF `[out, in]` weight, RMSNorm,
//!   SwiGLU, add, the vocab-parallel embedding, greedy sampling (`aclnnArgMax`) and attention's
//!   matmuls and softmax on the device, each a two-phase aclnn call with the stream's one
//!   workspace (`aclnn.rs`). Activations are f32; bf16/f16 weights are widened per call.
//!   RoPE, temperature sampling and MoE routing run on the host with the CPU reference's code,
//!   and the KV-cache and attention index math reads the step's small index tensors on the
//!   host (`kernels.rs`, `attention.rs`): exact, but sync points.
//! - **Collectives.** One HCCL communicator per fine-grained group, in the plan's group order,
//!   from root info carried by the `Rendezvous`; uneven counts through the V collectives; every
//!   collective waits within the group's timeout (`comm.rs`).
//! - **Graphs.** ACL model-runtime capture where CANN has it (`graph.rs`); steps with host
//!   round trips are refused during capture, so the engine runs them eagerly and says so.
//!
//! Nothing here has run on an Ascend NPU yet: CI runs it against logging stub libraries
//! (`tests/stub_calls.rs`, `ci/ascend.sh`); `docs/backends.md` says what that proves.

mod aclnn;
mod attention;
mod buffer;
mod comm;
mod device;
mod gemm;
mod graph;
mod host;
mod kernels;
mod runtime;

pub use buffer::AscendBuffer;
pub use comm::HcclGroup;
pub use device::AscendBackend;

/// Shorthand for an Ascend tensor.
pub type AscendTensor = finetp_core::backend::Tensor<AscendBackend>;
