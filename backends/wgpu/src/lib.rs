//! # finetp-backend-wgpu
//!
//! The portable GPU backend: [`Gemm`](finetp_core::backend::Gemm), the decoder
//! [`Kernels`](finetp_core::backend::Kernels) and memory as WGSL compute shaders on
//! [`wgpu`], so the same sharded layers and models run on any Vulkan, Metal or DX12 device
//! (and, in CI, on Mesa's software Vulkan driver, lavapipe). It is the fallback where neither
//! CUDA nor Ascend is present.
//!
//! - **Enqueued, not eager.** Every kernel, copy and clear is recorded into one pending
//!   command encoder per backend handle (`stream.rs`); the encoder is submitted only at a sync
//!   point: [`download`](finetp_core::backend::Backend::download),
//!   [`synchronize`](finetp_core::backend::Backend::synchronize), `sample`/`moe_route` (they
//!   run on the host for now), or before a collective stages its tensors through the host. Buffers
//!   stay on the device between ops.
//! - **Adapter limits.** Storage bindings are capped (128 MiB on lavapipe and in WebGPU's
//!   defaults), so weights bigger than one binding are read through several row windows of
//!   the same buffer, one dispatch per window (`buffer.rs`).
//! - **Numerics follow the CPU backend.** The GEMM reduces `k` in exactly the CPU kernel's
//!   order (8 lanes per 1024-wide block, the same lane tree, FMA), so on a driver with fused
//!   multiply-add its outputs are bit-identical to the CPU's; RMSNorm accumulates in f64 when
//!   the adapter has `shader-f64` (as the CPU does). Drivers may split WGSL `fma` into a
//!   multiply and an add (lavapipe does); [`WgpuBackend::fma_is_fused`] says which, and
//!   `docs/wgpu.md` has the tolerances.
//! - **Collectives** stage through host memory and reuse the CPU backend's in-process
//!   collectives ([`StagedComm`](finetp_backend_cpu::comm::StagedComm)).
//! - **Device-side bounds checks.** KV-cache rows that address a slot or position outside the
//!   cache cannot be reported when they are enqueued (the indices live on the device), so the
//!   kernel flags them in a status word and the next sync point returns the error, as CUDA
//!   reports asynchronous faults.
//!
//! Graph capture is not implemented: [`begin_capture`](finetp_core::backend::Backend::begin_capture)
//! keeps its default `Unsupported` answer and the engine runs graph mode's static shapes
//! eagerly (it reports why).

mod buffer;
mod caps;
mod device;
mod dispatch;
mod gemm;
mod kernels;
mod memory;
mod pipelines;
mod shaders;
mod status;
mod stream;

pub use buffer::WgpuBuffer;
pub use device::{AdapterSummary, WgpuBackend, WgpuOptions};

/// Shorthand for a wgpu tensor.
pub type WgpuTensor = finetp_core::backend::Tensor<WgpuBackend>;
