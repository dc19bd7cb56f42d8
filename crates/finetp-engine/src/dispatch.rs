//! The one place a backend chosen at run time is named: generic code, written once against
//! `B: Device`, is monomorphised for every backend this binary was built with.
//!
//! The CPU backend is always built; the others are Cargo features of the engine (forwarded by
//! the CLI and the examples: `--features wgpu`). A backend that is not compiled in is
//! [`EngineError::NotCompiled`], whose message is the exact command that builds a binary with it.

use finetp_core::backend::Device;

use crate::EngineError;

/// The backends finetp knows by name (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Cuda,
    Ascend,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda, BackendKind::Ascend];

    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Ascend => "ascend",
        }
    }

    /// Whether this binary was built with the backend.
    pub const fn compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Ascend => cfg!(feature = "ascend"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The float a block-format weight is decoded to on this backend where it keeps no block
    /// formats (its `Backend::decoded_weight_dtype`, known before any device is opened, for the
    /// memory model): bf16 on CUDA, f32 elsewhere.
    pub const fn decoded_weight_dtype(self) -> finetp_core::backend::DType {
        match self {
            BackendKind::Cuda => finetp_core::backend::DType::BF16,
            _ => finetp_core::backend::DType::F32,
        }
    }

    /// Whether this version of finetp has the backend at all (as a feature to build with).
    pub const fn exists(self) -> bool {
        self.build_command().is_some()
    }

    /// The command that builds a `finetp` binary with this backend (in `target/release`).
    pub const fn build_command(self) -> Option<&'static str> {
        match self {
            BackendKind::Cpu => Some("cargo build --release --locked -p finetp-cli"),
            BackendKind::Wgpu => Some("cargo build --release --locked -p finetp-cli --features wgpu"),
            BackendKind::Ascend => Some("cargo build --release --locked -p finetp-cli --features ascend"),
            BackendKind::Cuda => Some("cargo build --release --locked -p finetp-cli --features cuda"),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Work to run on whichever backend is chosen: [`run`](Self::run) is instantiated once per
/// compiled backend.
pub trait WithBackend {
    type Output;
    fn run<B: Device>(self, kind: BackendKind) -> Self::Output;
}

cfg_if::cfg_if! {
    if #[cfg(feature = "wgpu")] {
        fn on_wgpu<W: WithBackend>(work: W) -> Result<W::Output, EngineError> {
            Ok(work.run::<finetp_backend_wgpu::WgpuBackend>(BackendKind::Wgpu))
        }
    } else {
        fn on_wgpu<W: WithBackend>(_work: W) -> Result<W::Output, EngineError> {
            Err(EngineError::NotCompiled { backend: BackendKind::Wgpu })
        }
    }
}

cfg_if::cfg_if! {
    if #[cfg(feature = "ascend")] {
        fn on_ascend<W: WithBackend>(work: W) -> Result<W::Output, EngineError> {
            Ok(work.run::<finetp_backend_ascend::AscendBackend>(BackendKind::Ascend))
        }
    } else {
        fn on_ascend<W: WithBackend>(_work: W) -> Result<W::Output, EngineError> {
            Err(EngineError::NotCompiled { backend: BackendKind::Ascend })
        }
    }
}

cfg_if::cfg_if! {
    if #[cfg(feature = "cuda")] {
        fn on_cuda<W: WithBackend>(work: W) -> Result<W::Output, EngineError> {
            Ok(work.run::<finetp_backend_cuda::CudaBackend>(BackendKind::Cuda))
        }
    } else {
        fn on_cuda<W: WithBackend>(_work: W) -> Result<W::Output, EngineError> {
            Err(EngineError::NotCompiled { backend: BackendKind::Cuda })
        }
    }
}

/// Runs `work` on backend `kind`.
///
/// # Errors
/// [`EngineError::NotCompiled`] when this binary was built without `kind`.
pub fn dispatch<W: WithBackend>(kind: BackendKind, work: W) -> Result<W::Output, EngineError> {
    match kind {
        BackendKind::Cpu => Ok(work.run::<finetp_backend_cpu::CpuBackend>(kind)),
        BackendKind::Wgpu => on_wgpu(work),
        BackendKind::Ascend => on_ascend(work),
        BackendKind::Cuda => on_cuda(work),
    }
}
