//! JSON shapes of the ResultsDB API: testcases, groups and results as
//! ResultsDB's serializer prints them (absolute `href`s, naive timestamps),
//! and the parsing of posted JSON bodies.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use testfleet_core::time_fmt::format_millis;
use testfleet_store::{RdbGroup, RdbResult, RdbTestcase};

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

pub(super) fn testcase_json(base: &str, t: &RdbTestcase) -> Value {
    json!({
        "name": t.name,
        "ref_url": absolute(base, &t.ref_url),
        "href": format!("{base}{PREFIX}/testcases/{}", enc(&t.name)),
    })
}

pub(super) fn group_json(base: &str, g: &RdbGroup) -> Value {
    json!({
        "uuid": g.uuid,
        "description": g.description,
        "ref_url": absolute(base, &g.ref_url),
        "results": format!("{base}{PREFIX}/results?groups={}", enc(&g.uuid)),
        "href": format!("{base}{PREFIX}/groups/{}", enc(&g.uuid)),
    })
}

/// ResultsDB prints naive UTC timestamps with microseconds.
fn submit_time(ms: i64) -> String {
    let s = format_millis(ms);
    format!("{}000", s.trim_end_matches('Z'))
}

pub(super) fn result_json(base: &str, r: &RdbResult) -> Value {
    json!({
        "id": r.id,
        "groups": r.groups,
        "testcase": testcase_json(base, &r.testcase),
        "submit_time": submit_time(r.submit_time),
        "outcome": r.outcome,
        "note": r.note,
        "ref_url": absolute(base, &r.ref_url),
        "data": r.data,
        "href": format!("{base}{PREFIX}/results/{}", r.id),
    })
}

/// A JSON body, or ResultsDB's `Malformed Request` answer.
pub(super) fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "Malformed Request: expected a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("Malformed Request: {e}"),
        )),
    }
}

pub(super) fn opt_str(
    m: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{key} must be a string"),
        )),
    }
}

/// ResultsDB stores every data value as text: lists become one value per item.
pub(super) fn data_values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(data_values).collect(),
        Value::Null => vec!["None".into()],
        other => vec![other.to_string()],
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
}
