//! How a run ended, decided: from what the steps did (exit status, signal, timeout,
//! silence, cancel, failure to start) and what the parsed result files say, to the
//! attempt's outcome, its reason and its [`ReasonData`]. Pure: the runner measures
//! (the agent's load, the results) and this module decides.

use testfleet_core::AttemptOutcome;
use testfleet_core::job::StepSpec;
use testfleet_wire::reason::{ReasonData, StepRef};
use testfleet_wire::results::Results;

use crate::process::StepEnd;

/// What went wrong before any step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The run directory (or the checkout directory in it) could not be created.
    RunDir,
    /// The source checkout failed.
    Checkout,
    /// The input tree could not be materialized.
    Inputs,
}

/// How a run ended, as far as the steps go.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd<'a> {
    /// The work item had no steps.
    NoSteps,
    /// Preparing the run failed; `message` says how.
    Setup { stage: Setup, message: String },
    /// Step `index` ended other than with status 0 and the run stopped there.
    Step {
        index: usize,
        step: &'a StepSpec,
        end: &'a StepEnd,
        /// The work item's silence timeout, in seconds (0 when it has none).
        silence_timeout_s: u64,
        /// The agent's load average when the step ended.
        agent_load: Option<f64>,
    },
    /// Every step exited with status 0.
    StepsPassed,
}

/// What the parsed result files say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultCounts {
    /// Cases that failed (`fail`, `xpass`, errors, crashes).
    pub failing: usize,
    /// Test programs that crashed.
    pub crashed: usize,
}

impl ResultCounts {
    pub fn of(results: &[Results]) -> ResultCounts {
        ResultCounts {
            failing: results
                .iter()
                .flat_map(|r| &r.suites)
                .flat_map(|s| &s.cases)
                .filter(|c| c.is_failure())
                .count(),
            crashed: results.iter().map(|r| r.crashed.len()).sum(),
        }
    }
}

/// The decision: the attempt's outcome, why, and the line for the run's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: AttemptOutcome,
    /// A short reason when the outcome is not `passed`.
    pub reason: Option<String>,
    pub reason_data: Option<ReasonData>,
    /// What the run's log says about the end (`None`: nothing to add).
    pub log: Option<String>,
}

/// Whether the result files are still worth parsing after a step ended so: a step
/// that exited or was killed by a signal may have written them; a step stopped by a
/// limit or a cancel, or one that never started, has not finished writing them.
pub fn parses_results(end: &RunEnd<'_>) -> bool {
    match end {
        RunEnd::StepsPassed => true,
        RunEnd::Step { end, .. } => matches!(end, StepEnd::Exited(_) | StepEnd::Signalled(_)),
        RunEnd::NoSteps | RunEnd::Setup { .. } => false,
    }
}

/// Decides how the run ended. `counts` only matters once every step passed.
pub fn classify(end: RunEnd<'_>, counts: ResultCounts) -> Verdict {
    match end {
        RunEnd::NoSteps => Verdict {
            outcome: AttemptOutcome::InfraError,
            reason: Some("the work item has no steps (is this a testfleet coordinator?)".into()),
            reason_data: Some(ReasonData::NoSteps),
            log: None,
        },
        RunEnd::Setup { stage, message } => Verdict {
            outcome: AttemptOutcome::InfraError,
            reason: Some(message.clone()),
            reason_data: Some(match stage {
                Setup::RunDir => ReasonData::RunDir,
                Setup::Checkout => ReasonData::Checkout,
                Setup::Inputs => ReasonData::Inputs,
            }),
            log: Some(message),
        },
        RunEnd::Step {
            index,
            step,
            end,
            silence_timeout_s,
            agent_load,
        } => step_verdict(index, step, end, silence_timeout_s, agent_load),
        RunEnd::StepsPassed => results_verdict(counts),
    }
}

fn step_verdict(
    index: usize,
    step: &StepSpec,
    end: &StepEnd,
    silence_timeout_s: u64,
    agent_load: Option<f64>,
) -> Verdict {
    let at = || StepRef {
        step: index,
        stage: step.stage.as_str().to_owned(),
        command: step.run.clone(),
    };
    let failed = |outcome, msg: String, data| Verdict {
        outcome,
        reason: Some(msg.clone()),
        reason_data: Some(data),
        log: Some(msg),
    };
    let (run, stage) = (&step.run, step.stage);
    match end {
        // Not an end that stops the run; said for completeness.
        StepEnd::Exited(0) => results_verdict(ResultCounts::default()),
        StepEnd::Exited(code) => failed(
            AttemptOutcome::Failed,
            format!("step `{run}` ({stage}) exited with status {code}"),
            ReasonData::ExitStatus {
                step: at(),
                exit_code: *code,
            },
        ),
        StepEnd::Signalled(sig) => failed(
            AttemptOutcome::Crashed,
            format!("step `{run}` ({stage}) was killed by signal {sig}"),
            ReasonData::Signal {
                step: at(),
                signal: *sig,
            },
        ),
        StepEnd::TimedOut => {
            let timeout_s = step.timeout.0.as_secs();
            failed(
                AttemptOutcome::TimedOut,
                format!(
                    "step `{run}` ({stage}) timed out after {timeout_s}s; its process tree was killed"
                ),
                ReasonData::StepTimeout {
                    step: at(),
                    timeout_s,
                    agent_load,
                },
            )
        }
        StepEnd::Silent => failed(
            AttemptOutcome::Stalled,
            format!(
                "stalled: step `{run}` ({stage}) printed nothing for {silence_timeout_s}s; its process tree was killed"
            ),
            ReasonData::Silence {
                step: at(),
                silence_timeout_s,
                agent_load,
            },
        ),
        StepEnd::Cancelled => Verdict {
            outcome: AttemptOutcome::Cancelled,
            reason: Some("cancelled".into()),
            reason_data: Some(ReasonData::Cancelled { step: at() }),
            log: Some("cancelled; the step's process tree was killed".into()),
        },
        StepEnd::SpawnFailed(e) => failed(
            AttemptOutcome::InfraError,
            format!("failed to start step `{run}`: {e}"),
            ReasonData::Spawn,
        ),
    }
}

fn results_verdict(counts: ResultCounts) -> Verdict {
    let verdict = |outcome, msg: String, data| Verdict {
        outcome,
        reason: Some(msg),
        reason_data: Some(data),
        log: None,
    };
    if counts.crashed > 0 {
        return verdict(
            AttemptOutcome::Crashed,
            format!("{} test program(s) crashed", counts.crashed),
            ReasonData::Crashed {
                count: counts.crashed,
            },
        );
    }
    if counts.failing > 0 {
        return verdict(
            AttemptOutcome::Failed,
            format!("{} test case(s) failed", counts.failing),
            ReasonData::TestFailures {
                count: counts.failing,
            },
        );
    }
    Verdict {
        outcome: AttemptOutcome::Passed,
        reason: None,
        reason_data: None,
        log: None,
    }
}

/// How bad an outcome is, to pick the worst of a task's repetitions: a stopped
/// run (cancelled, infrastructure, limits) outweighs a crash, a crash a failure.
fn severity(outcome: AttemptOutcome) -> u8 {
    match outcome {
        AttemptOutcome::Passed => 0,
        AttemptOutcome::Flaky => 1,
        AttemptOutcome::Failed => 2,
        AttemptOutcome::Crashed => 3,
        AttemptOutcome::TimedOut => 4,
        AttemptOutcome::Stalled => 5,
        AttemptOutcome::InfraError => 6,
        AttemptOutcome::Cancelled => 7,
    }
}

/// The verdict of an attempt whose test steps ran more than once
/// (`repeat = N`): the worst of its repetitions' verdicts, the first of
/// equally bad ones; `None` when there were none.
pub fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Option<Verdict> {
    verdicts.into_iter().fold(None, |worst, v| match worst {
        Some(w) if severity(w.outcome) >= severity(v.outcome) => Some(w),
        _ => Some(v),
    })
}

#[cfg(test)]
mod tests {
    use testfleet_wire::results::{Case, CaseOutcome, CrashedTest, Suite};

    use super::*;

    fn step() -> StepSpec {
        serde_json::from_value(serde_json::json!({
            "run": "make check", "stage": "test", "timeout": "90s"
        }))
        .expect("step")
    }

    fn at() -> StepRef {
        StepRef {
            step: 2,
            stage: "test".into(),
            command: "make check".into(),
        }
    }

    fn on_step(end: &StepEnd) -> Verdict {
        let step = step();
        classify(
            RunEnd::Step {
                index: 2,
                step: &step,
                end,
                silence_timeout_s: 30,
                agent_load: Some(1.25),
            },
            // Counts never change a step's verdict.
            ResultCounts {
                failing: 5,
                crashed: 1,
            },
        )
    }

    #[test]
    fn no_steps_is_an_infrastructure_error() {
        let v = classify(RunEnd::NoSteps, ResultCounts::default());
        assert_eq!(v.outcome, AttemptOutcome::InfraError);
        assert_eq!(v.reason_data, Some(ReasonData::NoSteps));
        assert!(v.reason.expect("reason").contains("no steps"));
    }

    #[test]
    fn setup_failures_name_their_stage() {
        for (stage, data) in [
            (Setup::RunDir, ReasonData::RunDir),
            (Setup::Checkout, ReasonData::Checkout),
            (Setup::Inputs, ReasonData::Inputs),
        ] {
            let v = classify(
                RunEnd::Setup {
                    stage,
                    message: "checkout failed: no such repo".into(),
                },
                ResultCounts::default(),
            );
            assert_eq!(v.outcome, AttemptOutcome::InfraError);
            assert_eq!(v.reason.as_deref(), Some("checkout failed: no such repo"));
            assert_eq!(v.log, v.reason);
            assert_eq!(v.reason_data, Some(data));
        }
    }

    #[test]
    fn non_zero_exit_fails() {
        let v = on_step(&StepEnd::Exited(2));
        assert_eq!(v.outcome, AttemptOutcome::Failed);
        assert_eq!(
            v.reason.as_deref(),
            Some("step `make check` (test) exited with status 2")
        );
        assert_eq!(
            v.reason_data,
            Some(ReasonData::ExitStatus {
                step: at(),
                exit_code: 2
            })
        );
    }

    #[test]
    fn signal_is_a_crash() {
        let v = on_step(&StepEnd::Signalled(11));
        assert_eq!(v.outcome, AttemptOutcome::Crashed);
        assert_eq!(
            v.reason.as_deref(),
            Some("step `make check` (test) was killed by signal 11")
        );
        assert_eq!(
            v.reason_data,
            Some(ReasonData::Signal {
                step: at(),
                signal: 11
            })
        );
    }

    #[test]
    fn timeout_keeps_the_limit_and_the_load() {
        let v = on_step(&StepEnd::TimedOut);
        assert_eq!(v.outcome, AttemptOutcome::TimedOut);
        assert!(
            v.reason
                .as_deref()
                .expect("reason")
                .contains("timed out after 90s")
        );
        assert_eq!(
            v.reason_data,
            Some(ReasonData::StepTimeout {
                step: at(),
                timeout_s: 90,
                agent_load: Some(1.25)
            })
        );
    }

    #[test]
    fn silence_is_stalled() {
        let v = on_step(&StepEnd::Silent);
        assert_eq!(v.outcome, AttemptOutcome::Stalled);
        assert!(
            v.reason
                .as_deref()
                .expect("reason")
                .starts_with("stalled: step `make check` (test) printed nothing for 30s")
        );
        assert_eq!(
            v.reason_data,
            Some(ReasonData::Silence {
                step: at(),
                silence_timeout_s: 30,
                agent_load: Some(1.25)
            })
        );
    }

    #[test]
    fn cancel_has_its_own_log_line() {
        let v = on_step(&StepEnd::Cancelled);
        assert_eq!(v.outcome, AttemptOutcome::Cancelled);
        assert_eq!(v.reason.as_deref(), Some("cancelled"));
        assert_eq!(
            v.log.as_deref(),
            Some("cancelled; the step's process tree was killed")
        );
        assert_eq!(v.reason_data, Some(ReasonData::Cancelled { step: at() }));
    }

    #[test]
    fn spawn_failure_is_an_infrastructure_error() {
        let v = on_step(&StepEnd::SpawnFailed("no sh".into()));
        assert_eq!(v.outcome, AttemptOutcome::InfraError);
        assert_eq!(
            v.reason.as_deref(),
            Some("failed to start step `make check`: no sh")
        );
        assert_eq!(v.reason_data, Some(ReasonData::Spawn));
    }

    #[test]
    fn passed_steps_are_judged_by_their_results() {
        let v = classify(RunEnd::StepsPassed, ResultCounts::default());
        assert_eq!(
            (v.outcome, v.reason, v.reason_data),
            (AttemptOutcome::Passed, None, None)
        );
        let v = classify(
            RunEnd::StepsPassed,
            ResultCounts {
                failing: 3,
                crashed: 0,
            },
        );
        assert_eq!(v.outcome, AttemptOutcome::Failed);
        assert_eq!(v.reason.as_deref(), Some("3 test case(s) failed"));
        assert_eq!(v.reason_data, Some(ReasonData::TestFailures { count: 3 }));
        // A crash outweighs failures.
        let v = classify(
            RunEnd::StepsPassed,
            ResultCounts {
                failing: 3,
                crashed: 1,
            },
        );
        assert_eq!(v.outcome, AttemptOutcome::Crashed);
        assert_eq!(v.reason.as_deref(), Some("1 test program(s) crashed"));
        assert_eq!(v.reason_data, Some(ReasonData::Crashed { count: 1 }));
    }

    #[test]
    fn results_are_parsed_only_after_steps_that_finished_writing() {
        let step = step();
        let ended = |end: &StepEnd| {
            parses_results(&RunEnd::Step {
                index: 0,
                step: &step,
                end,
                silence_timeout_s: 0,
                agent_load: None,
            })
        };
        assert!(ended(&StepEnd::Exited(1)));
        assert!(ended(&StepEnd::Signalled(6)));
        assert!(!ended(&StepEnd::TimedOut));
        assert!(!ended(&StepEnd::Silent));
        assert!(!ended(&StepEnd::Cancelled));
        assert!(!ended(&StepEnd::SpawnFailed("x".into())));
        assert!(parses_results(&RunEnd::StepsPassed));
        assert!(!parses_results(&RunEnd::NoSteps));
    }

    #[test]
    fn the_worst_repetition_decides() {
        let passed = classify(RunEnd::StepsPassed, ResultCounts::default());
        let failing = |n| {
            classify(
                RunEnd::StepsPassed,
                ResultCounts {
                    failing: n,
                    crashed: 0,
                },
            )
        };
        assert_eq!(worst(Vec::new()), None);
        assert_eq!(
            worst([passed.clone(), passed.clone()]),
            Some(passed.clone())
        );
        // The first of equally bad repetitions keeps its reason.
        let got = worst([passed.clone(), failing(2), failing(5), passed.clone()]);
        assert_eq!(
            got.map(|v| v.reason),
            Some(Some("2 test case(s) failed".into()))
        );
        let got = worst([failing(1), on_step(&StepEnd::Signalled(11)), passed]);
        assert_eq!(got.map(|v| v.outcome), Some(AttemptOutcome::Crashed));
        let got = worst([on_step(&StepEnd::Cancelled), on_step(&StepEnd::TimedOut)]);
        assert_eq!(got.map(|v| v.outcome), Some(AttemptOutcome::Cancelled));
    }

    #[test]
    fn counts_come_from_cases_and_crashes() {
        let mut suite = Suite::new("s");
        for outcome in [CaseOutcome::Pass, CaseOutcome::Fail, CaseOutcome::Xfail] {
            let mut c = Case::new("f", None);
            c.outcome = outcome;
            suite.cases.push(c);
        }
        let mut r = Results::new("qtest-txt");
        r.suites.push(suite);
        r.crashed.push(CrashedTest {
            test_name: "tst_X".into(),
            function: Some("f".into()),
            log: String::new(),
        });
        assert_eq!(
            ResultCounts::of(&[r.clone(), r]),
            ResultCounts {
                failing: 2,
                crashed: 2
            }
        );
    }
}
