//! Communication for the sharded layers: a rank's groups ([`GroupSet`]), the per-step token
//! counts ([`StepCounts`]) and the placement transitions that call the collectives ([`mappings`]).

mod group_set;
pub mod mappings;
mod step;

pub use group_set::GroupSet;
pub use step::StepCounts;
