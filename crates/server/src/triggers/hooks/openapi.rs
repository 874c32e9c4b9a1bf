//! The OpenAPI description of the webhooks and the events log, merged into
//! `/api/v1/openapi.json` by `crate::openapi::spec`.

use serde_json::{Map, Value, json};
use testfleet_wire::events::MAX_EVENT_PAGE;

use crate::openapi::{error_response, id_param};

/// Paths and methods of these routes, as the router serves them.
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/hooks/github", "post"),
    ("/api/v1/hooks/gitlab", "post"),
    ("/api/v1/hooks/gerrit", "post"),
    ("/api/v1/events", "get"),
    ("/api/v1/events/{id}", "get"),
];

/// Distinct paths in [`ROUTES`].
#[cfg(test)]
pub const PATHS: usize = 5;

const HOOK_PREFIX: &str = "/api/v1/hooks/";

fn hook(summary: &str, headers: &[(&str, &str)], query: Option<Value>) -> Value {
    let mut params: Vec<Value> = headers
        .iter()
        .map(|(name, desc)| json!({"name": name, "in": "header", "schema": {"type": "string"}, "description": desc}))
        .collect();
    params.extend(query);
    json!({"post": {
        "summary": summary,
        "parameters": params,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
            "202": {"description": "Recorded: queued, ignored (with the reason) or a duplicate of an earlier delivery",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HookAnswer"}}}},
            "400": error_response("The body is not JSON, or does not name its event"),
            "401": error_response("A missing or wrong signature, token or secret, or a sender outside the allowed networks; nothing is stored"),
            "404": error_response("This hook is not configured"),
            "413": error_response("The body is over the hooks' size limit"),
            "503": error_response("No trigger rules are configured")
        }
    }})
}

/// The paths.
pub fn paths() -> Value {
    let idem = (
        "Idempotency-Key",
        "Makes the delivery unique: seen before, nothing is queued again",
    );
    let mut github = hook(
        "A GitHub webhook (`push`, `pull_request`; `ping` is answered 200)",
        &[
            (
                "X-Hub-Signature-256",
                "`sha256=` and the hex HMAC-SHA256 of the body under the webhook's secret",
            ),
            ("X-GitHub-Event", "The event's kind"),
            ("X-GitHub-Delivery", "The delivery id (de-duplication)"),
            idem,
        ],
        None,
    );
    github["post"]["responses"]["200"] = json!({"description": "`ping` answered",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"message": {"type": "string"}}}}}});
    let text = |name: &str, desc: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "description": desc});
    json!({
        "/api/v1/hooks/github": github,
        "/api/v1/hooks/gitlab": hook(
            "A GitLab webhook (`push`, `merge_request`, `pipeline`)",
            &[
                ("X-Gitlab-Token", "The webhook's secret token"),
                ("webhook-id", "Signing tokens: the message id"),
                ("webhook-timestamp", "Signing tokens: Unix seconds"),
                ("webhook-signature", "Signing tokens: `v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`"),
                ("X-Gitlab-Event-UUID", "The delivery id (de-duplication)"),
                idem,
            ],
            None,
        ),
        "/api/v1/hooks/gerrit": hook(
            "A Gerrit webhook (`change-merged`, `patchset-created`); unique per type, change, patch set and sha",
            &[idem],
            Some(text("secret", "The secret configured for the Gerrit hook")),
        ),
        "/api/v1/events": {"get": {
            "summary": "The events log, newest first",
            "parameters": [
                {"name": "source", "in": "query", "schema": {"type": "string", "enum": ["amqp", "gerrit", "gitlab", "github", "manual"]}},
                {"name": "outcome", "in": "query", "schema": {"type": "string", "enum": ["queued", "ignored", "duplicate", "dropped", "error"]}},
                text("since", "Events at or after this time: RFC 3339, or an age such as `1d`, `12h`, `30m`, `2w`"),
                {"name": "after", "in": "query", "schema": {"type": "integer", "format": "int64"}, "description": "Only events with a greater id"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENT_PAGE, "default": 100}}
            ],
            "responses": {"200": {"description": "Events", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventList"}}}}}
        }},
        "/api/v1/events/{id}": {"get": {
            "summary": "One event with its body",
            "parameters": [id_param("event")],
            "responses": {
                "200": {"description": "The event", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventDetail"}}}},
                "404": error_response("No such event")
            }
        }}
    })
}

/// The schemas.
pub fn schemas() -> Map<String, Value> {
    let outcome =
        json!({"type": "string", "enum": ["queued", "ignored", "duplicate", "dropped", "error"]});
    let summary_props = json!({
        "id": {"type": "integer"}, "source": {"type": "string"}, "kind": {"type": "string"},
        "topic": {"type": "string"}, "delivery_id": {"type": ["string", "null"]},
        "received_at": {"type": "string"},
        "matched_rules": {"type": "array", "items": {"type": "string"}},
        "job_ids": {"type": "array", "items": {"type": "integer"}},
        "outcome": outcome, "reason": {"type": ["string", "null"]}});
    let required = json!([
        "id",
        "source",
        "kind",
        "topic",
        "received_at",
        "matched_rules",
        "job_ids",
        "outcome"
    ]);
    let mut detail_props = summary_props.clone();
    detail_props["dedup_key"] = json!({"type": ["string", "null"]});
    detail_props["body"] = json!({"type": "string", "description": "The request body as received"});
    let mut detail_required = required.clone();
    if let Some(list) = detail_required.as_array_mut() {
        list.push(json!("body"));
    }
    let mut out = Map::new();
    out.insert(
        "EventSummary".into(),
        json!({"type": "object", "required": required, "properties": summary_props}),
    );
    out.insert(
        "EventDetail".into(),
        json!({"type": "object", "required": detail_required, "properties": detail_props}),
    );
    out.insert(
        "EventList".into(),
        json!({"type": "object", "required": ["events"], "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/EventSummary"}}}}),
    );
    out.insert(
        "HookAnswer".into(),
        json!({"type": "object", "required": ["event_id", "outcome", "jobs"], "properties": {
            "event_id": {"type": "integer"}, "outcome": outcome,
            "jobs": {"type": "array", "items": {"type": "integer"}},
            "reason": {"type": ["string", "null"]}}}),
    );
    out
}

/// The hooks authenticate by their own signatures, not the API's
/// credentials: no security requirement, and no 403.
pub fn unguard_hooks(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if path.starts_with(HOOK_PREFIX) {
            let op = &mut item["post"];
            op["security"] = json!([]);
            if let Some(responses) = op["responses"].as_object_mut() {
                responses.remove("403");
            }
        }
    }
}
