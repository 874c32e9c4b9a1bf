//! The OpenAPI 3.1 description of the REST API, served at `/api/v1/openapi.json`.
//!
//! Written by hand and kept honest by a test that every route of the router
//! is described here.

use axum::Json;
use serde_json::{Value, json};

/// Paths and methods of the REST API, as the router serves them (checked by tests).
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/jobs", "post"),
    ("/api/v1/jobs", "get"),
    ("/api/v1/jobs/{id}", "get"),
    ("/api/v1/jobs/{id}/cancel", "post"),
    ("/api/v1/tasks/{id}", "get"),
    ("/api/v1/tasks/{id}/log", "get"),
    ("/api/v1/jobs/{id}/report", "get"),
    ("/api/v1/attempts/{id}/results", "get"),
    ("/api/v1/attempts/{id}/summary", "get"),
    ("/api/v1/tasks/{id}/why", "get"),
    ("/api/v1/stats", "get"),
    ("/api/v1/agents", "get"),
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

fn id_param(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}, "description": format!("{what} id")})
}

fn error_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

pub fn spec() -> Value {
    let mut doc = base_spec();
    // Blobs, inputs and artifacts are described beside their handlers.
    if let (Some(paths), Value::Object(more)) =
        (doc["paths"].as_object_mut(), crate::blobs::openapi_paths())
    {
        paths.extend(more);
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.insert(
            "Artifact".into(),
            json!({"type": "object", "required": ["id", "path", "kind", "digest", "size"], "properties": {
                "id": {"type": "integer"}, "job_id": {"type": "integer"}, "task_id": {"type": "integer"},
                "task_name": {"type": "string"}, "attempt_id": {"type": "integer"}, "attempt": {"type": "integer"},
                "outcome": {"type": ["string", "null"]}, "path": {"type": "string"},
                "kind": {"type": "string", "enum": ["always", "on_failure", "stdout", "stderr"]},
                "digest": {"type": "string"}, "size": {"type": "integer"}, "created_at": {"type": "string"}}}),
        );
    }
    doc
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
                        "413": error_response("Body too large"),
                        "422": error_response("Invalid job file")
                    }
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                        {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["queued", "running", "passed", "failed", "cancelled"]}}
                    ],
                    "responses": {"200": {"description": "Jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}}, "400": error_response("Bad query")}
                }
            },
            "/api/v1/jobs/{id}": {"get": {
                "summary": "Show a job with its tasks",
                "parameters": [id_param("job")],
                "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "404": error_response("No such job")}
            }},
            "/api/v1/jobs/{id}/cancel": {"post": {
                "summary": "Cancel a job: queued tasks end, running agents are told to stop",
                "parameters": [id_param("job")],
                "responses": {"200": {"description": "The cancelled job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "404": error_response("No such job")}
            }},
            "/api/v1/tasks/{id}": {"get": {
                "summary": "Show a task with its attempts",
                "parameters": [id_param("task")],
                "responses": {"200": {"description": "The task", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": error_response("No such task")}
            }},
            "/api/v1/tasks/{id}/log": {"get": {
                "summary": "A slice of a task's log (its latest attempt unless `attempt` is given); follow with `offset = next_offset` until `complete`",
                "parameters": [id_param("task"),
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "attempt", "in": "query", "schema": {"type": "integer"}}],
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
                "responses": {"200": {"description": "OpenAPI 3.1"}}
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
        for (path, method) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is missing from the OpenAPI document"
            );
        }
        assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(12 + 7));
    }
}
