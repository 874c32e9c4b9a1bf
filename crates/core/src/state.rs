//! States of tasks, attempts and jobs, and the stages an agent reports.
//!
//! The string forms are part of the REST API and the agent protocol; they are
//! written once here and parsed back with `FromStr`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad` so that width and alignment flags work in tables.
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        kind: stringify!($name),
                        given: s.to_owned(),
                        expected: vec![$($text),+],
                    }),
                }
            }
        }
    };
}

/// A name that is not one of an enum's documented spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{given}`, expected one of: {}", expected.join(", "))]
pub struct UnknownName {
    pub kind: &'static str,
    pub given: String,
    pub expected: Vec<&'static str>,
}

string_enum! {
    /// The seed-000 status an agent reports. `Done` and `Error` end the agent's
    /// part of a work item.
    Stage {
        New => "new",
        Git => "git",
        Configure => "configure",
        Build => "build",
        Test => "test",
        Results => "results",
        Done => "done",
        Idle => "idle",
        Error => "error",
    }
}

impl Stage {
    /// Where a stage sits in the run; statuses that do not advance a run
    /// (`idle`) have no rank.
    pub fn rank(self) -> Option<u8> {
        match self {
            Stage::New => Some(0),
            Stage::Git => Some(1),
            Stage::Configure => Some(2),
            Stage::Build => Some(3),
            Stage::Test => Some(4),
            Stage::Results => Some(5),
            Stage::Done | Stage::Error => Some(6),
            Stage::Idle => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Stage::Done | Stage::Error)
    }
}

string_enum! {
    /// The stages a job file may name for a step (`git`, `new` and `done` are
    /// the agent's own).
    StepStage {
        Configure => "configure",
        Build => "build",
        Test => "test",
        Results => "results",
    }
}

impl From<StepStage> for Stage {
    fn from(s: StepStage) -> Stage {
        match s {
            StepStage::Configure => Stage::Configure,
            StepStage::Build => Stage::Build,
            StepStage::Test => Stage::Test,
            StepStage::Results => Stage::Results,
        }
    }
}

string_enum! {
    /// How one attempt (one run of a task on one agent) ended.
    AttemptOutcome {
        Passed => "passed",
        Failed => "failed",
        Flaky => "flaky",
        TimedOut => "timed_out",
        Stalled => "stalled",
        Crashed => "crashed",
        InfraError => "infra_error",
        Cancelled => "cancelled",
    }
}

impl AttemptOutcome {
    /// Infrastructure failures draw on the infra retry budget; everything
    /// else that is not a pass draws on the test budget.
    pub fn is_infra(self) -> bool {
        matches!(self, AttemptOutcome::InfraError)
    }

    pub fn is_success(self) -> bool {
        matches!(self, AttemptOutcome::Passed | AttemptOutcome::Flaky)
    }
}

string_enum! {
    /// Where a task is in its life.
    TaskState {
        Queued => "queued",
        Running => "running",
        Passed => "passed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Passed | TaskState::Failed | TaskState::Cancelled
        )
    }
}

string_enum! {
    /// A job's state, derived from its tasks.
    JobState {
        Queued => "queued",
        Running => "running",
        Passed => "passed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Passed | JobState::Failed | JobState::Cancelled
        )
    }

    /// The job's state follows from its tasks: running while any task is
    /// not finished, then failed if any failed, cancelled if any was
    /// cancelled, passed otherwise.
    pub fn from_tasks(tasks: impl IntoIterator<Item = TaskState>) -> JobState {
        let (mut any, mut queued, mut running, mut failed, mut cancelled) =
            (false, false, false, false, false);
        for t in tasks {
            any = true;
            match t {
                TaskState::Queued => queued = true,
                TaskState::Running => running = true,
                TaskState::Failed => failed = true,
                TaskState::Cancelled => cancelled = true,
                TaskState::Passed => {}
            }
        }
        if running || (queued && (failed || cancelled)) {
            JobState::Running
        } else if queued || !any {
            JobState::Queued
        } else if cancelled {
            JobState::Cancelled
        } else if failed {
            JobState::Failed
        } else {
            JobState::Passed
        }
    }
}

/// What the coordinator does after an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// Queue another attempt (a retry), with boosted priority.
    Retry,
    /// The task is finished in this state; `flaky` tells whether an earlier
    /// attempt failed before this one passed.
    Finish { state: TaskState, flaky: bool },
}

/// Retry budgets of a task and what it has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryUse {
    pub test_budget: u32,
    pub infra_budget: u32,
    pub test_failures_so_far: u32,
    pub infra_failures_so_far: u32,
}

/// Decides, from an attempt's outcome and the task's retry budgets (counts
/// exclude this attempt), whether to retry or finish the task.
pub fn after_attempt(outcome: AttemptOutcome, use_: RetryUse) -> AfterAttempt {
    match outcome {
        AttemptOutcome::Passed | AttemptOutcome::Flaky => AfterAttempt::Finish {
            state: TaskState::Passed,
            flaky: outcome == AttemptOutcome::Flaky || use_.test_failures_so_far > 0,
        },
        AttemptOutcome::Cancelled => AfterAttempt::Finish {
            state: TaskState::Cancelled,
            flaky: false,
        },
        AttemptOutcome::InfraError if use_.infra_failures_so_far < use_.infra_budget => {
            AfterAttempt::Retry
        }
        AttemptOutcome::InfraError => AfterAttempt::Finish {
            state: TaskState::Failed,
            flaky: false,
        },
        _ if use_.test_failures_so_far < use_.test_budget => AfterAttempt::Retry,
        _ => AfterAttempt::Finish {
            state: TaskState::Failed,
            flaky: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(*s));
        }
        let err = "deploy".parse::<StepStage>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown StepStage `deploy`, expected one of: configure, build, test, results"
        );
    }

    #[test]
    fn job_state_follows_tasks() {
        use TaskState::*;
        assert_eq!(JobState::from_tasks([Passed, Passed]), JobState::Passed);
        assert_eq!(JobState::from_tasks([Passed, Running]), JobState::Running);
        assert_eq!(JobState::from_tasks([Queued, Queued]), JobState::Queued);
        assert_eq!(JobState::from_tasks([Failed, Passed]), JobState::Failed);
        assert_eq!(JobState::from_tasks([Failed, Queued]), JobState::Running);
        assert_eq!(
            JobState::from_tasks([Cancelled, Failed]),
            JobState::Cancelled
        );
    }

    #[test]
    fn retries_use_separate_budgets() {
        let budget = RetryUse {
            test_budget: 1,
            infra_budget: 2,
            ..Default::default()
        };
        assert_eq!(
            after_attempt(AttemptOutcome::Failed, budget),
            AfterAttempt::Retry
        );
        let used = RetryUse {
            test_failures_so_far: 1,
            ..budget
        };
        assert_eq!(
            after_attempt(AttemptOutcome::Failed, used),
            AfterAttempt::Finish {
                state: TaskState::Failed,
                flaky: false
            }
        );
        // Test failures do not use up the infra budget.
        assert_eq!(
            after_attempt(AttemptOutcome::InfraError, used),
            AfterAttempt::Retry
        );
        assert_eq!(
            after_attempt(AttemptOutcome::Passed, used),
            AfterAttempt::Finish {
                state: TaskState::Passed,
                flaky: true
            }
        );
        let infra_spent = RetryUse {
            infra_failures_so_far: 2,
            ..budget
        };
        assert_eq!(
            after_attempt(AttemptOutcome::InfraError, infra_spent),
            AfterAttempt::Finish {
                state: TaskState::Failed,
                flaky: false
            }
        );
    }
}
