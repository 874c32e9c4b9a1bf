//! Trigger rules on the coordinator's side: reading rules files and their
//! templates (`load`), turning an event into the jobs it would submit
//! (`plan`), and what an event's rules decide, for every source, with the
//! reason when no job comes of it (`decide`). Matching and rendering themselves are the core's
//! (`testfleet_core::trigger`), with no IO.

pub mod amqp;
pub(crate) mod decide;
pub mod hooks;
pub mod load;
pub mod plan;

pub use load::{LoadError, load_rules};
pub use plan::{Plan, PlannedJob, plan};
