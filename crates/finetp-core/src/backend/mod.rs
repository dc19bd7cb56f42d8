//! The contract every accelerator backend implements.
//!
//! One type parameter, `B: Backend`, carries everything backend-specific: its buffer type
//! ([`Backend::Buffer`]), its memory operations, its GEMM ([`Gemm`]) and kernels ([`Kernels`]).
//! Communication is separate: a [`Collective`] is a per-group communicator built from the
//! planner's rank list, as an NCCL/HCCL communicator is; layers hold the one for their
//! component and never name a group id.
//!
//! Layers, models and the engine are written once against `B: Device` (all three traits).
//! `docs/backends.md` lists the whole contract and what a new backend must do.

mod block;
pub mod checks;
mod collective;
mod dtype;
mod error;
mod graph;
mod group;
mod host;
mod in_process_rendezvous;
mod mailbox;
mod ops;
pub mod quant;
mod rendezvous;
mod tensor;
mod transport;

use std::sync::Arc;

pub use block::Block;
pub use collective::{Collective, total_rows};
pub use group::{GroupKey, GroupRole, GroupSpec};
pub use in_process_rendezvous::InProcessRendezvous;
pub use rendezvous::{Rendezvous, SharedObject, broadcast_bytes};
pub use dtype::{DType, DTypeKind};
pub use error::{BackendError, CommError};
pub use graph::{CapturedGraph, ReplayError};
pub use host::{HostData, HostTensor};
pub use ops::{AttentionParams, Gemm, Kernels, KvIndex, MoeRouting, PAD_SLOT, RopeStyle, RopeTable, SampleParams};
pub use tensor::Tensor;
pub use mailbox::{Envelope, Mailboxes};
pub use transport::{Call, HostTransport, POISONED, TRAILER_ROOM, all_gather_bytes, check_message, fingerprint};

/// Where a rank's device is: what [`Backend::open`] needs to pick a device (or a share of the
/// machine) for one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlot {
    /// The rank's global rank.
    pub rank: usize,
    /// Its index among the ranks of this process (a device ordinal, modulo the devices).
    pub local_rank: usize,
    /// How many ranks this process runs (the CPU backend splits the cores between them).
    pub local_ranks: usize,
}

impl DeviceSlot {
    /// The slot of a single rank that has the machine to itself.
    pub const SOLE: DeviceSlot = DeviceSlot { rank: 0, local_rank: 0, local_ranks: 1 };
}

/// A device handle with its own memory and (for asynchronous backends) its own stream.
///
/// Each rank owns one handle; handles are `Send` so a rank's thread can own it.
pub trait Backend: Send + Sync + Sized + 'static {
    /// Owned device memory of one tensor.
    type Buffer: Send + Sync + 'static;

    /// Short lowercase name, e.g. `"cpu"`, `"cuda"`.
    const NAME: &'static str;

    /// Opens the device of one rank. A missing driver, library or device is
    /// [`BackendError::Unavailable`] naming what is missing, never a panic.
    fn open(slot: &DeviceSlot) -> Result<Self, BackendError>;

    /// This rank's communicator for one group: the backend's own kind (in-process shared
    /// memory, NCCL, HCCL, or host staging), made from the group's data and whatever its
    /// members must exchange to find each other. Collective over the group: every member calls
    /// it, in the plan's group order.
    fn connect(&self, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<Self>>, CommError>;

    /// A human-readable description of the device (printed by the CLI and the tests).
    fn describe(&self) -> String;

    /// The float type of every activation on this backend: what layers allocate, what the
    /// kernels read and write, what the KV cache stores (f32 on the CPU reference; a GPU may
    /// choose bf16). The conformance suite states its tolerances per activation dtype.
    fn activation_dtype(&self) -> DType;

    /// Whether GEMM weights and embedding tables may stay in block format `dtype` on this
    /// backend ([`DType::is_quantized`]); where not, the layers upload them decoded to f32.
    /// Float dtypes are always accepted.
    fn keeps_weight_dtype(&self, dtype: DType) -> bool {
        dtype.is_float()
    }

    /// The float dtype a block-format weight is decoded to at load where the backend does not
    /// keep its format ([`keeps_weight_dtype`](Self::keeps_weight_dtype)): f32 by default; a
    /// GPU backend may choose bf16, half the bytes (the memory report measures what is held).
    fn decoded_weight_dtype(&self) -> DType {
        DType::F32
    }

    /// A zero-filled tensor.
    fn zeros(&self, shape: &[usize], dtype: crate::backend::DType) -> Result<Tensor<Self>, BackendError>;

    /// Copies host data to the device.
    fn upload(&self, host: &HostTensor) -> Result<Tensor<Self>, BackendError>;

    /// Copies a tensor back to the host (a sync point).
    fn download(&self, t: &Tensor<Self>) -> Result<HostTensor, BackendError>;

    /// Waits until every enqueued call has finished.
    fn synchronize(&self) -> Result<(), BackendError>;

    /// Copies a 2-D block of `src` (viewed as `[rows, row_len]`) into `dst` (see [`Block`]).
    /// Same dtype. Slicing heads, concatenating and padding are all this one call.
    fn copy_block(&self, src: &Tensor<Self>, dst: &mut Tensor<Self>, block: Block) -> Result<(), BackendError>;

    /// Copies host data into an existing tensor of the same shape and dtype: how a step's inputs
    /// reach the fixed buffers of a captured graph. The default uploads a temporary and copies
    /// it over; backends with a direct host-to-device copy override it.
    fn write(&self, t: &mut Tensor<Self>, host: &HostTensor) -> Result<(), BackendError> {
        checks::write(t, host)?;
        let tmp = self.upload(host)?;
        self.copy_block(&tmp, t, Block::whole(&tmp))
    }

    /// Starts recording every call made on this handle (and on its communicators) from this
    /// thread into a graph (see [`CapturedGraph`]). Backends that cannot capture say so here;
    /// the engine then runs graph mode's static shapes eagerly.
    fn begin_capture(&self) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!("the {} backend cannot capture graphs", Self::NAME)))
    }

    /// Stops recording and returns the graph. Called after [`Backend::begin_capture`] whatever
    /// happened in between (the capture ends, and is dropped, on error too).
    fn end_capture(&self) -> Result<Box<dyn CapturedGraph>, BackendError> {
        Err(BackendError::Unsupported(format!("the {} backend cannot capture graphs", Self::NAME)))
    }
}

/// Everything a decoder needs from one accelerator.
pub trait Device: Backend + Gemm + Kernels {}

impl<B: Backend + Gemm + Kernels> Device for B {}
