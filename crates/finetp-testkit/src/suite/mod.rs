//! The conformance suite: the backend contract, the sharded layers and a whole model on
//! backend `B`, against the CPU reference, at the tolerances of [`crate::tolerance`].
//!
//! A backend runs it from a `harness = false` test target (wgpu's names
//! `finetp_backend_wgpu::WgpuBackend` and `"FINETP_REQUIRE_WGPU"`):
//!
//! ```no_run
//! // The whole `main` of the test target:
//! finetp_testkit::suite::main::<finetp_backend_cpu::CpuBackend>("FINETP_REQUIRE_CPU")
//! ```
//!
//! Every case says which trait methods it exercises ([`Case::covers`]); the `meta` case fails
//! when a method of the contract's traits has none. When `B::open` finds no device, every case
//! that needs one is listed as ignored with the reason (or fails, with the backend's
//! `FINETP_REQUIRE_<X>=1`); the SmolLM2 case needs the default model as well.

mod attention;
mod collectives;
mod data;
mod gemm;
mod graph;
mod layers;
mod memory;
mod meta;
pub mod model;
mod rows;
mod select;

use std::sync::Arc;

use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{DeviceSlot, Device};

use crate::harness::{self, Need};

pub use data::Pair;
pub use layers::sweep as sweep_layers;

/// What a case runs with: the backend under test and the CPU reference.
pub struct Env<B: Device> {
    pub be: B,
    pub cpu: CpuBackend,
}

impl<B: Device> Env<B> {
    /// Opens `B` (the machine to itself) and a 2-thread CPU reference.
    pub fn open() -> Result<Self, String> {
        let be = B::open(&DeviceSlot::SOLE).map_err(|e| format!("opening the {} backend: {e}", B::NAME))?;
        let cpu = CpuBackend::new(2).map_err(|e| e.to_string())?;
        Ok(Self { be, cpu })
    }

    /// The pair view of this environment's two backends.
    pub fn pair(&self) -> Pair<'_, B> {
        Pair { be: &self.be, cpu: &self.cpu }
    }
}

/// One conformance case.
pub struct Case<B: Device> {
    pub name: &'static str,
    /// The trait methods it exercises, as `"Trait::method"`.
    pub covers: &'static [&'static str],
    /// Needs the default model (SmolLM2).
    pub needs_model: bool,
    pub body: fn(&Env<B>) -> Result<(), String>,
}

impl<B: Device> Case<B> {
    pub const fn new(name: &'static str, covers: &'static [&'static str], body: fn(&Env<B>) -> Result<(), String>) -> Self {
        Self { name, covers, needs_model: false, body }
    }
}

/// Every case of the suite, for backend `B`.
pub fn cases<B: Device>() -> Vec<Case<B>> {
    [memory::cases(), gemm::cases(), rows::cases(), attention::cases(), select::cases(), collectives::cases(), graph::cases(), layers::cases(), model::cases()]
        .into_iter()
        .flatten()
        .collect()
}

/// The test binary of `B`'s conformance: every case, plus the meta case; exits with the
/// runner's status. `require_env` is the backend's `FINETP_REQUIRE_<X>` switch.
pub fn main<B: Device>(require_env: &str) -> ! {
    main_with::<B>(require_env, Vec::new())
}

/// [`main`] plus the backend's own cases (`(name, body)`, a body that panics on failure),
/// which need its device as the suite's do.
pub fn main_with<B: Device>(require_env: &str, extra: Vec<(&'static str, fn())>) -> ! {
    let what = format!("{} device", B::NAME);
    let device = match B::open(&DeviceSlot::SOLE) {
        Ok(be) => {
            eprintln!("finetp-testkit: {} conformance on {}", B::NAME, be.describe());
            Need::present(&what, require_env)
        }
        Err(e) => Need::absent(&what, require_env, e.to_string()),
    };
    let all = cases::<B>();
    // Only looked for (and fetched) when there is a device to run it on.
    let model = (all.iter().any(|c| c.needs_model) && device.absent.is_none()).then(|| {
        let (need, path) = Need::default_model();
        if let Some(p) = path {
            let _ = model::SMOLLM2.set(p);
        }
        need
    });
    let mut out: Vec<harness::Case> = all
        .into_iter()
        .map(|c| {
            let mut needs: Vec<Arc<Need>> = vec![device.clone()];
            if c.needs_model {
                needs.extend(model.clone());
            }
            let body = c.body;
            harness::Case::new(format!("{}::{}", B::NAME, c.name), &needs, move || body(&Env::<B>::open()?))
        })
        .collect();
    for (name, body) in extra {
        out.push(harness::Case::new(format!("{}::{name}", B::NAME), std::slice::from_ref(&device), move || {
            body();
            Ok(())
        }));
    }
    out.push(harness::Case::new(format!("{}::meta_every_trait_method_has_a_case", B::NAME), &[], meta::every_method_has_a_case::<B>));
    harness::run(out)
}

/// `Err(msg)` unless `cond`.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}
