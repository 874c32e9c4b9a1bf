//! What a verified webhook is: its kind, its delivery id and the key that
//! makes it unique, per product.
//!
//! The de-duplication key is, in order: an explicit `Idempotency-Key`
//! header (any hook; GitLab sends one that stays the same across retries),
//! GitHub's `X-GitHub-Delivery`, GitLab's `X-Gitlab-Event-UUID` or
//! `webhook-id`, and for Gerrit, whose webhooks carry no delivery id, the
//! event's type, change number, patch set number and sha from the body
//! (the type too: `patchset-created` and `change-merged` of one patch set
//! are two events).

use axum::http::HeaderMap;
use serde_json::Value;
use testfleet_core::trigger::{Event, Source};

/// Why a verified body is not an event (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnEvent {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("the body has no `{0}` naming the event")]
    NoKind(&'static str),
}

/// A verified webhook, before the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub kind: String,
    pub delivery_id: Option<String>,
    pub dedup_key: Option<String>,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The headers a rule's event carries: the product's event and delivery
/// names, never tokens or signatures.
pub const EVENT_HEADERS: &[&str] = &[
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-instance",
    "idempotency-key",
    "webhook-id",
    "user-agent",
];

/// The kind, delivery id and de-duplication key of a webhook of `source`.
pub fn delivery(source: Source, headers: &HeaderMap, body: &Value) -> Result<Delivery, NotAnEvent> {
    let idempotency = header(headers, "idempotency-key");
    let (kind, delivery_id, natural_key) = match source {
        Source::Github => {
            let kind = header(headers, "x-github-event")
                .ok_or(NotAnEvent::MissingHeader("X-GitHub-Event"))?;
            let id = header(headers, "x-github-delivery").map(str::to_owned);
            (kind.to_owned(), id.clone(), id)
        }
        Source::Gitlab => {
            let kind =
                Event::kind_from_body(source, body).ok_or(NotAnEvent::NoKind("object_kind"))?;
            let id = header(headers, "x-gitlab-event-uuid")
                .or_else(|| header(headers, "webhook-id"))
                .map(str::to_owned);
            (kind, id.clone(), id)
        }
        Source::Gerrit => {
            let kind = Event::kind_from_body(source, body).ok_or(NotAnEvent::NoKind("type"))?;
            let key = gerrit_key(&kind, body);
            (kind, None, key)
        }
        Source::Amqp | Source::Manual => {
            let kind = Event::kind_from_body(source, body).unwrap_or_default();
            (kind, None, None)
        }
    };
    let dedup_key = match idempotency {
        Some(k) => Some(format!("{source}:{k}")),
        None => natural_key.map(|k| format!("{source}:{k}")),
    };
    Ok(Delivery {
        kind,
        delivery_id,
        dedup_key,
    })
}

/// Gerrit's `{type}:{change}:{patch set}:{sha}`, when the body names a
/// change and a patch set (`change-merged`, `patchset-created`, …); the sha
/// is the patch set's revision, or `newRev` of a merge.
fn gerrit_key(kind: &str, body: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let change = body.pointer("/change/number").and_then(text)?;
    let patch_set = body.pointer("/patchSet/number").and_then(text)?;
    let sha = body
        .pointer("/newRev")
        .or_else(|| body.pointer("/patchSet/revision"))
        .and_then(text)?;
    Some(format!("{kind}:{change}:{patch_set}:{sha}"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_per_product_and_the_explicit_idempotency_key_first() {
        let gh = delivery(
            Source::Github,
            &headers(&[("x-github-event", "push"), ("x-github-delivery", "d-1")]),
            &json!({}),
        )
        .unwrap();
        assert_eq!(gh.kind, "push");
        assert_eq!(gh.dedup_key.as_deref(), Some("github:d-1"));
        assert_eq!(
            delivery(Source::Github, &headers(&[]), &json!({})),
            Err(NotAnEvent::MissingHeader("X-GitHub-Event"))
        );

        let gl = delivery(
            Source::Gitlab,
            &headers(&[("x-gitlab-event-uuid", "u-1"), ("idempotency-key", "i-1")]),
            &json!({"object_kind": "merge_request"}),
        )
        .unwrap();
        assert_eq!(gl.kind, "merge_request");
        assert_eq!(gl.delivery_id.as_deref(), Some("u-1"));
        assert_eq!(gl.dedup_key.as_deref(), Some("gitlab:i-1"));

        let body = json!({"type": "change-merged", "change": {"number": 4711},
                          "patchSet": {"number": 3, "revision": "abc"}, "newRev": "def"});
        let ge = delivery(Source::Gerrit, &headers(&[]), &body).unwrap();
        assert_eq!(
            ge.dedup_key.as_deref(),
            Some("gerrit:change-merged:4711:3:def")
        );
        let no_change = delivery(
            Source::Gerrit,
            &headers(&[]),
            &json!({"type": "ref-updated"}),
        )
        .unwrap();
        assert_eq!(no_change.dedup_key, None);
        assert_eq!(
            delivery(Source::Gerrit, &headers(&[]), &json!({})),
            Err(NotAnEvent::NoKind("type"))
        );
    }
}
