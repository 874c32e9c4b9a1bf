//! Template rendering: values stay inert, errors name file, line and field.

use super::*;
use crate::trigger::shell_quote;

const RPMLINT: &str = r#"name = "rpmlint-{{item}}"
queue = "qa"

[integration]
id = "{{item}}"

[[task]]
name = "rpmlint"
requires = { arch = "{{arch}}" }
steps = [
  { stage = "build", run = "koji download-build --arch={{arch}} {{item}}" },
  { stage = "test", run = """
rpmlint {{item}} > rpmlint.log
echo done
""" },
]
"#;

fn vars(pairs: &[(&str, &str)]) -> Vars<'static> {
    let mut v = Vars::new();
    for (k, val) in pairs {
        v.insert(*k, *val);
    }
    v
}

#[test]
fn fills_plain_fields_as_text_and_run_as_quoted_words() {
    let t = Template::parse(RPMLINT, "rpmlint.toml").unwrap();
    let out = t
        .render(
            &vars(&[("item", "xchat-0.5-1.fc20"), ("arch", "x86_64")]),
            &Overrides::default(),
        )
        .unwrap();
    assert_eq!(out.job.name, "rpmlint-xchat-0.5-1.fc20");
    assert_eq!(out.job.integration.as_ref().unwrap().id, "xchat-0.5-1.fc20");
    let steps = &out.job.tasks[0].steps;
    assert_eq!(
        steps[0].run,
        "koji download-build --arch='x86_64' 'xchat-0.5-1.fc20'"
    );
    assert_eq!(
        steps[1].run,
        "rpmlint 'xchat-0.5-1.fc20' > rpmlint.log\necho done\n"
    );
    // The printed TOML is the job that was validated.
    assert_eq!(JobSpec::from_toml(&out.toml).unwrap(), out.job);
    assert_eq!(
        t.placeholders().into_iter().collect::<Vec<_>>(),
        vec!["arch", "item"]
    );
}

#[test]
fn hostile_values_stay_inert() {
    let t = Template::parse(RPMLINT, "rpmlint.toml").unwrap();
    let hostile = "x'; rm -rf /; echo '\"\n[[task]]\nname = \"evil\"\n{{arch}}";
    let out = t
        .render(
            &vars(&[("item", hostile), ("arch", "x86_64")]),
            &Overrides::default(),
        )
        .unwrap();
    // No TOML was injected: still one task, the name holds the value verbatim.
    assert_eq!(out.job.tasks.len(), 1);
    assert_eq!(out.job.name, format!("rpmlint-{hostile}"));
    // `{{` inside a value is not filled again.
    assert!(out.job.name.ends_with("{{arch}}"));
    // The shell sees one word: run it through sh and compare.
    let run = &out.job.tasks[0].steps[0].run;
    assert_eq!(
        run,
        &format!(
            "koji download-build --arch='x86_64' {}",
            shell_quote(hostile)
        )
    );
    let echoed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {}", shell_quote(hostile)))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(echoed.stdout).unwrap(), hostile);
}

#[test]
fn unknown_placeholder_names_file_line_and_field() {
    let src = RPMLINT.replace("rpmlint {{item}} >", "rpmlint {{itme}} >");
    let t = Template::parse(&src, "templates/rpmlint.toml").unwrap();
    let e = t
        .render(
            &vars(&[("item", "a"), ("arch", "b")]),
            &Overrides::default(),
        )
        .unwrap_err();
    assert_eq!(e.file, "templates/rpmlint.toml");
    assert_eq!(e.line, Some(13), "{e}");
    assert_eq!(e.field.as_deref(), Some("task[0].steps[1].run"), "{e}");
    assert!(
        e.message.starts_with("placeholder `{{itme}}` has no value"),
        "{e}"
    );
    assert!(e.message.contains("`arch`, `item`"), "{e}");
    let e = e.with_rule("rpmlint");
    assert!(
        e.to_string().starts_with(
            "templates/rpmlint.toml:13: rule `rpmlint`: field `task[0].steps[1].run`: "
        ),
        "{e}"
    );
}

#[test]
fn unclosed_and_misplaced_placeholders_are_refused_at_parse() {
    let e = Template::parse(
        &RPMLINT.replace("id = \"{{item}}\"", "id = \"{{item\""),
        "t.toml",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
    assert_eq!(e.field.as_deref(), Some("integration.id"), "{e}");
    assert!(e.message.starts_with("unclosed `{{`"), "{e}");

    let e = Template::parse(
        &RPMLINT.replace("rpmlint {{item}} >", "rpmlint \"{{item}}\" >"),
        "t.toml",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(13), "{e}");
    assert!(e.message.contains("inside double quotes"), "{e}");

    let e = Template::parse("name = \"x\"\n[env]\n\"{{k}}\" = \"v\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n", "t.toml")
        .unwrap_err();
    assert!(e.message.contains("not in keys"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn a_template_that_is_no_job_is_refused_with_line_and_field() {
    // Fixed fields are judged at parse time...
    let e = Template::parse(
        &RPMLINT.replace("name = \"rpmlint\"", "nmae = \"rpmlint\""),
        "t.toml",
    )
    .unwrap_err();
    assert!(e.message.contains("nmae"), "{e}");
    assert_eq!(e.file, "t.toml");
    // ...fields with placeholders when rendered.
    let src = RPMLINT.replace(
        "{ stage = \"build\", run",
        "{ stage = \"build\", timeout = \"{{t}}\", run",
    );
    let t = Template::parse(&src, "t.toml").unwrap();
    let e = t
        .render(
            &vars(&[("item", "a"), ("arch", "b"), ("t", "soon")]),
            &Overrides::default(),
        )
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("task[0].steps[0].timeout"), "{e}");
    assert_eq!(e.line, Some(11), "{e}");
    assert!(e.message.contains("not a duration"), "{e}");
    let ok = t
        .render(
            &vars(&[("item", "a"), ("arch", "b"), ("t", "10m")]),
            &Overrides::default(),
        )
        .unwrap();
    assert_eq!(ok.job.tasks[0].steps[0].timeout.0.as_secs(), 600);
}

#[test]
fn overrides_replace_queue_and_priority() {
    let t = Template::parse(RPMLINT, "t.toml").unwrap();
    let v = vars(&[("item", "a"), ("arch", "b")]);
    let plain = t.render(&v, &Overrides::default()).unwrap();
    assert_eq!((plain.job.queue.as_str(), plain.job.priority), ("qa", 0));
    let over = t
        .render(
            &v,
            &Overrides {
                queue: Some("fedora-qa".into()),
                priority: Some(7),
            },
        )
        .unwrap();
    assert_eq!(
        (over.job.queue.as_str(), over.job.priority),
        ("fedora-qa", 7)
    );
    assert!(over.toml.contains("queue = \"fedora-qa\""), "{}", over.toml);
}

#[test]
fn render_in_one_call() {
    let job = render(RPMLINT, "t.toml", &vars(&[("item", "a"), ("arch", "b")])).unwrap();
    assert_eq!(job.name, "rpmlint-a");
    let e = render("name = [", "bad.toml", &Vars::new()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("bad.toml", Some(1)));
}
