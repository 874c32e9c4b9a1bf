//! Trigger rules on the coordinator's side: reading rules files and their
//! templates (`load`), and turning an event into the jobs it would submit
//! (`plan`). Matching and rendering themselves are the core's
//! (`testfleet_core::trigger`), with no IO.

pub mod amqp;
pub mod hooks;
pub mod load;
pub mod plan;

pub use load::{LoadError, load_rules};
pub use plan::{Plan, PlannedJob, plan};
