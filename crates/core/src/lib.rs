//! testfleet's pure core: the job model, the job-file grammar, task and attempt
//! state machines and the label matching used by the scheduler.
//!
//! Nothing in this crate does IO or depends on a runtime, so every rule here is
//! tested with plain unit tests (see ARCHITECTURE.md, "core does no IO").

pub mod analysis;
pub mod job;
pub mod labels;
pub mod state;
pub mod stats;
pub mod time_fmt;
pub mod trigger;

pub use job::{JobSpec, JobSpecError, StepSpec, TaskSpec};
pub use labels::{LabelSet, Requirement, Requirements};
pub use state::{AttemptOutcome, JobState, Stage, TaskState};
