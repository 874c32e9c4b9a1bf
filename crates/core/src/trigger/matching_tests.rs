//! Matching and explaining: each condition, and why a rule did not match.

use serde_json::json;

use super::*;

fn rules(fields: &str) -> RuleSet {
    let src = format!(
        "[[rule]]\nname = \"r\"\n[rule.when]\nsource = [\"gerrit\", \"manual\"]\nkind = \"change-merged\"\n[rule.when.fields]\n{fields}\n[[rule.do]]\ntemplate = \"t.toml\"\n"
    );
    RuleSet::parse(&src, "rules.toml").unwrap()
}

fn merged(body: serde_json::Value) -> Event {
    Event::new(Source::Gerrit, body).with_kind("change-merged")
}

fn verdict(set: &RuleSet, event: &Event) -> Result<(), String> {
    set.explain(event)[0]
        .verdict
        .clone()
        .map_err(|m| m.to_string())
}

#[test]
fn equality_compares_numbers_as_numbers_and_the_rest_as_text() {
    let set = rules("\"change.branch\" = \"dev\"\n\"change.number\" = 12345");
    let ok = merged(json!({"change": {"branch": "dev", "number": 12345}}));
    assert_eq!(set.matches(&ok).len(), 1);
    let as_text = merged(json!({"change": {"branch": "dev", "number": "12345"}}));
    assert_eq!(verdict(&set, &as_text), Ok(()));
    let other = merged(json!({"change": {"branch": "6.5", "number": 12345}}));
    assert_eq!(
        verdict(&set, &other),
        Err("field `change.branch` is \"6.5\", the rule wants it equal to \"dev\"".into())
    );
    let set = rules("version = \"1.10\"");
    assert!(verdict(&set, &merged(json!({"version": "1.1"}))).is_err());
    let set = rules("draft = false");
    assert_eq!(verdict(&set, &merged(json!({"draft": false}))), Ok(()));
    assert!(verdict(&set, &merged(json!({"draft": true}))).is_err());
}

#[test]
fn in_and_nin_lists() {
    let set = rules("\"change.branch\" = { \"$in\" = [\"dev\", \"6.5\"] }");
    assert_eq!(
        verdict(&set, &merged(json!({"change": {"branch": "6.5"}}))),
        Ok(())
    );
    assert_eq!(
        verdict(&set, &merged(json!({"change": {"branch": "5.15"}}))),
        Err(
            "field `change.branch` is \"5.15\", the rule wants it one of [\"dev\", \"6.5\"]".into()
        )
    );
    assert_eq!(
        verdict(&set, &merged(json!({}))),
        Err("field `change.branch` is missing, the rule wants it one of [\"dev\", \"6.5\"]".into())
    );

    let set = rules("\"change.project\" = { \"$nin\" = [\"qt/qtdoc\"] }");
    assert_eq!(
        verdict(&set, &merged(json!({"change": {"project": "qt/qtbase"}}))),
        Ok(())
    );
    assert!(verdict(&set, &merged(json!({"change": {"project": "qt/qtdoc"}}))).is_err());
    // A missing field is in none of the values.
    assert_eq!(verdict(&set, &merged(json!({}))), Ok(()));
}

#[test]
fn regex_and_exists() {
    let set = rules("\"change.subject\" = { \"$regex\" = \"^\\\\[benchmark\\\\]\" }");
    assert_eq!(
        verdict(
            &set,
            &merged(json!({"change": {"subject": "[benchmark] faster QString"}}))
        ),
        Ok(())
    );
    let e = verdict(&set, &merged(json!({"change": {"subject": "fix typo"}}))).unwrap_err();
    assert!(e.contains("matching /^\\[benchmark\\]/"), "{e}");
    // A regex never matches an object.
    assert!(verdict(&set, &merged(json!({"change": {"subject": {"a": 1}}}))).is_err());

    let set = rules("newRev = { \"$exists\" = true }\nabandoned = { \"$exists\" = false }");
    assert_eq!(verdict(&set, &merged(json!({"newRev": "abc"}))), Ok(()));
    assert_eq!(
        verdict(&set, &merged(json!({"newRev": null}))),
        Err("field `newRev` is missing, the rule wants it present".into())
    );
    assert_eq!(
        verdict(&set, &merged(json!({"newRev": "a", "abandoned": 1}))),
        Err("field `abandoned` is 1, the rule wants it absent".into())
    );
}

#[test]
fn path_misses_fail_cleanly() {
    let set = rules("\"commits.0.id\" = \"abc\"");
    assert_eq!(
        verdict(&set, &merged(json!({"commits": [{"id": "abc"}]}))),
        Ok(())
    );
    for body in [
        json!({"commits": []}),
        json!({"commits": "abc"}),
        json!({"commits": {"id": "abc"}}),
        json!(null),
        json!([1, 2]),
    ] {
        let e = verdict(&set, &merged(body.clone())).unwrap_err();
        assert!(
            e.starts_with("field `commits.0.id` is missing"),
            "{body}: {e}"
        );
    }
}

#[test]
fn explain_names_the_first_failed_condition() {
    let set = rules("\"change.branch\" = \"dev\"");
    let amqp = Event::new(Source::Amqp, json!({})).with_topic("a.b");
    assert_eq!(
        verdict(&set, &amqp),
        Err("source is `amqp`, the rule wants one of `gerrit`, `manual`".into())
    );
    let no_kind = Event::new(Source::Gerrit, json!({}));
    assert_eq!(
        verdict(&set, &no_kind),
        Err("the event has no kind, the rule wants `change-merged`".into())
    );
    let other_kind = Event::new(Source::Gerrit, json!({})).with_kind("patchset-created");
    assert_eq!(
        verdict(&set, &other_kind),
        Err("kind is `patchset-created`, the rule wants `change-merged`".into())
    );

    let topic = RuleSet::parse(
        "[[rule]]\nname = \"t\"\nwhen = { topic = \"a.*\" }\ndo = [{ template = \"x\" }]\n",
        "r.toml",
    )
    .unwrap();
    let e = verdict(&topic, &Event::new(Source::Amqp, json!({}))).unwrap_err();
    assert_eq!(e, "the event has no topic, the rule wants `a.*`");
    let e = verdict(
        &topic,
        &Event::new(Source::Amqp, json!({})).with_topic("a.b.c"),
    )
    .unwrap_err();
    assert_eq!(e, "topic `a.b.c` does not match `a.*`");
    assert_eq!(
        topic
            .matches(&Event::new(Source::Amqp, json!({})).with_topic("a.b"))
            .len(),
        1
    );
}
