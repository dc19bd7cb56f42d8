//! Where a process's ranks run: one GPU each (NCCL), or all on one GPU (the single-GPU path).

use finetp_core::backend::{BackendError, DeviceSlot};

/// How this process's ranks share its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// One GPU per rank; groups of more than one member are NCCL communicators.
    PerGpu,
    /// The single-GPU path: `ranks` ranks on one GPU, each with its own stream and buffers,
    /// collectives as device-to-device copies ordered by events (NCCL refuses two ranks on one
    /// GPU). Chosen when the process has more ranks than GPUs and one GPU, or when
    /// `FINETP_CUDA_SINGLE_DEVICE=1`.
    SingleGpu { ranks: usize },
}

/// `FINETP_CUDA_SINGLE_DEVICE=1`: every rank of the process on GPU 0.
fn forced_single() -> bool {
    std::env::var("FINETP_CUDA_SINGLE_DEVICE").is_ok_and(|v| v == "1")
}

/// Which GPU `slot` gets, and how ranks share them, given `gpus` visible GPUs.
///
/// # Errors
/// [`BackendError::Unavailable`] for more ranks than GPUs on a machine with several.
pub fn placement(slot: &DeviceSlot, gpus: usize) -> Result<(usize, Placement), BackendError> {
    if slot.local_ranks > 1 && (forced_single() || gpus == 1) {
        return Ok((0, Placement::SingleGpu { ranks: slot.local_ranks }));
    }
    if slot.local_ranks > gpus {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            missing: format!("{} GPUs for the {} ranks of this process (NCCL needs one GPU per rank)", gpus, slot.local_ranks),
            hint: "run fewer ranks per process, or set FINETP_CUDA_SINGLE_DEVICE=1 to put them all on GPU 0 (the single-GPU path)".into(),
        });
    }
    Ok((slot.local_rank, Placement::PerGpu))
}
