//! Query parameters of the ResultsDB API: paging (`page`/`limit`), the
//! result filters (`outcome`, `since`, `groups`, `testcases`, data keys)
//! and the `{prev, next, data}` page answers built from them.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use testfleet_core::time_fmt::parse_rfc3339_millis;
use testfleet_store::{DataFilter, RdbQuery};
use testfleet_wire::resultsdb::{Outcome, Page};

use super::json::enc;
use super::{ApiError, error};

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

pub(super) fn split_list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The last value of a query key (ResultsDB's parser keeps one).
pub(super) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(super) fn paging(params: &[(String, String)]) -> Result<(i64, i64), ApiError> {
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
) -> (Option<String>, Option<String>) {
    let url_for = |p: i64| {
        let mut q: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "page" && k != "callback")
            .map(|(k, v)| format!("{}={}", enc(k).replace("%3A", ":"), enc(v)))
            .collect();
        q.push(format!("page={p}"));
        format!("{base}{}?{}", uri.path(), q.join("&"))
    };
    let prev = (page > 0).then(|| url_for(page - 1));
    let next = more.then(|| url_for(page + 1));
    (prev, next)
}

/// One page of a ResultsDB list: `rows` holds up to `limit + 1` rows (the
/// extra one only tells that a next page exists).
pub(super) fn page_answer<T, U: Serialize>(
    base: &str,
    uri: &Uri,
    params: &[(String, String)],
    (page, limit): (i64, i64),
    mut rows: Vec<T>,
    to_json: impl Fn(&str, &T) -> U,
) -> Response {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let (prev, next) = prev_next(base, uri, params, page, more);
    let data = rows.iter().map(|r| to_json(base, r)).collect();
    Json(Page { data, next, prev }).into_response()
}

pub(super) fn results_query(params: &[(String, String)]) -> Result<RdbQuery, ApiError> {
    let mut q = RdbQuery::default();
    if let Some(outcomes) = param(params, "outcome") {
        for o in split_list(outcomes) {
            let o = o
                .parse::<Outcome>()
                .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
            q.outcomes.push(o.as_str().to_owned());
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
}
