//! A task's `repeat = N`: how many times one attempt runs its `test` steps,
//! so that two runs of a benchmark can be compared on more than one value per
//! side.

use serde::{Deserialize, Deserializer};

use crate::state::StepStage;

use super::TaskSpec;

/// The most repetitions a task may ask for.
pub const MAX_REPEAT: u32 = 100;

/// Why a task's `repeat` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RepeatError {
    #[error("must be a whole number from 1 to {MAX_REPEAT}, not {0}")]
    OutOfRange(i64),
    #[error(
        "a task that repeats needs a step with stage = \"test\": the steps from the first test step on are what repeats"
    )]
    NoTestStep,
}

pub(super) fn one() -> u32 {
    1
}

pub(super) fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Reads `repeat`: an integer from 1 to [`MAX_REPEAT`].
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Other(serde::de::IgnoredAny),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => in_range(n).map_err(serde::de::Error::custom),
        Raw::Other(_) => Err(serde::de::Error::custom(format!(
            "expected a whole number from 1 to {MAX_REPEAT}, such as `repeat = 5`"
        ))),
    }
}

fn in_range(n: i64) -> Result<u32, RepeatError> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_REPEAT).contains(n))
        .ok_or(RepeatError::OutOfRange(n))
}

/// The rule serde cannot express: a task that repeats has a `test` step.
pub(super) fn check(task: &TaskSpec) -> Result<(), RepeatError> {
    if task.repeat > 1 && !task.steps.iter().any(|s| s.stage == StepStage::Test) {
        return Err(RepeatError::NoTestStep);
    }
    // A spec built in code, not parsed, may hold anything.
    in_range(i64::from(task.repeat)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::super::{JobSpec, JobSpecError};

    const HEAD: &str = "name = \"x\"\n[[task]]\nname = \"t\"\n";
    const STEPS: &str = "steps = [\n  { stage = \"build\", run = \"make\" },\n  { stage = \"test\", run = \"./bench\" },\n]\n";

    fn err(src: &str) -> JobSpecError {
        match JobSpec::from_toml(src) {
            Ok(job) => panic!("accepted: {job:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn repeat_parses_and_defaults_to_one() {
        let job = JobSpec::from_toml(&format!("{HEAD}repeat = 5\n{STEPS}")).unwrap();
        assert_eq!(job.tasks[0].repeat, 5);
        let job = JobSpec::from_toml(&format!("{HEAD}{STEPS}")).unwrap();
        assert_eq!(job.tasks[0].repeat, 1);
        let job = JobSpec::from_toml(&format!("{HEAD}repeat = 100\n{STEPS}")).unwrap();
        assert_eq!(job.tasks[0].repeat, 100);
    }

    #[test]
    fn repeat_round_trips_through_json_and_is_left_out_when_one() {
        let job = JobSpec::from_toml(&format!("{HEAD}repeat = 7\n{STEPS}")).unwrap();
        let json = serde_json::to_string(&job).unwrap();
        assert!(json.contains("\"repeat\":7"), "{json}");
        assert_eq!(JobSpec::from_json(&json).unwrap(), job);

        let once = JobSpec::from_toml(&format!("{HEAD}{STEPS}")).unwrap();
        let json = serde_json::to_string(&once).unwrap();
        assert!(!json.contains("repeat"), "{json}");
        let json = r#"{"name": "x", "task": [{"name": "t", "repeat": 3,
            "steps": [{"stage": "test", "run": "true"}]}]}"#;
        assert_eq!(JobSpec::from_json(json).unwrap().tasks[0].repeat, 3);
    }

    #[test]
    fn repeat_out_of_range_names_field_line_and_column() {
        for (value, shown) in [("0", "not 0"), ("101", "not 101"), ("-3", "not -3")] {
            let e = err(&format!("{HEAD}{STEPS}repeat = {value}\n"));
            assert_eq!(e.field.as_deref(), Some("task[0].repeat"), "{e}");
            assert_eq!(e.line, Some(8), "{e}");
            assert_eq!(e.column, Some(10), "{e}");
            assert!(e.message.contains("from 1 to 100"), "{e}");
            assert!(e.message.contains(shown), "{e}");
        }
        let e = err(&format!("{HEAD}repeat = \"five\"\n{STEPS}"));
        assert_eq!(e.field.as_deref(), Some("task[0].repeat"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("whole number"), "{e}");
        let e = err(&format!("{HEAD}repeat = 2.5\n{STEPS}"));
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn repeat_out_of_range_in_json_names_its_position() {
        let src = "{\"name\": \"x\",\n \"task\": [{\"name\": \"t\",\n  \"repeat\": 1000,\n  \"steps\": [{\"stage\": \"test\", \"run\": \"true\"}]}]}";
        let e = JobSpec::from_json(src).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("task[0].repeat"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("not 1000"), "{e}");
    }

    #[test]
    fn repeat_without_a_test_step_is_refused_at_its_line() {
        let src =
            format!("{HEAD}steps = [{{ stage = \"build\", run = \"make\" }}]\n\nrepeat = 4\n");
        let e = err(&src);
        assert_eq!(e.field.as_deref(), Some("task[0].repeat"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("stage = \"test\""), "{e}");
        // Once is fine without a test step.
        let src = format!("{HEAD}steps = [{{ stage = \"build\", run = \"make\" }}]\nrepeat = 1\n");
        assert_eq!(JobSpec::from_toml(&src).unwrap().tasks[0].repeat, 1);
    }
}
