//! The OpenAPI description of the analytics routes, merged into
//! `/api/v1/openapi.json` by `crate::openapi::spec` (which adds the answers
//! of the layers: auth guard, extractors).

use serde_json::{Map, Value, json};

use super::compare::MAX_JOBS_PER_SIDE;
use super::confirm::{DEFAULT_ROUNDS, MAX_ROUNDS};
use super::series::{DEFAULT_POINTS, MAX_POINTS, MAX_SERIES_PAGE};
use crate::openapi::{error_response, id_param};

/// Paths and methods of the analytics routes, as the router serves them.
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/series", "get"),
    ("/api/v1/series/{id}", "get"),
    ("/api/v1/series/{id}/points", "get"),
    ("/api/v1/series/{id}/changes", "get"),
    ("/api/v1/series/{id}/acks", "post"),
    ("/api/v1/series/{id}/acks", "get"),
    ("/api/v1/regressions", "get"),
    ("/api/v1/compare", "get"),
    ("/api/v1/compare", "post"),
    ("/api/v1/analysis/changes", "post"),
];

/// Distinct paths in [`ROUTES`].
#[cfg(test)]
pub const PATHS: usize = 8;

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok(desc: &str, name: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema(name)}}})
}

fn limit_param(default: i64, max: i64) -> Value {
    json!({"name": "limit", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": max, "default": default}})
}

fn since_param(what: &str) -> Value {
    json!({"name": "since", "in": "query", "schema": {"type": "string"},
        "description": format!("{what} at or after this time: RFC 3339, or an age such as `7d`, `12h`, `30m`, `2w`")})
}

fn jobs_param(name: &str) -> Value {
    let id = "[1-9][0-9]{0,17}";
    let more = MAX_JOBS_PER_SIDE - 1;
    json!({"name": name, "in": "query", "required": true,
        "schema": {"type": "string", "pattern": format!("^{id}(,{id}){{0,{more}}}$")},
        "description": format!("Job ids separated by commas (at most {MAX_JOBS_PER_SIDE})")})
}

/// The analytics paths.
pub fn paths() -> Value {
    let text = |name: &str, desc: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "description": desc});
    json!({
        "/api/v1/series": {"get": {
            "summary": "Benchmark series (one metric of one benchmark on one host) in id order; read on with `after` = the answer's `next_after`",
            "parameters": [
                text("host", "Exactly this host"), text("program", "Exactly this test program"),
                text("function", "Exactly this test function"), text("metric", "Exactly this metric"),
                text("search", "A case-insensitive substring of the program, function or data tag"),
                {"name": "after", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX}, "description": "Series with a greater id"},
                limit_param(100, MAX_SERIES_PAGE)],
            "responses": {"200": ok("A page of series", "SeriesPage")}
        }},
        "/api/v1/series/{id}": {"get": {
            "summary": "One series",
            "parameters": [id_param("series")],
            "responses": {"200": ok("The series", "SeriesView"), "404": error_response("No such series")}
        }},
        "/api/v1/series/{id}/points": {"get": {
            "summary": "The newest points of a series, oldest first, with the noise model of its current level and the machine fingerprints they were measured with (`fingerprint_changed` marks a new one)",
            "parameters": [id_param("series"), since_param("Points"), limit_param(DEFAULT_POINTS, MAX_POINTS)],
            "responses": {"200": ok("Points", "SeriesPoints"), "404": error_response("No such series")}
        }},
        "/api/v1/series/{id}/changes": {"get": {
            "summary": "The change points of a series, oldest first, with acknowledgements (carried from the other metrics of the same test at the same place)",
            "parameters": [id_param("series")],
            "responses": {"200": ok("Change points", "SeriesChanges"), "404": error_response("No such series")}
        }},
        "/api/v1/series/{id}/acks": {
            "post": {
                "summary": "Acknowledge the change of a series that starts at a sha (a sha of one of its points, or a unique prefix); it applies to the changes of every metric of the test at that place",
                "parameters": [id_param("series")],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("AckRequest")}}},
                "responses": {"201": ok("Recorded", "AckView"), "400": error_response("No point of the series has that sha, or a field is not as documented"), "404": error_response("No such series")}
            },
            "get": {
                "summary": "The acknowledgements of a series, oldest first",
                "parameters": [id_param("series")],
                "responses": {"200": {"description": "Acknowledgements", "content": {"application/json": {"schema": {"type": "array", "items": schema("AckView")}}}}, "404": error_response("No such series")}
            }
        },
        "/api/v1/regressions": {"get": {
            "summary": "Regressions (changes that make a metric worse, in its direction) across all series, grouped per test and place in history, newest first",
            "parameters": [since_param("Groups"), limit_param(100, 1000)],
            "responses": {"200": ok("Regressions", "RegressionsView")}
        }},
        "/api/v1/compare": {
            "get": {
                "summary": "Compare the benchmarks of two sets of jobs, series by series on the same host: change, confidence interval, p-value and a verdict (faster / slower / same / unknown, in the metric's direction)",
                "parameters": [jobs_param("baseline"), jobs_param("contender")],
                "responses": {"200": ok("The comparison", "CompareView"), "404": error_response("No such job")}
            },
            "post": {
                "summary": "Compare, and with `confirm` re-run the tasks of both sides of every UNKNOWN row (up to `max_rounds` rounds, 30 minutes in all) before answering",
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema("CompareRequest")}}},
                "responses": {"200": ok("The comparison", "CompareView"), "400": error_response("A side is empty or too long, or `max_rounds` is out of range"), "404": error_response("No such job")}
            }
        },
        "/api/v1/analysis/changes": {"post": {
            "summary": "The change points of a series sent in the body: CSV with a header (`index,value`, `time,value` or `value`) or a JSON array of numbers",
            "requestBody": {"required": true, "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "minItems": 1, "items": {"type": "number"}}}
            }},
            "responses": {
                "200": ok("Change points (`series` is null)", "SeriesChanges"),
                "400": error_response("The CSV or JSON is not a series (the error names the line)"),
                "422": error_response("The JSON is not an array of numbers")
            }
        }}
    })
}

/// The schemas of the analytics answers and bodies.
pub fn schemas() -> Map<String, Value> {
    let int = json!({"type": "integer"});
    let count = json!({"type": "integer", "minimum": 0});
    let num = json!({"type": "number"});
    let text = json!({"type": "string"});
    let opt_text = json!({"type": ["string", "null"]});
    let better = json!({"type": "string", "enum": ["lower", "higher"]});
    let object = |required: &[&str], properties: Value| json!({"type": "object", "required": required, "properties": properties});
    let nullable = |name: &str| json!({"oneOf": [{"type": "null"}, schema(name)]});
    let array = |name: &str| json!({"type": "array", "items": schema(name)});
    let mut m = Map::new();
    m.insert(
        "SeriesView".into(),
        object(
            &[
                "id",
                "host",
                "program",
                "function",
                "data_tag",
                "metric",
                "unit",
                "better",
                "points",
                "first_at",
                "last_at",
                "last_value",
            ],
            json!({"id": int, "host": text, "program": text, "function": text, "data_tag": opt_text,
            "metric": text, "unit": text, "better": better, "points": count,
            "first_at": text, "last_at": text, "last_value": num}),
        ),
    );
    m.insert(
        "SeriesPage".into(),
        object(
            &["series", "next_after"],
            json!({"series": array("SeriesView"), "next_after": {"type": ["integer", "null"]}}),
        ),
    );
    m.insert("PointView".into(), object(
        &["id", "index", "value", "repetition", "sha", "branch", "integration", "job_id", "task_id", "attempt_id", "at", "fingerprint", "fingerprint_changed"],
        json!({"id": int, "index": count, "value": num, "repetition": count, "sha": opt_text,
            "branch": opt_text, "integration": opt_text, "job_id": int, "task_id": int,
            "attempt_id": int, "at": text, "fingerprint": text, "fingerprint_changed": {"type": "boolean"}})));
    m.insert("NoiseModel".into(), object(
        &["n", "median", "spread", "cv", "outliers", "bimodal", "min_detectable_effect", "reference_repetitions"],
        json!({"n": count, "median": num, "spread": num, "cv": num, "outliers": count,
            "bimodal": {"type": "boolean"}, "min_detectable_effect": num, "reference_repetitions": count})));
    m.insert(
        "FingerprintView".into(),
        object(
            &["hash", "first_index", "machine"],
            json!({"hash": text, "first_index": count, "machine": {"type": "object"}}),
        ),
    );
    m.insert(
        "SeriesPoints".into(),
        object(
            &["series", "noise", "fingerprints", "points"],
            json!({"series": schema("SeriesView"), "noise": nullable("NoiseModel"),
            "fingerprints": array("FingerprintView"), "points": array("PointView")}),
        ),
    );
    m.insert("AckView".into(), object(&["id", "series_id", "sha", "note", "bug_url", "by", "created_at"],
        json!({"id": int, "series_id": int, "sha": text, "note": text, "bug_url": opt_text, "by": text, "created_at": text})));
    m.insert(
        "AckRequest".into(),
        object(
            &["sha", "note"],
            json!({"sha": {"type": "string", "minLength": 4, "maxLength": 200, "pattern": "^\\S+$"},
            "note": {"type": "string", "minLength": 1, "maxLength": 4000, "pattern": "\\S"},
            "bug_url": {"type": "string", "maxLength": 2000, "pattern": "^https?://[^\\s/]\\S*$"}}),
        ),
    );
    m.insert("ChangeView".into(), object(
        &["series_id", "metric", "unit", "index", "at", "sha", "mean_before", "mean_after", "change_pct", "p_value", "step", "regression", "ack"],
        json!({"series_id": int, "metric": text, "unit": text, "index": count,
            "at": {"type": "string", "description": "RFC 3339; empty for a CSV series without times"},
            "sha": opt_text, "mean_before": num, "mean_after": num, "change_pct": num, "p_value": num,
            "step": {"type": "string", "enum": ["up", "down"]}, "regression": {"type": "boolean"},
            "ack": nullable("AckView")})));
    m.insert("SeriesChanges".into(), object(&["series", "points", "changes"],
        json!({"series": nullable("SeriesView"), "points": count, "changes": array("ChangeView")})));
    m.insert("ChangeGroup".into(), object(
        &["host", "program", "function", "data_tag", "sha", "at", "changes", "acknowledged"],
        json!({"host": text, "program": text, "function": text, "data_tag": opt_text, "sha": opt_text,
            "at": text, "changes": array("ChangeView"), "acknowledged": {"type": "boolean"}})));
    m.insert(
        "RegressionsView".into(),
        object(
            &["since", "series_scanned", "groups"],
            json!({"since": opt_text, "series_scanned": count, "groups": array("ChangeGroup")}),
        ),
    );
    m.insert(
        "SampleSummary".into(),
        object(
            &["n", "median", "mean", "min", "max", "cv"],
            json!({"n": count, "median": num, "mean": num, "min": num, "max": num, "cv": num}),
        ),
    );
    m.insert(
        "Comparison".into(),
        object(
            &[
                "baseline",
                "contender",
                "change",
                "ci_low",
                "ci_high",
                "p_value",
                "verdict",
                "more_repetitions",
                "reason",
            ],
            json!({"baseline": schema("SampleSummary"), "contender": schema("SampleSummary"),
            "change": num, "ci_low": num, "ci_high": num, "p_value": num,
            "verdict": {"type": "string", "enum": ["faster", "slower", "same", "unknown"]},
            "more_repetitions": {"type": ["integer", "null"], "minimum": 0}, "reason": text}),
        ),
    );
    m.insert("CompareRow".into(), object(
        &["host", "program", "function", "data_tag", "metric", "unit", "better", "status", "comparison", "series_id"],
        json!({"host": text, "program": text, "function": text, "data_tag": opt_text, "metric": text,
            "unit": text, "better": better,
            "status": {"type": "string", "enum": ["compared", "new", "missing"]},
            "comparison": nullable("Comparison"), "series_id": {"type": ["integer", "null"]}})));
    m.insert("VerdictCounts".into(), object(&["faster", "slower", "same", "unknown", "new", "missing"],
        json!({"faster": count, "slower": count, "same": count, "unknown": count, "new": count, "missing": count})));
    m.insert("CompareView".into(), object(&["baseline_jobs", "contender_jobs", "counts", "rows", "rounds"],
        json!({"baseline_jobs": {"type": "array", "items": int}, "contender_jobs": {"type": "array", "items": int},
            "counts": schema("VerdictCounts"), "rows": array("CompareRow"), "rounds": count,
            "confirm_jobs": {"type": "array", "items": int}})));
    let jobs = json!({"type": "array", "minItems": 1, "maxItems": MAX_JOBS_PER_SIDE,
        "items": {"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX}});
    m.insert("CompareRequest".into(), object(&["baseline", "contender"],
        json!({"baseline": jobs, "contender": jobs, "confirm": {"type": "boolean", "default": false},
            "max_rounds": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_ROUNDS, "default": DEFAULT_ROUNDS}})));
    m
}
