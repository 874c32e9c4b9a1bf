//! Round trips of the ResultsDB shapes, the bytes of the answers, and the
//! leniency and refusals of the posted bodies.

use serde_json::json;

use super::*;

fn testcase() -> Testcase {
    Testcase {
        href: "http://h/api/v2.0/testcases/a%20b%2Fc".into(),
        name: "a b/c".into(),
        ref_url: Some("http://h/x".into()),
    }
}

fn result() -> TestResult {
    TestResult {
        data: Data::from([
            ("item".into(), vec!["a".into(), "b".into()].into()),
            ("tf_uid".into(), vec!["1.0".into()].into()),
        ]),
        groups: vec!["u-1".into()],
        href: "http://h/api/v2.0/results/7".into(),
        id: 7,
        note: None,
        outcome: "PASSED".into(),
        ref_url: Some("http://h/log".into()),
        submit_time: "2023-02-10T13:11:13.123000".into(),
        testcase: testcase(),
    }
}

fn parse(body: Value) -> Result<NewResult, BodyError> {
    NewResult::from_json(body.to_string().as_bytes())
}

fn refusal(body: Value) -> String {
    match parse(body) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(e) => e.to_string(),
    }
}

/// The bytes the served API answered when it built these with `json!`.
#[test]
fn answers_serialize_as_resultsdb_prints_them() {
    let group = Group {
        description: None,
        href: "http://h/api/v2.0/groups/u-1".into(),
        ref_url: Some("http://e/".into()),
        results: "http://h/api/v2.0/results?groups=u-1".into(),
        uuid: "u-1".into(),
    };
    assert_eq!(
        serde_json::to_string(&testcase()).unwrap(),
        r#"{"href":"http://h/api/v2.0/testcases/a%20b%2Fc","name":"a b/c","ref_url":"http://h/x"}"#
    );
    assert_eq!(
        serde_json::to_string(&group).unwrap(),
        r#"{"description":null,"href":"http://h/api/v2.0/groups/u-1","ref_url":"http://e/","results":"http://h/api/v2.0/results?groups=u-1","uuid":"u-1"}"#
    );
    assert_eq!(
        serde_json::to_string(&result()).unwrap(),
        r#"{"data":{"item":["a","b"],"tf_uid":["1.0"]},"groups":["u-1"],"href":"http://h/api/v2.0/results/7","id":7,"note":null,"outcome":"PASSED","ref_url":"http://h/log","submit_time":"2023-02-10T13:11:13.123000","testcase":{"href":"http://h/api/v2.0/testcases/a%20b%2Fc","name":"a b/c","ref_url":"http://h/x"}}"#
    );
    let page = Page {
        data: vec![testcase()],
        next: None,
        prev: Some("http://h/api/v2.0/testcases?page=0".into()),
    };
    let text = serde_json::to_string(&page).unwrap();
    assert!(
        text.ends_with(r#"],"next":null,"prev":"http://h/api/v2.0/testcases?page=0"}"#),
        "{text}"
    );
    assert_eq!(
        serde_json::to_string(&Message {
            message: "Health check OK".into()
        })
        .unwrap(),
        r#"{"message":"Health check OK"}"#
    );
    assert_eq!(
        serde_json::to_string(&List::<Group> { data: vec![] }).unwrap(),
        r#"{"data":[]}"#
    );
}

#[test]
fn answers_round_trip() {
    let page = Page {
        data: vec![result()],
        next: Some("http://h/api/v2.0/results?page=1".into()),
        prev: None,
    };
    let back: Page<TestResult> =
        serde_json::from_str(&serde_json::to_string(&page).unwrap()).unwrap();
    assert_eq!(back, page);
}

/// Another ResultsDB's answers are read for what the reporter needs.
#[test]
fn answers_from_another_resultsdb_are_read_leniently() {
    let page: Page<TestResult> = serde_json::from_value(json!({
        "data": [{"id": 3, "outcome": "SKIPPED", "testcase": {"name": "t"},
                  "data": {"tf_uid": ["5.0", 7, null], "x": "y"}, "extra": 1}],
    }))
    .unwrap();
    let r = &page.data[0];
    assert_eq!(r.data["tf_uid"].0, ["5.0", "7", "None"]);
    assert_eq!(r.data["x"].0, ["y"]);
    assert_eq!((r.href.as_str(), r.note.as_deref()), ("", None));
    assert_eq!((page.next, page.prev), (None, None));
    // An answer that is no page is an error, never an empty page.
    assert!(serde_json::from_value::<Page<TestResult>>(json!({"message": "no"})).is_err());
}

#[test]
fn a_result_body_is_read_as_leniently_as_resultsdb_does() {
    let r = parse(json!({
        "testcase": "t.case",
        "outcome": " passed ",
        "groups": ["u-1", {"uuid": "u-2", "description": "job", "ref_url": null}, {}],
        "data": {"s": "v", "l": ["a", ["b", "c"]], "n": 5, "b": true, "z": null,
                 "o": {"k": 1}},
        "note": null,
        "unknown": [1, 2],
    }))
    .unwrap();
    assert_eq!(r.testcase, TestcaseRef::Name("t.case".into()));
    assert_eq!(r.outcome, Outcome::Passed);
    assert_eq!(
        r.groups,
        [
            GroupRef::Uuid("u-1".into()),
            GroupRef::Object(NewGroup {
                description: Some("job".into()),
                ref_url: None,
                uuid: Some("u-2".into()),
            }),
            GroupRef::Object(NewGroup::default()),
        ]
    );
    let data: Vec<(&str, Vec<&str>)> = r
        .data
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        data,
        [
            ("b", vec!["true"]),
            ("l", vec!["a", "b", "c"]),
            ("n", vec!["5"]),
            ("o", vec![r#"{"k":1}"#]),
            ("s", vec!["v"]),
            ("z", vec!["None"]),
        ]
    );
    assert_eq!((r.note, r.ref_url), (None, None));

    let r = parse(json!({
        "testcase": {"name": "t", "ref_url": "http://t"},
        "outcome": "Needs_Inspection",
        "groups": null,
        "data": null,
        "ref_url": "http://r",
    }))
    .unwrap();
    assert_eq!(
        r.testcase.into_testcase(),
        NewTestcase {
            name: "t".into(),
            ref_url: Some("http://t".into())
        }
    );
    assert_eq!(r.outcome, Outcome::NeedsInspection);
    assert!(r.groups.is_empty() && r.data.is_empty());
    assert_eq!(r.ref_url.as_deref(), Some("http://r"));
}

#[test]
fn a_bad_result_body_is_refused_naming_the_field() {
    let ok = || json!({"testcase": "t", "outcome": "PASSED"});
    let with = |k: &str, v: Value| {
        let mut b = ok();
        b[k] = v;
        b
    };
    assert!(
        NewResult::from_json(b"{nope")
            .unwrap_err()
            .to_string()
            .starts_with("Malformed Request: ")
    );
    assert_eq!(
        NewResult::from_json(b"[1]").unwrap_err().to_string(),
        "Malformed Request: expected a JSON object"
    );
    assert_eq!(
        refusal(json!({"testcase": "t"})),
        "outcome: missing required parameter"
    );
    assert_eq!(
        refusal(with("outcome", json!(" "))),
        "outcome: missing required parameter"
    );
    assert_eq!(
        refusal(with("outcome", json!("GREAT"))),
        r#"outcome must be one of ["PASSED", "INFO", "FAILED", "NEEDS_INSPECTION"], not "GREAT""#
    );
    assert_eq!(
        refusal(json!({"outcome": "PASSED"})),
        "testcase: missing required parameter"
    );
    assert_eq!(
        refusal(with("testcase", json!(3))),
        "testcase: missing required parameter"
    );
    assert_eq!(
        refusal(with("testcase", json!(""))),
        "testcase name not set"
    );
    assert_eq!(
        refusal(with("testcase", json!({"ref_url": "x"}))),
        "testcase.name not set"
    );
    assert_eq!(
        refusal(with("testcase", json!({"name": "t", "ref_url": 1}))),
        "testcase.ref_url must be a string"
    );
    assert_eq!(
        refusal(with("groups", json!("u-1"))),
        "groups must be a list"
    );
    assert_eq!(
        refusal(with("groups", json!(["u", 5]))),
        "groups: expected uuids or group objects, got 5"
    );
    assert_eq!(
        refusal(with("groups", json!(["u", {"uuid": 5}]))),
        "groups[1].uuid must be a string"
    );
    assert_eq!(
        refusal(with("data", json!(["a"]))),
        "data must be an object"
    );
    assert_eq!(
        refusal(with("data", json!({"a:b": "1", "c": "2"}))),
        r#"Colon not allowed in key name: ["a:b"]"#
    );
    assert_eq!(refusal(with("note", json!(1))), "note must be a string");
    assert_eq!(
        refusal(with("ref_url", json!([]))),
        "ref_url must be a string"
    );
    // The serde impl refuses the same, with the format's position.
    let e = serde_json::from_value::<NewResult>(json!({"testcase": "t"})).unwrap_err();
    assert!(
        e.to_string()
            .contains("outcome: missing required parameter")
    );
}

/// The same struct both ways: what is sent is read back unchanged.
#[test]
fn a_result_body_round_trips() {
    let body = NewResult {
        data: Data::from([("tf_uid".into(), vec!["4.0".into()].into())]),
        groups: vec![
            GroupRef::Uuid("u-1".into()),
            GroupRef::Object(NewGroup {
                description: Some("job".into()),
                ref_url: Some("http://c/jobs/1".into()),
                uuid: Some("u-2".into()),
            }),
        ],
        note: Some("boom".into()),
        outcome: Outcome::Failed,
        ref_url: None,
        testcase: TestcaseRef::Object(NewTestcase {
            name: "t".into(),
            ref_url: None,
        }),
    };
    let text = serde_json::to_vec(&body).unwrap();
    assert_eq!(NewResult::from_json(&text).unwrap(), body);
    assert_eq!(serde_json::from_slice::<NewResult>(&text).unwrap(), body);
    let named = NewResult {
        testcase: TestcaseRef::Name("t".into()),
        ..body
    };
    let text = serde_json::to_vec(&named).unwrap();
    assert_eq!(NewResult::from_json(&text).unwrap(), named);
}

#[test]
fn testcase_and_group_bodies() {
    assert_eq!(
        NewTestcase::from_json(br#"{"name": "t", "ref_url": null}"#).unwrap(),
        NewTestcase {
            name: "t".into(),
            ref_url: None
        }
    );
    for bad in [&br#"{}"#[..], br#"{"name": ""}"#] {
        assert_eq!(
            NewTestcase::from_json(bad).unwrap_err().to_string(),
            "name: missing required parameter"
        );
    }
    assert_eq!(
        NewTestcase::from_json(br#"{"name": 1}"#)
            .unwrap_err()
            .to_string(),
        "name must be a string"
    );
    assert_eq!(
        NewGroup::from_json(br#"{"description": "d"}"#).unwrap(),
        NewGroup {
            description: Some("d".into()),
            ..NewGroup::default()
        }
    );
    assert_eq!(
        NewGroup::from_json(br#"{"uuid": []}"#)
            .unwrap_err()
            .to_string(),
        "uuid must be a string"
    );
    let g = NewGroup {
        description: None,
        ref_url: Some("r".into()),
        uuid: Some("u".into()),
    };
    let text = serde_json::to_string(&g).unwrap();
    assert_eq!(serde_json::from_str::<NewGroup>(&text).unwrap(), g);
}

#[test]
fn outcomes_parse_in_any_case() {
    for o in Outcome::ALL {
        assert_eq!(o.as_str().to_lowercase().parse::<Outcome>().unwrap(), o);
        assert_eq!(serde_json::to_value(o).unwrap(), json!(o.as_str()));
    }
    assert!("PASS".parse::<Outcome>().is_err());
}
