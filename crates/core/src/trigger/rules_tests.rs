//! Rules files: parsing, and errors that name file, line, rule and field.

use serde_json::json;

use super::*;

const FEDORA: &str = r#"
[[rule]]
name = "rpmlint-on-koji-build"
[rule.when]
source = "amqp"
topic = "org.fedoraproject.*.buildsys.build.state.change"
[rule.when.fields]
new = 1
instance = { "$in" = ["primary"] }
release = { "$regex" = '\.fc\d+$' }

[[rule.do]]
template = "templates/rpmlint.toml"
queue = "fedora-qa"
priority = 3
vars = { item = "{{body.name}}-{{body.version}}-{{body.release}}", item_type = "koji_build", arch = "x86_64" }
"#;

fn err(src: &str) -> RuleError {
    RuleSet::parse(src, "rules.toml").unwrap_err()
}

#[test]
fn parses_when_and_do() {
    let set = RuleSet::parse(FEDORA, "fedora.toml").unwrap();
    let rule = &set.rules()[0];
    assert_eq!(rule.name, "rpmlint-on-koji-build");
    assert_eq!(rule.file, "fedora.toml");
    assert_eq!(rule.line, Some(2));
    assert_eq!(rule.when.sources, vec![Source::Amqp]);
    assert_eq!(rule.when.fields.len(), 3);
    let action = &rule.actions[0];
    assert_eq!(action.template_path, "templates/rpmlint.toml");
    assert_eq!(action.queue.as_deref(), Some("fedora-qa"));
    assert_eq!(action.priority, Some(3));
    let names: Vec<&str> = action.vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["arch", "item", "item_type"]);
    assert_eq!(action.vars[0].line, Some(16));
}

#[test]
fn action_vars_are_filled_over_the_body() {
    let set = RuleSet::parse(FEDORA, "fedora.toml").unwrap();
    let rule = &set.rules()[0];
    let event = Event::new(
        Source::Amqp,
        json!({"name": "xchat", "version": "0.5", "release": "1.fc20"}),
    );
    let vars = rule.actions[0].vars(rule, &event).unwrap();
    assert_eq!(vars.get("item").unwrap(), "xchat-0.5-1.fc20");
    assert_eq!(vars.get("item_type").unwrap(), "koji_build");
    let missing = Event::new(Source::Amqp, json!({"name": "xchat"}));
    let e = rule.actions[0].vars(rule, &missing).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("do[0].vars.item"), "{e}");
    assert_eq!(e.line, Some(16), "{e}");
    assert!(e.message.contains("no field `version`"), "{e}");
    // Without a loaded template an action says so.
    let e = rule.actions[0].render(rule, &event).unwrap_err();
    assert!(e.message.contains("was not loaded"), "{e}");
}

#[test]
fn a_bad_regex_is_refused_at_load_naming_rule_and_field() {
    let e = err(&FEDORA.replace(r"'\.fc\d+$'", "'(fc'"));
    assert_eq!(e.rule.as_deref(), Some("rpmlint-on-koji-build"), "{e}");
    assert_eq!(e.field.as_deref(), Some("when.fields.release"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
    assert!(e.message.starts_with("`$regex` does not compile"), "{e}");
    assert!(
        e.to_string().starts_with(
            "rules.toml:10: rule `rpmlint-on-koji-build`: field `when.fields.release`: "
        ),
        "{e}"
    );
}

#[test]
fn bad_conditions_and_shapes_are_refused() {
    let e = err(&FEDORA.replace("\"$in\"", "\"$inn\""));
    assert!(e.message.contains("unknown operator `$inn`"), "{e}");
    assert_eq!(e.line, Some(9), "{e}");

    let e = err(&FEDORA.replace("new = 1", "new = [1]"));
    assert!(e.message.contains("a condition is a value"), "{e}");

    let e = err(&FEDORA.replace("{ \"$in\" = [\"primary\"] }", "{ \"$in\" = \"primary\" }"));
    assert!(e.message.contains("`$in` takes a list"), "{e}");

    let e = err(&FEDORA.replace("buildsys.build", "buildsys#.build"));
    assert_eq!(e.field.as_deref(), Some("when.topic"), "{e}");
    assert!(e.message.contains("whole words"), "{e}");

    let e = err(&FEDORA.replace("source = \"amqp\"", "source = \"kafka\""));
    assert!(e.message.contains("unknown variant `kafka`"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");

    let e = err(&FEDORA.replace("queue = ", "qeueu = "));
    assert!(e.message.contains("qeueu"), "{e}");
    assert_eq!(e.line, Some(14), "{e}");

    let e = err(&FEDORA.replace("{{body.version}}", "{{body.version"));
    assert!(e.message.starts_with("unclosed `{{`"), "{e}");
    assert_eq!(e.field.as_deref(), Some("do[0].vars.item"), "{e}");

    let e = err("[[rule]]\nname = \"all\"\n[rule.when]\n[[rule.do]]\ntemplate = \"t.toml\"\n");
    assert!(e.message.contains("at least one condition"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");

    let e = err("# nothing\n");
    assert!(e.message.contains("no rules"), "{e}");
}

#[test]
fn rule_names_are_unique_across_files() {
    let mut set = RuleSet::parse(FEDORA, "a.toml").unwrap();
    let again = RuleSet::parse(FEDORA, "b.toml").unwrap();
    let e = set.extend(again).unwrap_err();
    assert_eq!(e.file, "b.toml");
    assert!(e.message.contains("already defined in a.toml:2"), "{e}");
}

#[test]
fn topic_patterns_follow_amqp() {
    let p = |s: &str| TopicPattern::parse(s).unwrap();
    let koji = p("org.fedoraproject.*.buildsys.#");
    assert!(koji.matches("org.fedoraproject.prod.buildsys.build.state.change"));
    assert!(koji.matches("org.fedoraproject.stg.buildsys.tag"));
    assert!(
        koji.matches("org.fedoraproject.prod.buildsys"),
        "# matches zero words"
    );
    assert!(
        !koji.matches("org.fedoraproject.buildsys.tag"),
        "* needs one word"
    );
    assert!(!koji.matches("org.centos.prod.buildsys.tag"));

    let all = p("#");
    assert!(all.matches("anything.at.all"));
    assert!(all.matches("one"));

    let abc = p("a.*.c");
    assert!(abc.matches("a.b.c"));
    assert!(!abc.matches("a.c"));
    assert!(!abc.matches("a.b.b.c"));
    assert!(!abc.matches("a.b.c.d"));

    let mid = p("a.#.c");
    assert!(mid.matches("a.c"));
    assert!(mid.matches("a.x.y.c"));
    assert!(!mid.matches("a.x.y"));
    assert!(p("#.#.c").matches("c"));

    assert!(TopicPattern::parse("").is_err());
    assert!(TopicPattern::parse("a.b*.c").is_err());
}

#[test]
fn a_template_placeholder_no_event_of_the_rule_can_fill_is_refused() {
    let mut set = RuleSet::parse(FEDORA, "fedora.toml").unwrap();
    let text = "name = \"{{item}}\"\n[[task]]\nname = \"t\"\nsteps = [\n  { stage = \"test\", run = \"rpmlint {{change}} {{body.name}} {{event.topic}}\" },\n]\n";
    let rule = &mut set.rules_mut()[0];
    rule.actions[0].template = Some(Template::parse(text, "t.toml").unwrap());
    let rule = &set.rules()[0];
    // An amqp rule has no well-known `change` (a Gerrit or forge variable).
    let e = rule.actions[0].check_template(rule).unwrap_err();
    assert_eq!(e.rule.as_deref(), Some("rpmlint-on-koji-build"));
    assert_eq!((e.file.as_str(), e.line), ("t.toml", Some(5)), "{e}");
    assert!(
        e.message
            .starts_with("placeholder `{{change}}` has no value"),
        "{e}"
    );
    assert!(e.message.contains("`item`, `item_type`"), "{e}");
    // The same template is fine for a Gerrit rule.
    let mut gerrit = RuleSet::parse(
        "[[rule]]\nname = \"g\"\nwhen = { source = \"gerrit\" }\ndo = [{ template = \"t.toml\", vars = { item = \"x\" } }]\n",
        "g.toml",
    )
    .unwrap();
    let rule = &mut gerrit.rules_mut()[0];
    rule.actions[0].template = Some(Template::parse(text, "t.toml").unwrap());
    let rule = &gerrit.rules()[0];
    assert_eq!(rule.actions[0].check_template(rule), Ok(()));
}
