//! The job file's parsing and validation, end to end.

use super::*;

const GOOD: &str = r#"
name = "qtbase-integration-189470895"
queue = "benchmarks"
[source]
repo = "https://example.org/qtbase.git"
rev = "69609f0b3575c571fff4564f6f16cbca9c7d81f6"
[integration]
id = "189470895"
timestamp = "2023-02-10T13:11:13Z"
branch = "dev"
[[task]]
name = "corelib-benchmarks"
requires = { pool = "benchmark" }
each_agent = true
steps = [
  { stage = "configure", run = "cmake -S . -B build -G Ninja", timeout = "10m" },
  { stage = "build", run = "cmake --build build", timeout = "30m" },
  { stage = "test", run = "build/tst_bench_qstring -o results/qstring.xml,xml", timeout = "15m" },
]
results = [{ path = "results/*.xml", format = "qtest-xml" }]
artifacts = { always = ["results/**"], on_failure = ["**/core*"] }
retries = { tests = 2, infra = 3 }
"#;

#[test]
fn parses_the_spec_example() {
    let job = JobSpec::from_toml(GOOD).unwrap();
    assert_eq!(job.queue, "benchmarks");
    assert_eq!(
        job.integration.as_ref().unwrap().timestamp,
        Some(Timestamp(1_676_034_673_000))
    );
    let task = &job.tasks[0];
    assert!(task.each_agent);
    assert_eq!(task.steps[1].timeout.0, Duration::from_secs(1800));
    assert_eq!(task.retries, RetrySpec { tests: 2, infra: 3 });
    // The JSON form is the same structure.
    let json = serde_json::to_string(&job).unwrap();
    assert_eq!(JobSpec::from_json(&json).unwrap(), job);
}

fn toml_err(src: &str) -> JobSpecError {
    JobSpec::from_toml(src).unwrap_err()
}

#[test]
fn missing_field_names_line_and_field() {
    let e = toml_err("name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\" }]\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.field.as_deref(), Some("task[0].steps[0]"), "{e}");
    assert!(e.message.contains("missing field `run`"), "{e}");
}

#[test]
fn unknown_stage_names_line_and_field() {
    let e = toml_err(
        "name = \"x\"\n\n[[task]]\nname = \"t\"\nsteps = [\n  { stage = \"deploy\", run = \"true\" },\n]\n",
    );
    assert_eq!(e.line, Some(6), "{e}");
    assert_eq!(e.field.as_deref(), Some("task[0].steps[0].stage"), "{e}");
    assert!(e.message.contains("deploy"), "{e}");
    assert!(e.message.contains("configure"), "{e}");
}

#[test]
fn bad_duration_names_line_and_field() {
    let e = toml_err(
        "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\", timeout = \"ten minutes\" }]\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.field.as_deref(), Some("task[0].steps[0].timeout"), "{e}");
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn bad_toml_names_line() {
    let e = toml_err("name = \"x\"\n[[task]\nname = 3\n");
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn unknown_field_and_empty_lists_are_refused() {
    let e = toml_err("name = \"x\"\n[[task]]\nname = \"t\"\nstpes = []\n");
    assert!(e.to_string().contains("stpes"), "{e}");
    let e = toml_err("name = \"x\"\n[[task]]\nname = \"t\"\nsteps = []\n");
    assert!(e.to_string().contains("at least one"), "{e}");
    let e = toml_err("name = \"x\"\n");
    assert!(e.to_string().contains("missing field `task`"), "{e}");
}

#[test]
fn duplicate_task_names_are_refused() {
    let src = "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";
    let e = toml_err(src);
    assert_eq!(e.field.as_deref(), Some("task[1].name"));
}

#[test]
fn json_errors_have_positions() {
    let e = JobSpec::from_json("{\"name\": \"x\", \"task\": [{\"name\": \"t\", \"steps\": [{\"stage\": \"nope\", \"run\": \"x\"}]}]}").unwrap_err();
    assert_eq!(e.field.as_deref(), Some("task[0].steps[0].stage"), "{e}");
    assert_eq!(e.line, Some(1));
}

#[test]
fn bad_timestamp_is_refused() {
    let e = toml_err(
        "name = \"x\"\n[integration]\nid = 5\ntimestamp = \"Fri Feb 10\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
    );
    assert_eq!(e.field.as_deref(), Some("integration.timestamp"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
}

const ONE_TASK: &str =
    "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

#[test]
fn artifact_globs_leaving_the_checkout_are_refused_with_line_and_field() {
    let e = toml_err(&format!(
        "{ONE_TASK}artifacts = {{ always = [\"results/**\"], on_failure = [\"../../etc/passwd\"] }}\n"
    ));
    assert_eq!(
        e.field.as_deref(),
        Some("task[0].artifacts.on_failure[0]"),
        "{e}"
    );
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("`../../etc/passwd`"), "{e}");
    assert!(e.message.contains("leaves the checkout"), "{e}");
    assert!(e.to_string().starts_with("line 5, column "), "{e}");

    let e = toml_err(&format!(
        "{ONE_TASK}[task.artifacts]\nalways = [\n  \"ok/*\",\n  \"/etc/shadow\",\n]\n"
    ));
    assert_eq!(
        e.field.as_deref(),
        Some("task[0].artifacts.always[1]"),
        "{e}"
    );
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.message.contains("absolute path"), "{e}");

    let e = toml_err(&format!(
        "{ONE_TASK}artifacts = {{ always = [\"C:\\\\Windows\\\\*\"] }}\n"
    ));
    assert_eq!(
        e.field.as_deref(),
        Some("task[0].artifacts.always[0]"),
        "{e}"
    );
    assert!(e.message.contains("names a drive"), "{e}");
}

#[test]
fn result_globs_leaving_the_checkout_are_refused() {
    let e = toml_err(&format!(
        "{ONE_TASK}results = [{{ path = \"out/*.xml\" }}, {{ path = \"..\\\\up.xml\" }}]\n"
    ));
    assert_eq!(e.field.as_deref(), Some("task[0].results[1].path"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.starts_with("result file glob"), "{e}");
}

#[test]
fn json_glob_errors_have_line_and_field() {
    let src = "{\"name\": \"x\",\n \"task\": [{\"name\": \"t\",\n  \"steps\": [{\"stage\": \"test\", \"run\": \"true\"}],\n  \"artifacts\": {\"always\": [\"/etc/shadow\"]}}]}";
    let e = JobSpec::from_json(src).unwrap_err();
    assert_eq!(
        e.field.as_deref(),
        Some("task[0].artifacts.always[0]"),
        "{e}"
    );
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn cross_field_errors_name_their_line_too() {
    let src = "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";
    let e = toml_err(src);
    assert_eq!(e.line, Some(6), "{e}");
}

#[test]
fn sizes_parse_or_say_why_not() {
    assert_eq!(ByteSize::parse("100MB"), Ok(ByteSize(100_000_000)));
    assert_eq!(ByteSize::parse("2GiB"), Ok(ByteSize(2 << 30)));
    assert_eq!(
        ByteSize::parse("lots"),
        Err(ByteSizeError::NotASize("lots".into()))
    );
    let e = ByteSize::parse("5 parsecs").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown size unit `parsecs` in `5 parsecs`; use B, KB, MB, GB, KiB, MiB or GiB"
    );
    assert_eq!(
        ByteSize::parse("99999999999999GiB"),
        Err(ByteSizeError::TooLarge("99999999999999GiB".into()))
    );
}
