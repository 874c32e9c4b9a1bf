//! Why an attempt ended as it did: the structured `reason_data` beside an attempt's
//! human-readable `reason`, written by the agent (its report) or the coordinator (limits
//! and lost agents), stored as JSON text by the store and served by the REST API.
//!
//! The JSON is an object tagged by `kind`, the shape it had when it was built by hand:
//! `{"kind": "exit_status", "step": 1, "stage": "test", "command": "make check",
//! "exit_code": 2}`. Rows written by older or newer versions may carry kinds this
//! version does not know, or known kinds with other fields; they are read as
//! [`ReasonData::Other`] and written back unchanged, so a read never fails on them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The step a step-level reason is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRef {
    /// 0-based index of the step in the task.
    pub step: usize,
    /// The step's stage (`configure`, `build`, `test`, …).
    pub stage: String,
    /// The step's command line.
    pub command: String,
}

/// How a runtime limit came about (`basis` of [`ReasonData::RuntimeThreshold`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum RuntimeBasis {
    /// The task's own `max_runtime`, set by an admin.
    MaxRuntime {
        max_runtime_ms: u64,
        timeout_scale: f64,
    },
    /// `factor` × the p95 of the task key's history.
    History {
        task_key: String,
        runs: i64,
        p95_ms: f64,
        mean_ms: f64,
        factor: f64,
        timeout_scale: f64,
    },
}

/// Structured details of an attempt's reason, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReasonData {
    /// The work item had no steps (a coordinator that is not testfleet's).
    NoSteps,
    /// The agent could not create the run directory.
    RunDir,
    /// The checkout failed.
    Checkout,
    /// The input tree could not be materialized.
    Inputs,
    /// A step could not be started.
    Spawn,
    /// A step exited with a non-zero status.
    ExitStatus {
        #[serde(flatten)]
        step: StepRef,
        exit_code: i32,
    },
    /// A step was killed by a signal.
    Signal {
        #[serde(flatten)]
        step: StepRef,
        signal: i32,
    },
    /// A step ran past its timeout and was killed.
    StepTimeout {
        #[serde(flatten)]
        step: StepRef,
        timeout_s: u64,
        /// The agent's 1-minute load average when the step was stopped.
        agent_load: Option<f64>,
    },
    /// A step printed nothing for the silence timeout and was killed.
    Silence {
        #[serde(flatten)]
        step: StepRef,
        silence_timeout_s: u64,
        agent_load: Option<f64>,
    },
    /// A step was cancelled.
    Cancelled {
        #[serde(flatten)]
        step: StepRef,
    },
    /// Test programs crashed (per the parsed result files).
    Crashed { count: usize },
    /// Test cases failed (per the parsed result files).
    TestFailures { count: usize },
    /// The coordinator stopped the attempt at its runtime limit.
    RuntimeThreshold {
        elapsed_ms: i64,
        limit_ms: i64,
        basis: RuntimeBasis,
        agent_load: Option<f64>,
    },
    /// The attempt's agent was gone for longer than the lease.
    LeaseExpired,
    /// A kind this version does not know, or a known kind whose fields do not fit:
    /// the whole object, `kind` included, kept as it was.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

/// The kinds of [`ReasonData`] this version knows, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    NoSteps,
    RunDir,
    Checkout,
    Inputs,
    Spawn,
    ExitStatus,
    Signal,
    StepTimeout,
    Silence,
    Cancelled,
    Crashed,
    TestFailures,
    RuntimeThreshold,
    LeaseExpired,
}

impl ReasonKind {
    /// Every known kind.
    pub const ALL: [ReasonKind; 14] = [
        ReasonKind::NoSteps,
        ReasonKind::RunDir,
        ReasonKind::Checkout,
        ReasonKind::Inputs,
        ReasonKind::Spawn,
        ReasonKind::ExitStatus,
        ReasonKind::Signal,
        ReasonKind::StepTimeout,
        ReasonKind::Silence,
        ReasonKind::Cancelled,
        ReasonKind::Crashed,
        ReasonKind::TestFailures,
        ReasonKind::RuntimeThreshold,
        ReasonKind::LeaseExpired,
    ];

    /// The kinds that mean a threshold stopped the attempt (a step's timeout, its
    /// silence, the coordinator's runtime limit, an expired lease).
    pub const THRESHOLDS: [ReasonKind; 4] = [
        ReasonKind::StepTimeout,
        ReasonKind::Silence,
        ReasonKind::RuntimeThreshold,
        ReasonKind::LeaseExpired,
    ];

    /// The `kind` value in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::NoSteps => "no_steps",
            ReasonKind::RunDir => "run_dir",
            ReasonKind::Checkout => "checkout",
            ReasonKind::Inputs => "inputs",
            ReasonKind::Spawn => "spawn",
            ReasonKind::ExitStatus => "exit_status",
            ReasonKind::Signal => "signal",
            ReasonKind::StepTimeout => "step_timeout",
            ReasonKind::Silence => "silence",
            ReasonKind::Cancelled => "cancelled",
            ReasonKind::Crashed => "crashed",
            ReasonKind::TestFailures => "test_failures",
            ReasonKind::RuntimeThreshold => "runtime_threshold",
            ReasonKind::LeaseExpired => "lease_expired",
        }
    }
}

impl std::fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ReasonData {
    /// The known kind, or `None` for [`ReasonData::Other`].
    pub fn kind(&self) -> Option<ReasonKind> {
        Some(match self {
            ReasonData::NoSteps => ReasonKind::NoSteps,
            ReasonData::RunDir => ReasonKind::RunDir,
            ReasonData::Checkout => ReasonKind::Checkout,
            ReasonData::Inputs => ReasonKind::Inputs,
            ReasonData::Spawn => ReasonKind::Spawn,
            ReasonData::ExitStatus { .. } => ReasonKind::ExitStatus,
            ReasonData::Signal { .. } => ReasonKind::Signal,
            ReasonData::StepTimeout { .. } => ReasonKind::StepTimeout,
            ReasonData::Silence { .. } => ReasonKind::Silence,
            ReasonData::Cancelled { .. } => ReasonKind::Cancelled,
            ReasonData::Crashed { .. } => ReasonKind::Crashed,
            ReasonData::TestFailures { .. } => ReasonKind::TestFailures,
            ReasonData::RuntimeThreshold { .. } => ReasonKind::RuntimeThreshold,
            ReasonData::LeaseExpired => ReasonKind::LeaseExpired,
            ReasonData::Other(_) => return None,
        })
    }

    /// The `kind` as written in the JSON, for any variant (`Other`'s own, if it has one).
    pub fn kind_str(&self) -> Option<&str> {
        match self {
            ReasonData::Other(map) => map.get("kind").and_then(Value::as_str),
            known => known.kind().map(ReasonKind::as_str),
        }
    }

    /// The JSON text the store keeps.
    pub fn to_json_text(&self) -> String {
        // Serializing plain data with string keys cannot fail; `{}` is never reached.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn step() -> StepRef {
        StepRef {
            step: 1,
            stage: "test".into(),
            command: "make check".into(),
        }
    }

    /// One value of every known kind and the JSON it has always had.
    fn samples() -> Vec<(ReasonData, Value)> {
        vec![
            (ReasonData::NoSteps, json!({"kind": "no_steps"})),
            (ReasonData::RunDir, json!({"kind": "run_dir"})),
            (ReasonData::Checkout, json!({"kind": "checkout"})),
            (ReasonData::Inputs, json!({"kind": "inputs"})),
            (ReasonData::Spawn, json!({"kind": "spawn"})),
            (
                ReasonData::ExitStatus {
                    step: step(),
                    exit_code: 2,
                },
                json!({"kind": "exit_status", "step": 1, "stage": "test", "command": "make check", "exit_code": 2}),
            ),
            (
                ReasonData::Signal {
                    step: step(),
                    signal: 11,
                },
                json!({"kind": "signal", "step": 1, "stage": "test", "command": "make check", "signal": 11}),
            ),
            (
                ReasonData::StepTimeout {
                    step: step(),
                    timeout_s: 60,
                    agent_load: Some(1.5),
                },
                json!({"kind": "step_timeout", "step": 1, "stage": "test", "command": "make check",
                       "timeout_s": 60, "agent_load": 1.5}),
            ),
            (
                ReasonData::Silence {
                    step: step(),
                    silence_timeout_s: 30,
                    agent_load: None,
                },
                json!({"kind": "silence", "step": 1, "stage": "test", "command": "make check",
                       "silence_timeout_s": 30, "agent_load": null}),
            ),
            (
                ReasonData::Cancelled { step: step() },
                json!({"kind": "cancelled", "step": 1, "stage": "test", "command": "make check"}),
            ),
            (
                ReasonData::Crashed { count: 2 },
                json!({"kind": "crashed", "count": 2}),
            ),
            (
                ReasonData::TestFailures { count: 3 },
                json!({"kind": "test_failures", "count": 3}),
            ),
            (
                ReasonData::RuntimeThreshold {
                    elapsed_ms: 5000,
                    limit_ms: 4000,
                    basis: RuntimeBasis::MaxRuntime {
                        max_runtime_ms: 4000,
                        timeout_scale: 1.0,
                    },
                    agent_load: Some(0.25),
                },
                json!({"kind": "runtime_threshold", "elapsed_ms": 5000, "limit_ms": 4000,
                       "basis": {"source": "max_runtime", "max_runtime_ms": 4000, "timeout_scale": 1.0},
                       "agent_load": 0.25}),
            ),
            (
                ReasonData::RuntimeThreshold {
                    elapsed_ms: 9000,
                    limit_ms: 8000,
                    basis: RuntimeBasis::History {
                        task_key: "job/task".into(),
                        runs: 5,
                        p95_ms: 2000.0,
                        mean_ms: 1500.0,
                        factor: 4.0,
                        timeout_scale: 1.0,
                    },
                    agent_load: None,
                },
                json!({"kind": "runtime_threshold", "elapsed_ms": 9000, "limit_ms": 8000,
                       "basis": {"source": "history", "task_key": "job/task", "runs": 5, "p95_ms": 2000.0,
                                 "mean_ms": 1500.0, "factor": 4.0, "timeout_scale": 1.0},
                       "agent_load": null}),
            ),
            (ReasonData::LeaseExpired, json!({"kind": "lease_expired"})),
        ]
    }

    #[test]
    fn every_kind_keeps_its_json_shape() {
        let samples = samples();
        let mut kinds: Vec<ReasonKind> = Vec::new();
        for (data, want) in samples {
            assert_eq!(serde_json::to_value(&data).expect("to json"), want);
            let back: ReasonData = serde_json::from_value(want.clone()).expect("from json");
            assert_eq!(back, data, "{want}");
            let text: ReasonData = serde_json::from_str(&data.to_json_text()).expect("text");
            assert_eq!(text, data);
            let kind = data.kind().expect("known");
            assert_eq!(Some(kind.as_str()), want["kind"].as_str());
            assert_eq!(data.kind_str(), Some(kind.as_str()));
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        assert_eq!(
            kinds,
            ReasonKind::ALL.to_vec(),
            "a sample per kind, in order"
        );
    }

    #[test]
    fn unknown_kinds_and_odd_fields_are_kept_as_they_were() {
        for old in [
            json!({"kind": "from_the_future", "detail": [1, 2]}),
            // A known kind with a field of another type.
            json!({"kind": "crashed", "count": "many"}),
            json!({"no_kind": true}),
        ] {
            let data: ReasonData = serde_json::from_value(old.clone()).expect("never fails");
            assert!(matches!(data, ReasonData::Other(_)), "{data:?}");
            assert_eq!(data.kind(), None);
            assert_eq!(serde_json::to_value(&data).expect("to json"), old);
        }
        let data: ReasonData =
            serde_json::from_str(r#"{"kind": "from_the_future"}"#).expect("never fails");
        assert_eq!(data.kind_str(), Some("from_the_future"));
        // Not an object at all is an error the caller reports.
        let odd = serde_json::from_str::<ReasonData>("\"text\"");
        assert!(odd.is_err(), "{odd:?}");
    }

    #[test]
    fn threshold_kinds_are_known_kinds() {
        for k in ReasonKind::THRESHOLDS {
            assert!(ReasonKind::ALL.contains(&k));
        }
        assert_eq!(
            ReasonKind::THRESHOLDS.map(ReasonKind::as_str),
            [
                "step_timeout",
                "silence",
                "runtime_threshold",
                "lease_expired"
            ]
        );
    }
}
