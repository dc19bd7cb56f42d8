//! # finetp-testkit
//!
//! The backend conformance suite and the helpers every test shares.
//!
//! - [`suite`]: every method of the backend contract (memory, GEMM, kernels, collectives,
//!   graph capture), the four sharded layers and a whole model, run on backend `B` and compared
//!   with the CPU reference at the tolerance [`tolerance`] states once per op. A backend's
//!   conformance test is one line, `finetp_testkit::suite::main::<MyBackend>("FINETP_REQUIRE_MY")`,
//!   in a `harness = false` test target; a meta-case fails when a trait method has no case.
//! - [`harness`]: a libtest-mimic runner whose cases are listed as **ignored, with the reason**
//!   when their device or model is absent, and fail instead when `FINETP_REQUIRE_<X>=1`.
//! - [`tiny`]: small random checkpoints of every supported architecture, written as real
//!   `config.json` + `model.safetensors` + `tokenizer.json` (tests, examples).
//! - [`rng`]: deterministic data without a dependency.

pub mod harness;
pub mod report;
pub mod rng;
pub mod suite;
pub mod tiny;
pub mod tolerance;

pub use rng::Rng;
