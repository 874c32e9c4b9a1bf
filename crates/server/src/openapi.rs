//! The OpenAPI 3.1 description of the REST API, served at `/api/v1/openapi.json`.
//!
//! Written by hand and kept honest twice: a unit test checks that every route
//! of the router is described here, and `crates/server/tests/openapi.rs` runs
//! schemathesis against a real server, so every documented answer (status,
//! content type, schema) is one the server gives and every refused request
//! is one the document says is refused.
//!
//! The answers that come from layers rather than handlers (the auth guard,
//! the agent headers, the path/query/body extractors) are added to every
//! operation they apply to by [`complete`], so a route added later gets them.

use axum::Json;
use serde_json::{Value, json};

/// Paths and methods of the REST API, as the router serves them (checked by tests).
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/jobs", "post"),
    ("/api/v1/jobs", "get"),
    ("/api/v1/jobs/{id}", "get"),
    ("/api/v1/jobs/{id}/cancel", "post"),
    ("/api/v1/jobs/{id}/retry", "post"),
    ("/api/v1/tasks/{id}/retry", "post"),
    ("/api/v1/jobs/{id}/tasks", "get"),
    ("/api/v1/tasks/{id}", "get"),
    ("/api/v1/tasks/{id}/log", "get"),
    ("/api/v1/jobs/{id}/report", "get"),
    ("/api/v1/attempts/{id}/results", "get"),
    ("/api/v1/attempts/{id}/summary", "get"),
    ("/api/v1/tasks/{id}/why", "get"),
    ("/api/v1/stats", "get"),
    ("/api/v1/agents", "get"),
    ("/api/v1/fleet", "get"),
    ("/api/v1/queues", "get"),
    ("/api/v1/openapi.json", "get"),
    ("/api/v1/blobs/missing", "post"),
    ("/api/v1/blobs/{digest}", "put"),
    ("/api/v1/blobs/{digest}", "get"),
    ("/api/v1/jobs/{id}/artifacts", "get"),
    ("/api/v1/artifacts/{id}", "get"),
    ("/api/v1/tasks/{id}/work", "get"),
    ("/api/v1/agent/blobs/{digest}", "get"),
    ("/api/v1/agent/attempts/{id}/artifacts", "put"),
];

pub async fn document() -> Json<Value> {
    Json(spec())
}

/// An `id` path parameter: a positive 64-bit integer (anything else is a 400).
pub(crate) fn id_param(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true,
        "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX},
        "description": format!("{what} id")})
}

/// An error answer: JSON [`ErrorBody`](testfleet_wire::api::ErrorBody).
pub(crate) fn error_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// Paths the agent routes serve: authenticated by the agent's headers, not the guard.
const AGENT_PREFIX: &str = "/api/v1/agent/";

/// Adds to every operation the answers of the layers it goes through: the
/// auth guard (401, 403 and the security requirement: optional for reads,
/// which are open unless configured otherwise, required for writes), the
/// agent's headers on agent routes (401), the path and query extractors
/// (400) and the JSON body extractor (400, 413, 415, 422).
fn complete(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in operations.iter_mut() {
            let has_params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.len() == 1 && c.contains_key("application/json"));
            let has_body = op["requestBody"].is_object();
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            let mut add = |code: &str, desc: &str| {
                responses
                    .entry(code)
                    .or_insert_with(|| error_response(desc));
            };
            if has_params {
                add("400", "A path or query parameter is not what is documented");
            }
            if json_body {
                add("400", "The body is not valid JSON");
                add("415", "The body is not sent as `application/json`");
                add("422", "The JSON body does not have the documented shape");
            }
            if has_body {
                add("413", "The body is over the size limit");
            }
            let security = if path.starts_with(AGENT_PREFIX) {
                add("401", "Unknown agent or wrong agent secret");
                json!([{"agentHost": [], "agentSecret": []}])
            } else {
                add(
                    "401",
                    "Authentication required (a write, or reads are closed) or refused",
                );
                add("403", "The credentials do not allow this");
                if method == "get" || method == "head" {
                    json!([{}, {"bearerAuth": []}, {"basicAuth": []}])
                } else {
                    json!([{"bearerAuth": []}, {"basicAuth": []}])
                }
            };
            op["security"] = security;
        }
    }
}

pub fn spec() -> Value {
    let mut doc = base_spec();
    // Blobs, inputs and artifacts are described beside their handlers.
    if let (Some(paths), Value::Object(more)) =
        (doc["paths"].as_object_mut(), crate::blobs::openapi_paths())
    {
        paths.extend(more);
    }
    if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), fleet_paths()) {
        paths.extend(more);
    }
    // The analytics routes are described beside their handlers too.
    if let (Some(paths), Value::Object(more)) = (
        doc["paths"].as_object_mut(),
        crate::analytics::openapi::paths(),
    ) {
        paths.extend(more);
    }
    // The webhooks and the events log too.
    if let (Some(paths), Value::Object(more)) = (
        doc["paths"].as_object_mut(),
        crate::triggers::hooks::openapi::paths(),
    ) {
        paths.extend(more);
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(crate::triggers::hooks::openapi::schemas());
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(crate::analytics::openapi::schemas());
        schemas.insert(
            "Artifact".into(),
            json!({"type": "object", "required": ["id", "path", "kind", "digest", "size"], "properties": {
                "id": {"type": "integer"}, "job_id": {"type": "integer"}, "task_id": {"type": "integer"},
                "task_name": {"type": "string"}, "attempt_id": {"type": "integer"}, "attempt": {"type": "integer"},
                "outcome": {"type": ["string", "null"]}, "path": {"type": "string"},
                "kind": {"type": "string", "enum": ["always", "on_failure", "stdout", "stderr"]},
                "digest": {"type": "string"}, "size": {"type": "integer"}, "created_at": {"type": "string"}}}),
        );
        schemas.insert("JobSummary".into(), job_summary_schema());
        schemas.insert(
            "TaskPage".into(),
            json!({"type": "object", "required": ["job_id", "total", "tasks", "next_after"], "properties": {
                "job_id": {"type": "integer"}, "total": {"type": "integer", "minimum": 0},
                "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                "next_after": {"type": ["integer", "null"]}}}),
        );
        schemas.insert(
            "Created".into(),
            json!({"type": "object", "required": ["digest", "size"], "properties": {
                "id": {"type": "integer"}, "digest": {"type": "string"}, "size": {"type": "integer"}}}),
        );
    }
    if let Some(components) = doc["components"].as_object_mut() {
        components.insert("securitySchemes".into(), security_schemes());
    }
    complete(&mut doc);
    crate::triggers::hooks::openapi::unguard_hooks(&mut doc);
    doc
}

/// A job in the list: its tasks counted per state and per outcome of their
/// last attempt ([`JobSummary`](testfleet_wire::api::JobSummary)).
fn job_summary_schema() -> Value {
    let counts = |names: &[&str]| {
        let props: serde_json::Map<String, Value> = names
            .iter()
            .map(|n| ((*n).to_owned(), json!({"type": "integer", "minimum": 0})))
            .collect();
        json!({"type": "object", "required": names, "properties": props})
    };
    json!({"type": "object",
        "required": ["id", "name", "queue", "priority", "state", "created_at", "tasks", "outcomes", "attempts", "retried"],
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "queue": {"type": "string"}, "priority": {"type": "integer"},
            "state": {"type": "string", "enum": ["queued", "running", "passed", "failed", "cancelled"]},
            "created_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]},
            "integration_id": {"type": ["string", "null"]},
            "tasks": counts(&["total", "queued", "running", "passed", "failed", "cancelled"]),
            "outcomes": counts(&["passed", "failed", "flaky", "timed_out", "stalled", "crashed", "infra_error", "cancelled"]),
            "attempts": {"type": "integer", "minimum": 0},
            "retried": {"type": "integer", "minimum": 0}}})
}

/// How callers authenticate (docs/security.md). Writes from an allowed
/// network need no credentials; HTTP Digest (RFC 7616) is accepted like Basic.
fn security_schemes() -> Value {
    json!({
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (`testfleet token add`)"},
        "basicAuth": {"type": "http", "scheme": "basic", "description": "A user and password; HTTP Digest with the same user works too"},
        "agentHost": {"type": "apiKey", "in": "header", "name": crate::blobs::AGENT_HOST_HEADER, "description": "The agent's hostname"},
        "agentSecret": {"type": "apiKey", "in": "header", "name": crate::blobs::AGENT_SECRET_HEADER, "description": "The agent's secret (shared or per host)"}
    })
}

/// The dashboard's JSON twins of the fleet and queues pages.
fn fleet_paths() -> Value {
    json!({
            "/api/v1/fleet": {"get": {
                "summary": "Every agent with its state (busy, idle, offline, retired), labels, current attempt, lease, last contact and load, and a count per state: the dashboard's fleet page",
                "responses": {"200": {"description": "The fleet", "content": {"application/json": {"schema": {"type": "object", "required": ["summary", "agents"], "properties": {
                    "summary": {"type": "object", "properties": {"total": {"type": "integer"}, "alive": {"type": "integer"}, "busy": {"type": "integer"}, "idle": {"type": "integer"}, "offline": {"type": "integer"}}},
                    "agents": {"type": "array", "items": {"type": "object", "properties": {
                        "hostname": {"type": "string"}, "activity": {"type": "string", "enum": ["busy", "idle", "offline", "retired"]},
                        "labels": {"type": "object"}, "status": {"type": ["string", "null"]}, "current": {"type": ["object", "null"]},
                        "lease_expires_at": {"type": ["string", "null"]}, "last_seen": {"type": ["string", "null"]}, "load": {"type": ["number", "null"]}}}}}}}}}}
            }},
            "/api/v1/queues": {"get": {
                "summary": "The fair-share queues in the order they are served: depth, running attempts, weight, share used, oldest waiting task, and why the first waiting tasks wait",
                "responses": {"200": {"description": "The queues", "content": {"application/json": {"schema": {"type": "object", "required": ["queues"], "properties": {
                    "queues": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "weight": {"type": "number"}, "share": {"type": "number"}, "depth": {"type": "integer"},
                        "running": {"type": "integer"}, "oldest_queued_at": {"type": ["string", "null"]},
                        "pending": {"type": "array", "items": {"type": "object", "properties": {"task_id": {"type": "integer"}, "job_id": {"type": "integer"}, "queued_at": {"type": "string"}, "why": {"type": "array", "items": {"type": "string"}}}}}}}}}}}}}}
            }}
    })
}

fn base_spec() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "testfleet coordinator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit jobs, follow their tasks and logs, and list agents. Agents speak socket.io at /socket.io/ (see docs/protocol.md)."
        },
        "paths": {
            "/api/v1/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "description": "The body is a TOML job file (Content-Type application/toml) or its JSON form (application/json). A refused job names the line, column and field.",
                    "requestBody": {"required": true, "content": {
                        "application/toml": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}
                    }},
                    "responses": {
                        "201": {"description": "Queued", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                        "400": error_response("The body is not UTF-8"),
                        "413": error_response("Body too large"),
                        "422": error_response("Invalid job file")
                    }
                },
                "get": {
                    "summary": "List jobs, newest first, with their tasks counted per state and outcome (not the tasks: see /api/v1/jobs/{id}/tasks)",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 1000, "default": 50}},
                        {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["queued", "running", "passed", "failed", "cancelled"]}}
                    ],
                    "responses": {"200": {"description": "Jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/JobSummary"}}}}}, "400": error_response("Bad query")}
                }
            },
            "/api/v1/jobs/{id}": {"get": {
                "summary": "Show a job with its tasks",
                "parameters": [id_param("job")],
                "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "404": error_response("No such job")}
            }},
            "/api/v1/jobs/{id}/tasks": {"get": {
                "summary": "A page of a job's tasks in id order; ask for the next page with `after` = the answer's `next_after` (absent on the last page)",
                "parameters": [id_param("job"),
                    {"name": "after", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX, "default": 0}, "description": "Tasks with a greater id (the previous page's `next_after`)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": testfleet_wire::api::MAX_TASK_PAGE, "default": testfleet_wire::api::MAX_TASK_PAGE}}],
                "responses": {"200": {"description": "A page of tasks", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskPage"}}}}, "400": error_response("Bad query"), "404": error_response("No such job")}
            }},
            "/api/v1/jobs/{id}/cancel": {"post": {
                "summary": "Cancel a job: queued tasks end, running agents are told to stop",
                "parameters": [id_param("job")],
                "responses": {"200": {"description": "The cancelled job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "404": error_response("No such job")}
            }},
            "/api/v1/jobs/{id}/retry": {"post": {
                "summary": "Retry a finished job: its failed tasks are queued again as new attempts (their retry budgets are not refilled)",
                "parameters": [id_param("job")],
                "responses": {"200": {"description": "The tasks queued again and the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Retry"}}}}, "404": error_response("No such job"), "409": error_response("The job is still running, or none of its tasks failed")}
            }},
            "/api/v1/tasks/{id}/retry": {"post": {
                "summary": "Retry one failed task as a new attempt (its job may still be running)",
                "parameters": [id_param("task")],
                "responses": {"200": {"description": "The task queued again and its job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Retry"}}}}, "404": error_response("No such task"), "409": error_response("The task did not fail (it is queued, running, passed or cancelled)")}
            }},
            "/api/v1/tasks/{id}": {"get": {
                "summary": "Show a task with its attempts",
                "parameters": [id_param("task")],
                "responses": {"200": {"description": "The task", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": error_response("No such task")}
            }},
            "/api/v1/tasks/{id}/log": {"get": {
                "summary": "A slice of a task's log (its latest attempt unless `attempt` is given); follow with `offset = next_offset` until `complete`",
                "parameters": [id_param("task"),
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "Byte offset into the log"},
                    {"name": "attempt", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX}, "description": "An attempt id of the task (default: its latest)"}],
                "responses": {"200": {"description": "Log slice", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogSlice"}}}}, "404": error_response("No such task")}
            }},
            "/api/v1/jobs/{id}/report": {"get": {
                "summary": "The job's results as one JUnit XML document (format=junit, default) or Taskotron-style TAP 13 (format=tap)",
                "parameters": [id_param("job"), {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["junit", "tap"]}}],
                "responses": {"200": {"description": "The report", "content": {"application/xml": {}, "text/plain": {}}}, "400": error_response("Unknown format"), "404": error_response("No such job")}
            }},
            "/api/v1/attempts/{id}/summary": {"get": {
                "summary": "The seed-000 run summary of an attempt: {integrationId, integrationTimestamp, hostname, platform, executedTests, crashed}",
                "parameters": [id_param("attempt")],
                "responses": {"200": {"description": "Run summary", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": error_response("No such attempt")}
            }},
            "/api/v1/attempts/{id}/results": {"get": {
                "summary": "The normalized results an attempt uploaded (docs/results-model.md)",
                "parameters": [id_param("attempt")],
                "responses": {"200": {"description": "Results", "content": {"application/json": {"schema": {"type": "array"}}}}, "404": error_response("No such attempt")}
            }},
            "/api/v1/tasks/{id}/why": {"get": {
                "summary": "Why a task is still pending: no matching agent, all busy or offline, queue share, tasks ahead",
                "parameters": [id_param("task")],
                "responses": {"200": {"description": "Reasons", "content": {"application/json": {"schema": {"type": "object", "properties": {"task_id": {"type": "integer"}, "reasons": {"type": "array", "items": {"type": "string"}}}}}}}, "404": error_response("No such task")}
            }},
            "/api/v1/stats": {"get": {
                "summary": "Attempts stopped per threshold (count, runtimes, agent load), runtime history per task key, flaky counts",
                "responses": {"200": {"description": "Statistics", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }},
            "/api/v1/agents": {"get": {
                "summary": "Every agent seen, with its labels and whether it is online",
                "responses": {"200": {"description": "Agents", "content": {"application/json": {"schema": {"type": "array"}}}}}
            }},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "field": {"type": "string"}, "line": {"type": "integer"}, "column": {"type": "integer"}}},
            "JobSpec": {"type": "object", "description": "The job file's structure; see docs/job-file.md", "required": ["name", "task"]},
            "Job": {"type": "object", "required": ["id", "name", "state", "tasks"], "properties": {
                "id": {"type": "integer"}, "name": {"type": "string"}, "queue": {"type": "string"}, "priority": {"type": "integer"},
                "state": {"type": "string", "enum": ["queued", "running", "passed", "failed", "cancelled"]},
                "created_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]},
                "integration_id": {"type": ["string", "null"]},
                "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                "counts": {"type": "object"}}},
            "Task": {"type": "object", "properties": {
                "id": {"type": "integer"}, "job_id": {"type": "integer"}, "name": {"type": "string"},
                "state": {"type": "string", "enum": ["queued", "running", "passed", "failed", "cancelled"]},
                "stage": {"type": ["string", "null"]},
                "outcome": {"type": ["string", "null"], "enum": ["passed", "failed", "flaky", "timed_out", "stalled", "crashed", "infra_error", "cancelled", null]},
                "agent": {"type": ["string", "null"]}, "pinned_agent": {"type": ["string", "null"]},
                "detail_message": {"type": ["string", "null"]}, "attempts": {"type": "integer"}, "flaky": {"type": "boolean"},
                "counts": {"type": "object"}, "metrics": {"type": "array"}}},
            "Retry": {"type": "object", "required": ["retried", "job"], "properties": {
                "retried": {"type": "array", "items": {"type": "integer"}, "description": "The ids of the tasks queued again"},
                "job": {"$ref": "#/components/schemas/Job"}}},
            "LogSlice": {"type": "object", "properties": {
                "task_id": {"type": "integer"}, "attempt_id": {"type": ["integer", "null"]}, "offset": {"type": "integer"},
                "next_offset": {"type": "integer"}, "data": {"type": "string"}, "complete": {"type": "boolean"}}}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        let doc = spec();
        for (path, method) in ROUTES
            .iter()
            .chain(crate::analytics::openapi::ROUTES)
            .chain(crate::triggers::hooks::openapi::ROUTES)
        {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is missing from the OpenAPI document"
            );
        }
        assert_eq!(
            doc["paths"].as_object().map(|p| p.len()),
            Some(
                17 + 7 + crate::analytics::openapi::PATHS + crate::triggers::hooks::openapi::PATHS
            )
        );
    }
}
