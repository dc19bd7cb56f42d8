//! # finetp-cost
//!
//! The analytic cost model (a crate of its own: only `finetp plan` and `finetp bench` use it,
//! so nothing else rebuilds when it changes): what each component's fine-grained TP size buys (weight memory,
//! weight-read time) and costs (collectives) per decode step, and the sizes that minimise TPOT.
//!
//! Decode GEMMs are memory-bound: a rank's time in a component is the bytes it streams over the
//! memory bandwidth, floored by its FLOPs over the dense peak. Sharding a GEMM over a group of
//! `P` ranks divides its weight bytes by `P` while its FLOPs stay the same (each member
//! multiplies the whole group's `P·B` tokens against `1/P` of the weight); the component then
//! adds its collectives, each a ring costing `α + (P−1)·α_step + (P−1)/P · n / bandwidth` for a
//! buffer of `n` bytes. The embedding is a gather whose reads do not depend on the table size,
//! so sharding it saves memory but no read time. Formulas, assumptions and the seed comparison:
//! `docs/cost-model.md`.
//!
//! Hardware numbers live in TOML profiles ([`HardwareProfile`]), each field with its source.

mod auto;
mod estimate;
mod profile;
mod report;

pub use auto::{AutoChoice, CostError, auto};
pub use estimate::{CollectiveCost, CollectiveKind, ComponentEstimate, Estimate, component_times, estimate};
pub use profile::{HardwareProfile, Link, ProfileError};

#[cfg(test)]
mod tests;
