//! JSON shapes of the ResultsDB API: testcases, groups and results as
//! ResultsDB's serializer prints them (absolute `href`s, naive timestamps),
//! built as `testfleet_wire::resultsdb` structs, and posted bodies turned
//! into the store's inputs.

use axum::http::{HeaderMap, StatusCode};
use testfleet_core::time_fmt::format_millis;
use testfleet_store::{NewRdbResult, RdbGroup, RdbResult, RdbTestcase};
use testfleet_wire::resultsdb::{BodyError, Group, NewGroup, NewResult, TestResult, Testcase};

use super::{ApiError, PREFIX, error};

/// How clients reach us, from the request's `Host` (ResultsDB's hrefs are absolute).
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(axum::http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// Percent-encodes a path segment or query value.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn absolute(base: &str, url: &Option<String>) -> Option<String> {
    url.as_ref().map(|u| {
        if u.starts_with('/') {
            format!("{base}{u}")
        } else {
            u.clone()
        }
    })
}

pub(super) fn testcase_json(base: &str, t: &RdbTestcase) -> Testcase {
    Testcase {
        href: format!("{base}{PREFIX}/testcases/{}", enc(&t.name)),
        name: t.name.clone(),
        ref_url: absolute(base, &t.ref_url),
    }
}

pub(super) fn group_json(base: &str, g: &RdbGroup) -> Group {
    Group {
        description: g.description.clone(),
        href: format!("{base}{PREFIX}/groups/{}", enc(&g.uuid)),
        ref_url: absolute(base, &g.ref_url),
        results: format!("{base}{PREFIX}/results?groups={}", enc(&g.uuid)),
        uuid: g.uuid.clone(),
    }
}

/// ResultsDB prints naive UTC timestamps with microseconds.
fn submit_time(ms: i64) -> String {
    let s = format_millis(ms);
    format!("{}000", s.trim_end_matches('Z'))
}

pub(super) fn result_json(base: &str, r: &RdbResult) -> TestResult {
    TestResult {
        data: r
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect(),
        groups: r.groups.clone(),
        href: format!("{base}{PREFIX}/results/{}", r.id),
        id: r.id,
        note: r.note.clone(),
        outcome: r.outcome.clone(),
        ref_url: absolute(base, &r.ref_url),
        submit_time: submit_time(r.submit_time),
        testcase: testcase_json(base, &r.testcase),
    }
}

/// A refused body: ResultsDB's 400 with the field named.
pub(super) fn bad_body(e: BodyError) -> ApiError {
    error(StatusCode::BAD_REQUEST, e.to_string())
}

/// A posted group as the store takes it; one without a uuid gets a new one.
pub(super) fn new_group(g: NewGroup) -> RdbGroup {
    RdbGroup {
        uuid: g.uuid.unwrap_or_else(new_uuid),
        description: g.description,
        ref_url: g.ref_url,
    }
}

/// A posted result as the store takes it: one (key, value) pair per data value.
/// (Crate-visible so the exporter's tests check that what it posts is read.)
pub(crate) fn new_result(body: NewResult) -> NewRdbResult {
    let testcase = body.testcase.into_testcase();
    NewRdbResult {
        testcase: testcase.name,
        testcase_ref_url: testcase.ref_url,
        outcome: body.outcome.as_str().to_owned(),
        note: body.note,
        ref_url: body.ref_url,
        groups: body
            .groups
            .into_iter()
            .map(|g| new_group(g.into_group()))
            .collect(),
        data: body
            .data
            .into_iter()
            .flat_map(|(k, v)| v.0.into_iter().map(move |v| (k.clone(), v)))
            .collect(),
    }
}

/// A random (version 4) UUID for groups created without one, as ResultsDB does.
pub(super) fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock, still unique enough for a name.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_time_is_naive_with_microseconds() {
        assert_eq!(submit_time(1_676_034_673_123), "2023-02-10T13:11:13.123000");
    }

    /// The bytes these answers had when they were built with `json!`, which
    /// ResultsDB clients read.
    #[test]
    fn answers_keep_their_bytes() {
        let t = RdbTestcase {
            name: "a b/c".into(),
            ref_url: Some("/x".into()),
        };
        let g = RdbGroup {
            uuid: "u-1".into(),
            description: None,
            ref_url: Some("http://e/".into()),
        };
        let r = RdbResult {
            id: 7,
            testcase: t.clone(),
            outcome: "PASSED".into(),
            note: None,
            ref_url: Some("/log".into()),
            submit_time: 1_676_034_673_123,
            groups: vec!["u-1".into()],
            data: [
                ("tf_uid".to_owned(), vec!["1.0".to_owned()]),
                ("item".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
            ]
            .into(),
        };
        fn text(v: &impl serde::Serialize) -> String {
            serde_json::to_string(v).unwrap()
        }
        assert_eq!(
            text(&testcase_json("http://h", &t)),
            r#"{"href":"http://h/api/v2.0/testcases/a%20b%2Fc","name":"a b/c","ref_url":"http://h/x"}"#
        );
        assert_eq!(
            text(&group_json("http://h", &g)),
            r#"{"description":null,"href":"http://h/api/v2.0/groups/u-1","ref_url":"http://e/","results":"http://h/api/v2.0/results?groups=u-1","uuid":"u-1"}"#
        );
        assert_eq!(
            text(&result_json("http://h", &r)),
            r#"{"data":{"item":["a","b"],"tf_uid":["1.0"]},"groups":["u-1"],"href":"http://h/api/v2.0/results/7","id":7,"note":null,"outcome":"PASSED","ref_url":"http://h/log","submit_time":"2023-02-10T13:11:13.123000","testcase":{"href":"http://h/api/v2.0/testcases/a%20b%2Fc","name":"a b/c","ref_url":"http://h/x"}}"#
        );
    }
}
