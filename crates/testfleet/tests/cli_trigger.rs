//! `testfleet trigger test` and `testfleet run --var` through the real
//! binary, on the rules, templates and events of `examples/triggers`:
//!
//! - a completed Koji build (fedora-messaging) plans a Taskotron-style
//!   rpmlint job with `item`, `item_type` and `arch` filled;
//! - a Gerrit `change-merged` plans a Qt benchmark job on every agent with
//!   `sha`, `branch`, `change` and `project` filled;
//! - a hostile commit subject stays one inert shell word;
//! - no match exits 1 and says why; bad rules, templates and events exit 2
//!   naming the file and line;
//! - `testfleet run JOB.toml --var …` fills the same placeholders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KOJI_TOPIC: &str = "org.fedoraproject.prod.buildsys.build.state.change";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/triggers")
}

fn testfleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args(args)
        .env_remove("TESTFLEET_SERVER")
        .env_remove("TESTFLEET_CONFIG")
        .output()
        .expect("the testfleet binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn trigger_json(event: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let rules = examples();
    let mut args = vec![
        "trigger",
        "test",
        path_str(&rules),
        path_str(event),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = testfleet(&args);
    let stdout = text(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out.status.code().unwrap_or(-1), json, text(&out.stderr))
}

fn gerrit_event(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = std::fs::read_to_string(examples().join("events/gerrit-change-merged.json")).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(&src).unwrap();
    edit(&mut body);
    let path = dir.join("event.json");
    std::fs::write(&path, serde_json::to_vec(&body).unwrap()).unwrap();
    path
}

#[test]
fn koji_build_plans_an_rpmlint_job_with_taskotron_vars() {
    let rules = examples();
    let event = rules.join("events/koji-build-complete.json");
    let out = testfleet(&[
        "trigger",
        "test",
        path_str(&rules),
        path_str(&event),
        "--topic",
        KOJI_TOPIC,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("rule `rpmlint-on-koji-build` (")
            && stdout.contains("fedora.toml:9): matched"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rule `qtbase-benchmarks-on-merge` (")
            && stdout.contains("no match: source is `amqp`, the rule wants `gerrit`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# job 1 of 1: rule `rpmlint-on-koji-build`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("name = \"rpmlint-xchat-0.5-1.fc20-x86_64\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("TASKOTRON_ITEM_TYPE = \"koji_build\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "run = \"koji download-build --arch='x86_64' --arch=noarch 'xchat-0.5-1.fc20'\""
        ),
        "{stdout}"
    );

    let (code, json, _) = trigger_json(&event, &["--topic", KOJI_TOPIC]);
    assert_eq!(code, 0);
    let job = &json["jobs"][0]["job"];
    assert_eq!(job["queue"], "fedora-qa", "the action's queue override");
    assert_eq!(job["integration"]["id"], "xchat-0.5-1.fc20");
    assert_eq!(job["task"][0]["requires"]["arch"], "x86_64");
    assert_eq!(json["rules"][0]["matched"], true);
}

#[test]
fn gerrit_change_merged_plans_a_benchmark_job_on_every_agent() {
    let event = examples().join("events/gerrit-change-merged.json");
    let (code, json, stderr) = trigger_json(&event, &["--source", "gerrit"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json["kind"], "change-merged",
        "kind taken from the body's `type`"
    );
    let jobs = json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0]["job"];
    assert_eq!(job["name"], "qt/qtbase-integration-456789");
    assert_eq!(
        (job["queue"].as_str(), job["priority"].as_i64()),
        (Some("benchmarks"), Some(10))
    );
    // sha is newRev (the merged commit), not the patch set's revision.
    assert_eq!(
        job["source"]["rev"],
        "69609f0b3575c571fff4564f6f16cbca9c7d81f6"
    );
    assert_eq!(
        job["integration"]["sha"],
        "69609f0b3575c571fff4564f6f16cbca9c7d81f6"
    );
    assert_eq!(job["integration"]["branch"], "dev");
    assert_eq!(job["integration"]["id"], "456789");
    assert_eq!(job["source"]["repo"], "https://code.qt.io/qt/qtbase.git");
    assert_eq!(job["task"][0]["each_agent"], true);
}

#[test]
fn a_hostile_subject_stays_one_inert_shell_word() {
    let dir = tempfile::tempdir().unwrap();
    let subject = "x'; touch PWNED1; echo '\" $(touch PWNED2) `touch PWNED3`\n[[task]]\nname = \"evil\" {{sha}}";
    let event = gerrit_event(dir.path(), |b| b["change"]["subject"] = subject.into());
    let (code, json, stderr) = trigger_json(&event, &["--source", "gerrit"]);
    assert_eq!(code, 0, "{stderr}");
    let job = &json["jobs"][0]["job"];
    assert_eq!(job["task"].as_array().unwrap().len(), 1, "no task injected");
    let run = job["task"][0]["steps"][2]["run"].as_str().unwrap();
    // Run the rendered step as the agent would (sh -c, in its checkout).
    let status = Command::new("sh")
        .arg("-c")
        .arg(run)
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{run}");
    let written = std::fs::read_to_string(dir.path().join("results/subject.txt")).unwrap();
    assert_eq!(
        written,
        format!("{subject}\n"),
        "the value arrives verbatim"
    );
    for f in ["PWNED1", "PWNED2", "PWNED3"] {
        assert!(!dir.path().join(f).exists(), "{f} was created by {run}");
    }
}

#[test]
fn no_match_exits_1_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let event = gerrit_event(dir.path(), |b| b["change"]["branch"] = "5.15".into());
    let (code, json, _) = trigger_json(&event, &["--source", "gerrit"]);
    assert_eq!(code, 1);
    assert_eq!(json["jobs"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        json["rules"][1]["why"],
        "field `change.branch` is \"5.15\", the rule wants it one of [\"dev\", \"6.8\", \"6.9\"]"
    );
}

#[test]
fn bad_rules_templates_and_events_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let event = examples().join("events/koji-build-complete.json");
    let ev = path_str(&event);

    // A regex that does not compile: the rules file, line, rule and field.
    let rules = std::fs::read_to_string(examples().join("fedora.toml")).unwrap();
    let bad = dir.path().join("fedora.toml");
    std::fs::write(&bad, rules.replace(r"'\.fc\d+$'", "'(fc'")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let template = std::fs::read_to_string(examples().join("templates/rpmlint.toml")).unwrap();
    std::fs::write(dir.path().join("templates/rpmlint.toml"), &template).unwrap();
    let out = testfleet(&["trigger", "test", path_str(&bad), ev, "--topic", KOJI_TOPIC]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("fedora.toml:20: rule `rpmlint-on-koji-build`: field `when.fields.release`: `$regex` does not compile"),
        "{stderr}"
    );

    // An unknown placeholder in a template: the template, line and field.
    std::fs::write(&bad, &rules).unwrap();
    std::fs::write(
        dir.path().join("templates/rpmlint.toml"),
        template.replace("--type {{item_type}}", "--type {{itme_type}}"),
    )
    .unwrap();
    let out = testfleet(&["trigger", "test", path_str(&bad), ev, "--topic", KOJI_TOPIC]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("templates/rpmlint.toml:22: rule `rpmlint-on-koji-build`: field `task[0].steps[2].run`: placeholder `{{itme_type}}` has no value"),
        "{stderr}"
    );

    // An event that is not JSON, and one whose kind is unknown.
    let not_json = dir.path().join("event.json");
    std::fs::write(&not_json, "{\"name\":\n").unwrap();
    let examples = examples();
    let out = testfleet(&[
        "trigger",
        "test",
        path_str(&examples),
        path_str(&not_json),
        "--source",
        "amqp",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a JSON event body"),
        "{}",
        text(&out.stderr)
    );
    let out = testfleet(&[
        "trigger",
        "test",
        path_str(&examples),
        ev,
        "--source",
        "github",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("give --kind"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_fills_the_same_placeholders_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("check.toml");
    std::fs::write(
        &job,
        "name = \"check-{{item}}\"\n[[task]]\nname = \"check\"\nsteps = [\n  { stage = \"test\", run = \"printf '%s|%s|%s' {{item}} {{item_type}} {{arch}}\" },\n]\n",
    )
    .unwrap();
    let hostile = format!("xchat-0.5-1.fc20'; touch {}/PWNED; '", path_str(dir.path()));
    let out = testfleet(&[
        "run",
        path_str(&job),
        "--var",
        &format!("item={hostile}"),
        "--var",
        "item_type=koji_build",
        "--var",
        "arch=x86_64",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{hostile}|koji_build|x86_64")),
        "{stdout}"
    );
    assert!(stdout.contains("check: OK"), "{stdout}");
    assert!(!dir.path().join("PWNED").exists());

    // A placeholder with no --var: exit 2, naming it and its line.
    let out = testfleet(&["run", path_str(&job), "--var", "item=a", "--var", "arch=b"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "check.toml:5: field `task[0].steps[0].run`: placeholder `{{item_type}}` has no value"
        ),
        "{stderr}"
    );
    let out = testfleet(&["run", path_str(&job), "--var", "item"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("write it NAME=VALUE"),
        "{}",
        text(&out.stderr)
    );
}
