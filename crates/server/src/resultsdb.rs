//! The ResultsDB API v2.0, served over the coordinator's own results
//! (testfleet's mapped results plus anything posted here), so ResultsDB's
//! clients (`resultsdb-api`, dashboards, gating tools) read testfleet directly.
//!
//! Shapes follow ResultsDB's `api_v2` and its serializer: lists are
//! `{prev, next, data}` with `page`/`limit` paging, errors are `{message}`,
//! results carry `href`s, data values are lists. The mapping of testfleet's
//! results is in docs/exporters.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use testfleet_core::time_fmt::{format_millis, parse_rfc3339_millis};
use testfleet_store::{
    DataFilter, NewRdbResult, RDB_OUTCOMES, RdbGroup, RdbQuery, RdbResult, RdbTestcase,
};

use crate::Coordinator;

const PREFIX: &str = "/api/v2.0";
/// ResultsDB's default page size.
const QUERY_LIMIT: i64 = 20;
/// Largest page served, so one request cannot load the whole table.
const MAX_LIMIT: i64 = 10_000;

/// Query keys with a meaning of their own; any other key filters on result data.
const RESERVED: &[&str] = &[
    "page",
    "limit",
    "since",
    "outcome",
    "groups",
    "_sort",
    "testcases",
    "testcases:like",
    "callback",
    "_",
    "_distinct_on",
];

/// Catches the ResultsDB view up with the outbox before a request is served.
async fn view_caught_up(
    State(c): State<Arc<Coordinator>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Err(e) = crate::exporters::view::catch_up(&c.store).await {
        tracing::warn!("failed to catch the ResultsDB view up: {e}");
    }
    next.run(request).await
}

pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/healthcheck"), get(healthcheck))
        .route(
            &format!("{PREFIX}/results"),
            get(list_results).post(create_result),
        )
        .route(&format!("{PREFIX}/results/latest"), get(latest_results))
        .route(&format!("{PREFIX}/results/{{id}}"), get(get_result))
        .route(
            &format!("{PREFIX}/testcases"),
            get(list_testcases).post(create_testcase),
        )
        .route(&format!("{PREFIX}/testcases/{{name}}"), get(get_testcase))
        .route(
            &format!("{PREFIX}/testcases/{{name}}/results"),
            get(testcase_results),
        )
        .route(
            &format!("{PREFIX}/groups"),
            get(list_groups).post(create_group),
        )
        .route(&format!("{PREFIX}/groups/{{uuid}}"), get(get_group))
        .route(
            &format!("{PREFIX}/groups/{{uuid}}/results"),
            get(group_results),
        )
        // Readers see every finished attempt: the view is caught up first.
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            view_caught_up,
        ))
        // Creating results, testcases and groups is a write: same rules as the
        // REST API (docs/security.md).
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            crate::auth::guard,
        ))
        .with_state(coordinator)
}

type Params = Query<Vec<(String, String)>>;
type ApiResult = Result<Response, ApiError>;

/// An error answer: ResultsDB's `{message}` body with a status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn store_error(e: testfleet_store::StoreError) -> ApiError {
    tracing::error!("resultsdb api: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("store error: {e}"),
    )
}

/// How clients reach us, from the request's `Host` (ResultsDB's hrefs are absolute).
fn base_url(headers: &HeaderMap) -> String {
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
fn enc(s: &str) -> String {
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

fn testcase_json(base: &str, t: &RdbTestcase) -> Value {
    json!({
        "name": t.name,
        "ref_url": absolute(base, &t.ref_url),
        "href": format!("{base}{PREFIX}/testcases/{}", enc(&t.name)),
    })
}

fn group_json(base: &str, g: &RdbGroup) -> Value {
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

fn result_json(base: &str, r: &RdbResult) -> Value {
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

/// Parses ISO 8601 as ResultsDB accepts it: a date, or a date and time with
/// or without seconds, fraction and zone (no zone means UTC).
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let mut t = if s.len() == 10 {
        format!("{s}T00:00:00")
    } else {
        s.replace(' ', "T")
    };
    let (date_time, zone) = match t.find(['Z', 'z']) {
        Some(i) => (t[..i].to_owned(), "Z".to_owned()),
        None => match t.get(10..).and_then(|rest| rest.rfind(['+', '-'])) {
            Some(i) => (t[..10 + i].to_owned(), t[10 + i..].to_owned()),
            None => (t.clone(), "Z".to_owned()),
        },
    };
    t = date_time;
    if t.len() == 16 {
        t.push_str(":00");
    }
    parse_rfc3339_millis(&format!("{t}{zone}"))
}

fn split_list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The last value of a query key (ResultsDB's parser keeps one).
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn paging(params: &[(String, String)]) -> Result<(i64, i64), ApiError> {
    let page = match param(params, "page") {
        Some(p) => p.parse::<i64>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("page: invalid literal for int(): {p}"),
            )
        })?,
        None => 0,
    };
    let limit = match param(params, "limit") {
        Some(l) => l.parse::<i64>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("limit: invalid literal for int(): {l}"),
            )
        })?,
        None => QUERY_LIMIT,
    };
    if page < 0 || limit < 1 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "page must be >= 0 and limit >= 1",
        ));
    }
    Ok((page, limit.min(MAX_LIMIT)))
}

/// `prev`/`next` URLs: the request's own URL with `page` replaced.
fn prev_next(
    base: &str,
    uri: &Uri,
    params: &[(String, String)],
    page: i64,
    more: bool,
) -> (Value, Value) {
    let url_for = |p: i64| {
        let mut q: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "page" && k != "callback")
            .map(|(k, v)| format!("{}={}", enc(k).replace("%3A", ":"), enc(v)))
            .collect();
        q.push(format!("page={p}"));
        format!("{base}{}?{}", uri.path(), q.join("&"))
    };
    let prev = if page > 0 {
        json!(url_for(page - 1))
    } else {
        Value::Null
    };
    let next = if more {
        json!(url_for(page + 1))
    } else {
        Value::Null
    };
    (prev, next)
}

/// One page of a ResultsDB list: `rows` holds up to `limit + 1` rows (the
/// extra one only tells that a next page exists).
fn page_answer<T>(
    base: &str,
    uri: &Uri,
    params: &[(String, String)],
    (page, limit): (i64, i64),
    mut rows: Vec<T>,
    to_json: impl Fn(&str, &T) -> Value,
) -> Response {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let (prev, next) = prev_next(base, uri, params, page, more);
    let data: Vec<Value> = rows.iter().map(|r| to_json(base, r)).collect();
    Json(json!({"prev": prev, "next": next, "data": data})).into_response()
}

fn results_query(params: &[(String, String)]) -> Result<RdbQuery, ApiError> {
    let mut q = RdbQuery::default();
    if let Some(outcomes) = param(params, "outcome") {
        for o in split_list(outcomes) {
            let o = o.to_uppercase();
            if !RDB_OUTCOMES.contains(&o.as_str()) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("outcome '{o}' not one of {RDB_OUTCOMES:?}"),
                ));
            }
            q.outcomes.push(o);
        }
    }
    if let Some(since) = param(params, "since") {
        let bad = || {
            error(
                StatusCode::BAD_REQUEST,
                "'since' parameter not in ISO8601 format",
            )
        };
        let mut parts = since.split(',');
        q.since = Some(parts.next().and_then(parse_time).ok_or_else(bad)?);
        if let Some(end) = parts.next() {
            q.until = Some(parse_time(end).ok_or_else(bad)?);
        }
    }
    q.groups = param(params, "groups")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    q.testcases = param(params, "testcases")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    q.testcases_like = param(params, "testcases:like")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    q.ascending = param(params, "_sort") == Some("asc:submit_time");
    let mut data: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
    for (k, v) in params {
        if RESERVED.contains(&k.as_str()) {
            continue;
        }
        let (key, like) = match k.split_once(':') {
            Some((key, "like")) => (key.to_owned(), true),
            Some(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown filter modifier in '{k}'"),
                ));
            }
            None => (k.clone(), false),
        };
        data.entry((key, like)).or_default().extend(split_list(v));
    }
    q.data = data
        .into_iter()
        .map(|((key, like), values)| DataFilter { key, like, values })
        .collect();
    Ok(q)
}

async fn healthcheck(State(c): State<Arc<Coordinator>>) -> ApiResult {
    c.store.rdb_testcases(&[], &[], 0, 1).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Unable to communicate with database: {e}"),
        )
    })?;
    Ok(Json(json!({"message": "Health check OK"})).into_response())
}

async fn list_results(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Params,
) -> ApiResult {
    results_page(&c, &headers, &uri, params).await
}

async fn results_page(
    c: &Coordinator,
    headers: &HeaderMap,
    uri: &Uri,
    params: Vec<(String, String)>,
) -> ApiResult {
    let base = base_url(headers);
    let (page, limit) = paging(&params)?;
    let q = results_query(&params)?;
    // One row more than asked tells whether there is a next page.
    let rows = c
        .store
        .rdb_results(&q, page.saturating_mul(limit), limit + 1)
        .await
        .map_err(store_error)?;
    Ok(page_answer(
        &base,
        uri,
        &params,
        (page, limit),
        rows,
        result_json,
    ))
}

async fn testcase_results(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Query(mut params): Params,
) -> ApiResult {
    if c.store
        .rdb_testcase(&name)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(error(StatusCode::NOT_FOUND, "Testcase not found"));
    }
    params.retain(|(k, _)| k != "testcases");
    params.push(("testcases".into(), name));
    results_page(&c, &headers, &uri, params).await
}

async fn group_results(
    State(c): State<Arc<Coordinator>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Query(mut params): Params,
) -> ApiResult {
    if c.store
        .rdb_group(&uuid)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("Group not found: {uuid}"),
        ));
    }
    params.retain(|(k, _)| k != "groups");
    params.push(("groups".into(), uuid));
    results_page(&c, &headers, &uri, params).await
}

async fn latest_results(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let base = base_url(&headers);
    let q = results_query(&params)?;
    let distinct_on: Vec<String> = param(&params, "_distinct_on")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    let rows = c
        .store
        .rdb_latest(&q, &distinct_on)
        .await
        .map_err(store_error)?;
    let data: Vec<Value> = rows.iter().map(|r| result_json(&base, r)).collect();
    Ok(Json(json!({"data": data})).into_response())
}

async fn get_result(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let not_found = || error(StatusCode::NOT_FOUND, "Result not found");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let r = c
        .store
        .rdb_result(id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    Ok(Json(result_json(&base_url(&headers), &r)).into_response())
}

/// A JSON body, or ResultsDB's `Malformed Request` answer.
fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
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

fn opt_str(m: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
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
fn data_values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(data_values).collect(),
        Value::Null => vec!["None".into()],
        other => vec![other.to_string()],
    }
}

/// A random (version 4) UUID for groups created without one, as ResultsDB does.
fn new_uuid() -> String {
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

async fn create_result(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let m = json_body(&body)?;
    let outcome = match m.get("outcome") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_uppercase(),
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "outcome: missing required parameter",
            ));
        }
    };
    if !RDB_OUTCOMES.contains(&outcome.as_str()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("outcome must be one of {RDB_OUTCOMES:?}"),
        ));
    }
    let (testcase, testcase_ref_url) = match m.get("testcase") {
        Some(Value::String(s)) if !s.is_empty() => (s.clone(), None),
        Some(Value::Object(t)) => match t.get("name") {
            Some(Value::String(n)) if !n.is_empty() => (n.clone(), opt_str(t, "ref_url")?),
            _ => return Err(error(StatusCode::BAD_REQUEST, "testcase.name not set")),
        },
        Some(Value::String(_)) => {
            return Err(error(StatusCode::BAD_REQUEST, "testcase name not set"));
        }
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "testcase: missing required parameter",
            ));
        }
    };
    let mut groups = Vec::new();
    match m.get("groups") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for g in items {
                groups.push(match g {
                    Value::String(uuid) => RdbGroup {
                        uuid: uuid.clone(),
                        description: None,
                        ref_url: None,
                    },
                    Value::Object(o) => RdbGroup {
                        uuid: opt_str(o, "uuid")?.unwrap_or_else(new_uuid),
                        description: opt_str(o, "description")?,
                        ref_url: opt_str(o, "ref_url")?,
                    },
                    _ => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "groups: expected uuids or group objects",
                        ));
                    }
                });
            }
        }
        Some(_) => return Err(error(StatusCode::BAD_REQUEST, "groups must be a list")),
    }
    let mut data = Vec::new();
    match m.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(d)) => {
            let bad: Vec<&String> = d.keys().filter(|k| k.contains(':')).collect();
            if !bad.is_empty() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("Colon not allowed in key name: {bad:?}"),
                ));
            }
            for (k, v) in d {
                data.extend(data_values(v).into_iter().map(|v| (k.clone(), v)));
            }
        }
        Some(_) => return Err(error(StatusCode::BAD_REQUEST, "data must be an object")),
    }
    let new = NewRdbResult {
        testcase,
        testcase_ref_url,
        outcome,
        note: opt_str(&m, "note")?,
        ref_url: opt_str(&m, "ref_url")?,
        groups,
        data,
    };
    let r = c
        .store
        .rdb_create_result(&new, c.now())
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(result_json(&base_url(&headers), &r)),
    )
        .into_response())
}

async fn list_testcases(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Params,
) -> ApiResult {
    let base = base_url(&headers);
    let (page, limit) = paging(&params)?;
    let names: Vec<String> = param(&params, "name")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    let like: Vec<String> = param(&params, "name:like")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    let rows = c
        .store
        .rdb_testcases(&names, &like, page.saturating_mul(limit), limit + 1)
        .await
        .map_err(store_error)?;
    Ok(page_answer(
        &base,
        &uri,
        &params,
        (page, limit),
        rows,
        testcase_json,
    ))
}

async fn get_testcase(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let t = c
        .store
        .rdb_testcase(&name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Testcase not found"))?;
    Ok(Json(testcase_json(&base_url(&headers), &t)).into_response())
}

async fn create_testcase(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let m = json_body(&body)?;
    let name = match opt_str(&m, "name")? {
        Some(n) if !n.is_empty() => n,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "name: missing required parameter",
            ));
        }
    };
    let t = c
        .store
        .rdb_put_testcase(&name, opt_str(&m, "ref_url")?.as_deref())
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(testcase_json(&base_url(&headers), &t)),
    )
        .into_response())
}

async fn list_groups(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Params,
) -> ApiResult {
    let base = base_url(&headers);
    let (page, limit) = paging(&params)?;
    let list = |k: &str| -> Vec<String> {
        param(&params, k)
            .map(|v| split_list(v).collect())
            .unwrap_or_default()
    };
    let rows = c
        .store
        .rdb_groups(
            &list("uuid"),
            &list("description"),
            &list("description:like"),
            page.saturating_mul(limit),
            limit + 1,
        )
        .await
        .map_err(store_error)?;
    Ok(page_answer(
        &base,
        &uri,
        &params,
        (page, limit),
        rows,
        group_json,
    ))
}

async fn get_group(
    State(c): State<Arc<Coordinator>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let g = c
        .store
        .rdb_group(&uuid)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Group not found"))?;
    Ok(Json(group_json(&base_url(&headers), &g)).into_response())
}

async fn create_group(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let m = json_body(&body)?;
    let group = RdbGroup {
        uuid: opt_str(&m, "uuid")?.unwrap_or_else(new_uuid),
        description: opt_str(&m, "description")?,
        ref_url: opt_str(&m, "ref_url")?,
    };
    let g = c.store.rdb_put_group(&group).await.map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(group_json(&base_url(&headers), &g)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_resultsdb_forms() {
        let t = parse_time("2023-02-10T13:11:13Z").unwrap();
        assert_eq!(parse_time("2023-02-10T13:11:13").unwrap(), t);
        assert_eq!(parse_time("2023-02-10T13:11:13.000+00:00").unwrap(), t);
        assert_eq!(parse_time("2023-02-10T14:11:13+01:00").unwrap(), t);
        assert_eq!(
            parse_time("2023-02-10").unwrap(),
            t - (13 * 3600 + 11 * 60 + 13) * 1000
        );
        assert_eq!(parse_time("2023-02-10T13:11").unwrap(), t - 13_000);
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn submit_time_is_naive_with_microseconds() {
        assert_eq!(submit_time(1_676_034_673_123), "2023-02-10T13:11:13.123000");
    }
}
