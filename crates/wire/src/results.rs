//! The normalized results model (see docs/results-model.md).
//!
//! Every parser in `testfleet-formats` (QtTest, TAP, JUnit, Google Benchmark) produces
//! these types, and every consumer (store, InfluxDB exporter, ResultsDB API, reports)
//! reads only them, so a new input format never touches the consumers.

use serde::{Deserialize, Serialize};

/// Everything parsed from one result file (or stream).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Results {
    /// Canonical name of the format it was parsed from (e.g. `qtest-xml`, `tap`).
    pub format: String,
    pub suites: Vec<Suite>,
    /// Test programs (or functions) that crashed, with the output kept for review.
    pub crashed: Vec<CrashedTest>,
    /// False when the input stopped before its natural end (crash, truncation,
    /// `Bail out!`, missing plan) or was malformed part-way.
    pub complete: bool,
    /// Human-readable notes about anything odd met while parsing.
    pub warnings: Vec<String>,
    /// Which run of a `repeat = N` task produced these results (0 for the
    /// first, and for tasks run once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repetition: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A crashed test program: the function that was running, when known, and its last output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct CrashedTest {
    pub test_name: String,
    pub function: Option<String>,
    pub log: String,
}

/// One test program / test suite.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
    /// Free-form key/value pairs: `QtVersion`, JUnit `<property>`s, TAP `bail_out`, …
    /// Kept in input order (a `Vec`, not a map) so snapshots and reports are stable.
    pub properties: Vec<Property>,
    /// Total duration in milliseconds, when the input gives one.
    pub duration_ms: Option<f64>,
}

/// A name/value pair attached to a suite.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Property {
    pub name: String,
    pub value: String,
}

/// The outcome of one case, after merging every incident reported for it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum CaseOutcome {
    Pass,
    /// Expected failure (QtTest `XFAIL`, TAP `not ok # TODO`).
    Xfail,
    Skip,
    /// Unexpected pass (QtTest `XPASS`, TAP `ok # TODO`).
    Xpass,
    Fail,
    /// Error outside the assertion itself (JUnit `<error>`).
    Error,
    /// The test program died while this case ran.
    Crash,
}

impl CaseOutcome {
    /// All outcomes, in severity order.
    pub const ALL: [CaseOutcome; 7] = [
        CaseOutcome::Pass,
        CaseOutcome::Xfail,
        CaseOutcome::Skip,
        CaseOutcome::Xpass,
        CaseOutcome::Fail,
        CaseOutcome::Error,
        CaseOutcome::Crash,
    ];

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseOutcome::Pass => "pass",
            CaseOutcome::Xfail => "xfail",
            CaseOutcome::Skip => "skip",
            CaseOutcome::Xpass => "xpass",
            CaseOutcome::Fail => "fail",
            CaseOutcome::Error => "error",
            CaseOutcome::Crash => "crash",
        }
    }

    /// Merges two incidents of the same case. The more severe one wins, which matches
    /// QtTest's counting: a skip after an expected failure counts as a skip, a failure
    /// after an unexpected pass stays a failure, and XFAIL followed by the function's
    /// closing PASS stays XFAIL.
    pub fn merge(self, other: CaseOutcome) -> CaseOutcome {
        self.max(other)
    }
}

impl std::fmt::Display for CaseOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Markers that qualify an outcome without changing it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseFlags {
    /// TAP `# TODO`: a failure here does not fail the run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub todo: bool,
    /// QtTest `BPASS`/`BFAIL`/`BXPASS`/`BXFAIL`: the case is on the blacklist, so
    /// its failures are not counted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub blacklisted: bool,
    /// Failed at first and passed on a rerun (Surefire/nextest `flakyFailure`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub flaky: bool,
    /// Stored message or log was cut to the per-case size limit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One failed attempt before the final one (Surefire/nextest rerun elements).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Rerun {
    /// `flaky_failure`, `flaky_error`, `rerun_failure` or `rerun_error`.
    pub kind: String,
    pub message: Option<String>,
    /// The failure's `type` attribute (e.g. an exception class).
    pub error_type: Option<String>,
    pub log: Option<String>,
    pub duration_ms: Option<f64>,
}

/// One test case: a test function, with its data tag when data-driven.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    /// QtTest data row (`global:local` when both global and local data exist).
    pub data_tag: Option<String>,
    /// JUnit `classname`, when it says more than the suite name.
    pub classname: Option<String>,
    pub outcome: CaseOutcome,
    pub flags: CaseFlags,
    pub duration_ms: Option<f64>,
    /// The short reason: the failure or skip message.
    pub message: Option<String>,
    /// Everything else the case printed (debug messages, stack traces, stdout/stderr),
    /// capped to a per-case limit.
    pub log: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub metrics: Vec<Metric>,
    pub reruns: Vec<Rerun>,
    /// Structured diagnostics (TAP YAML blocks).
    pub diagnostics: Option<serde_json::Value>,
}

impl Case {
    /// A passing case with nothing else known yet.
    pub fn new(name: impl Into<String>, data_tag: Option<String>) -> Case {
        Case {
            name: name.into(),
            data_tag,
            classname: None,
            outcome: CaseOutcome::Pass,
            flags: CaseFlags::default(),
            duration_ms: None,
            message: None,
            log: None,
            file: None,
            line: None,
            metrics: Vec::new(),
            reruns: Vec::new(),
            diagnostics: None,
        }
    }

    /// True when this case should fail the run: failures, errors and crashes, and
    /// unexpected passes unless they are TAP TODO points (a TODO that passes is a bonus,
    /// while a QtTest `XPASS` is a failure). Blacklisted cases never fail the run.
    pub fn is_failure(&self) -> bool {
        if self.flags.blacklisted {
            return false;
        }
        match self.outcome {
            CaseOutcome::Fail | CaseOutcome::Error | CaseOutcome::Crash => !self.flags.todo,
            CaseOutcome::Xpass => !self.flags.todo,
            CaseOutcome::Pass | CaseOutcome::Xfail | CaseOutcome::Skip => false,
        }
    }

    /// `name(tag)` as QtTest prints it, or just the name.
    pub fn display_name(&self) -> String {
        match &self.data_tag {
            Some(tag) => format!("{}({})", self.name, tag),
            None => self.name.clone(),
        }
    }
}

/// One benchmark measurement.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Metric {
    /// QtTest metric name (`WalltimeMilliseconds`, `CPUTicks`, `InstructionReads`,
    /// `Events`, …) or Google Benchmark's `real_time`/`cpu_time`/counter name.
    pub name: String,
    /// Unit as a person reads it (`msecs`, `ticks`, `instr. loads`, `events`, `ns`).
    pub unit: String,
    /// Value per iteration.
    pub value: f64,
    /// Sum over all iterations, when the input gives it.
    pub total: Option<f64>,
    pub iterations: Option<u64>,
    pub variance: Option<f64>,
}

/// How many cases ended with each outcome.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutcomeCounts {
    pub pass: u64,
    pub fail: u64,
    pub error: u64,
    pub skip: u64,
    pub xfail: u64,
    pub xpass: u64,
    pub crash: u64,
    /// Blacklisted cases that were not skipped (QtTest's own `blacklisted` total: a skip
    /// after a blacklisted expected failure counts as a skip).
    pub blacklisted: u64,
    /// Cases that carry the flaky flag.
    pub flaky: u64,
}

impl OutcomeCounts {
    /// Number of cases counted.
    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.error + self.skip + self.xfail + self.xpass + self.crash
    }

    fn add(&mut self, case: &Case) {
        match case.outcome {
            CaseOutcome::Pass => self.pass += 1,
            CaseOutcome::Fail => self.fail += 1,
            CaseOutcome::Error => self.error += 1,
            CaseOutcome::Skip => self.skip += 1,
            CaseOutcome::Xfail => self.xfail += 1,
            CaseOutcome::Xpass => self.xpass += 1,
            CaseOutcome::Crash => self.crash += 1,
        }
        if case.flags.blacklisted && case.outcome != CaseOutcome::Skip {
            self.blacklisted += 1;
        }
        if case.flags.flaky {
            self.flaky += 1;
        }
    }
}

impl Suite {
    /// A suite with no cases yet.
    pub fn new(name: impl Into<String>) -> Suite {
        Suite {
            name: name.into(),
            ..Suite::default()
        }
    }

    /// Value of the first property with this name.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }

    /// Counts per outcome over this suite's cases.
    pub fn counts(&self) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for case in &self.cases {
            counts.add(case);
        }
        counts
    }
}

impl Results {
    /// An empty, complete result set for the given format name.
    pub fn new(format: impl Into<String>) -> Results {
        Results {
            format: format.into(),
            complete: true,
            ..Results::default()
        }
    }

    /// Counts per outcome over every suite.
    pub fn counts(&self) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for case in self.cases() {
            counts.add(case);
        }
        counts
    }

    /// Every case of every suite, in order.
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.suites.iter().flat_map(|s| s.cases.iter())
    }

    /// True when nothing failed, nothing crashed and the input was complete.
    pub fn passed(&self) -> bool {
        self.complete && self.crashed.is_empty() && !self.cases().any(Case::is_failure)
    }

    /// Number of benchmark metrics over every case.
    pub fn metric_count(&self) -> usize {
        self.cases().map(|c| c.metrics.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_serializes_snake_case() {
        let json = serde_json::to_string(&CaseOutcome::Xpass).expect("serialize");
        assert_eq!(json, "\"xpass\"");
        let back: CaseOutcome = serde_json::from_str("\"crash\"").expect("deserialize");
        assert_eq!(back, CaseOutcome::Crash);
    }

    #[test]
    fn merge_keeps_the_more_severe_outcome() {
        assert_eq!(
            CaseOutcome::Xfail.merge(CaseOutcome::Pass),
            CaseOutcome::Xfail
        );
        assert_eq!(
            CaseOutcome::Xfail.merge(CaseOutcome::Skip),
            CaseOutcome::Skip
        );
        assert_eq!(
            CaseOutcome::Xpass.merge(CaseOutcome::Skip),
            CaseOutcome::Xpass
        );
        assert_eq!(
            CaseOutcome::Xpass.merge(CaseOutcome::Fail),
            CaseOutcome::Fail
        );
    }

    #[test]
    fn counts_and_passed() {
        let mut results = Results::new("tap");
        let mut suite = Suite::new("s");
        suite.cases.push(Case::new("a", None));
        let mut b = Case::new("b", None);
        b.outcome = CaseOutcome::Fail;
        b.flags.todo = true;
        suite.cases.push(b);
        let mut c = Case::new("c", Some("row".into()));
        c.outcome = CaseOutcome::Skip;
        suite.cases.push(c);
        results.suites.push(suite);
        let counts = results.counts();
        assert_eq!(counts.pass, 1);
        assert_eq!(counts.fail, 1);
        assert_eq!(counts.skip, 1);
        assert_eq!(counts.total(), 3);
        // The failure is a TODO, so the run still passes.
        assert!(results.passed());
        results.complete = false;
        assert!(!results.passed());
    }

    #[test]
    fn round_trips_through_json() {
        let mut results = Results::new("qtest-xml");
        let mut suite = Suite::new("tst_x");
        let mut case = Case::new("bench", Some("global:local".into()));
        case.metrics.push(Metric {
            name: "Events".into(),
            unit: "events".into(),
            value: 3.0,
            total: Some(45.0),
            iterations: Some(15),
            variance: None,
        });
        case.diagnostics = Some(serde_json::json!({"a": 1}));
        suite.cases.push(case);
        results.suites.push(suite);
        let json = serde_json::to_string(&results).expect("serialize");
        let back: Results = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, results);
    }
}
