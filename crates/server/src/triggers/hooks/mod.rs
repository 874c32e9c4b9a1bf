//! Webhooks: `POST /api/v1/hooks/github`, `/hooks/gitlab` and
//! `/hooks/gerrit` turn a product's event into jobs through the trigger
//! rules, durably and once.
//!
//! These routes are outside the API's auth guard: each authenticates its
//! sender by the product's own means (`verify`). A request that fails is
//! answered 401 and nothing is stored. A verified event is matched against
//! the rules (`super::plan`), then recorded in the events log with its jobs
//! in one store transaction ([`Coordinator::ingest_event`]); a delivery seen
//! before queues nothing (`source` says what makes an event unique). The
//! answer is 202 with [`HookAnswer`], also when no rule wanted the event
//! (with the reason). `events` serves the log (`GET /api/v1/events`) and
//! prunes it.

mod events;
pub(crate) mod openapi;
pub mod source;
pub mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use ipnet::IpNet;
use serde::Deserialize;
use testfleet_core::trigger::{Event, Source};
use testfleet_store::{Ingested, NewEvent};
use testfleet_wire::events::{EventOutcome, HookAnswer};

use crate::coordinator::Coordinator;
use crate::http_error::{ApiBytes, ApiQuery, HttpError};

pub use events::{events_router, start_retention};

/// GitHub's hook: the webhook's secret.
#[derive(Clone)]
pub struct GithubHook {
    pub secret: String,
}

/// GitLab's hook: the secret token (`X-Gitlab-Token`), a signing token
/// (`webhook-signature`), or both (either then suffices).
#[derive(Clone, Default)]
pub struct GitlabHook {
    pub token: Option<String>,
    /// The signing token's key: the bytes of `whsec_<base64>`.
    pub signing_key: Option<Vec<u8>>,
}

/// Gerrit's hook (its webhooks plugin does not sign): a secret in the URL
/// (`?secret=`) and/or the networks it may come from; both when both are set.
#[derive(Clone, Default)]
pub struct GerritHook {
    pub secret: Option<String>,
    pub allowed_cidrs: Vec<IpNet>,
}

/// The webhooks' configuration. A hook with nothing to check a sender
/// against is disabled (404).
#[derive(Clone)]
pub struct HooksConfig {
    pub github: Option<GithubHook>,
    pub gitlab: Option<GitlabHook>,
    pub gerrit: Option<GerritHook>,
    /// How far a signed `webhook-timestamp` may be from the coordinator's
    /// clock (Standard Webhooks suggests five minutes).
    pub timestamp_tolerance: Duration,
    /// Largest body accepted (413 past it; GitHub caps payloads at 25 MB).
    pub max_body_bytes: usize,
}

impl Default for HooksConfig {
    fn default() -> HooksConfig {
        HooksConfig {
            github: None,
            gitlab: None,
            gerrit: None,
            timestamp_tolerance: Duration::from_secs(300),
            max_body_bytes: 25 << 20,
        }
    }
}

/// Secrets stay out of logs and `Debug`: only which checks are configured.
impl std::fmt::Debug for HooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HooksConfig")
            .field("github", &self.github.as_ref().map(|_| "<secret>"))
            .field(
                "gitlab",
                &self.gitlab.as_ref().map(|g| {
                    (
                        g.token.as_ref().map(|_| "<token>"),
                        g.signing_key.as_ref().map(|_| "<signing token>"),
                    )
                }),
            )
            .field(
                "gerrit",
                &self.gerrit.as_ref().map(|g| {
                    (
                        g.secret.as_ref().map(|_| "<secret>"),
                        g.allowed_cidrs.clone(),
                    )
                }),
            )
            .field("timestamp_tolerance", &self.timestamp_tolerance)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// A signing token that is not `whsec_<base64>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a GitLab signing token is `whsec_` followed by base64 (as GitLab shows it)")]
pub struct BadSigningToken;

impl GitlabHook {
    /// The key of a signing token as GitLab shows it: `whsec_<base64>`.
    pub fn signing_key(token: &str) -> Result<Vec<u8>, BadSigningToken> {
        let b64 = token.trim().strip_prefix("whsec_").ok_or(BadSigningToken)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| BadSigningToken)?;
        if key.is_empty() {
            return Err(BadSigningToken);
        }
        Ok(key)
    }
}

/// The webhook routes (outside the auth guard; see the module docs).
pub fn router(c: Arc<Coordinator>) -> Router {
    let limit = c.config.hooks.max_body_bytes;
    Router::new()
        .route("/api/v1/hooks/github", post(github))
        .route("/api/v1/hooks/gitlab", post(gitlab))
        .route("/api/v1/hooks/gerrit", post(gerrit))
        .method_not_allowed_fallback(crate::http_error::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(c)
}

fn unauthorized(source: Source, peer: Option<IpAddr>, why: verify::Refusal) -> HttpError {
    tracing::info!(%source, ?peer, "webhook refused: {why}");
    HttpError::new(StatusCode::UNAUTHORIZED, why.to_string())
}

fn disabled(source: Source) -> HttpError {
    HttpError::not_found(format!(
        "the {source} hook is not configured ([server.hooks.{source}] in the config file)"
    ))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn peer(info: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    info.map(|Extension(ConnectInfo(addr))| addr.ip())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn github(
    State(c): State<Arc<Coordinator>>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, HttpError> {
    let hook = c
        .config
        .hooks
        .github
        .as_ref()
        .ok_or(disabled(Source::Github))?;
    verify::github(
        hook.secret.as_bytes(),
        header(&headers, "x-hub-signature-256"),
        &body,
    )
    .map_err(|e| unauthorized(Source::Github, peer(info), e))?;
    if header(&headers, "x-github-event") == Some("ping") {
        return Ok((
            StatusCode::OK,
            Json(testfleet_wire::resultsdb::Message {
                message: "pong".into(),
            }),
        )
            .into_response());
    }
    accept(&c, Source::Github, &headers, &body).await
}

async fn gitlab(
    State(c): State<Arc<Coordinator>>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, HttpError> {
    let hook = c
        .config
        .hooks
        .gitlab
        .as_ref()
        .ok_or(disabled(Source::Gitlab))?;
    let signature = header(&headers, "webhook-signature");
    // A signed request is checked by its signature when a signing token is
    // configured; otherwise by the secret token.
    let checked = match (&hook.signing_key, &hook.token) {
        (Some(key), token) if signature.is_some() || token.is_none() => verify::standard_webhook(
            key,
            verify::SignedHeaders {
                id: header(&headers, "webhook-id"),
                timestamp: header(&headers, "webhook-timestamp"),
                signature,
            },
            &body,
            unix_now(),
            c.config.hooks.timestamp_tolerance,
        ),
        (_, Some(token)) => verify::gitlab_token(token, header(&headers, "x-gitlab-token")),
        (_, None) => return Err(disabled(Source::Gitlab)),
    };
    checked.map_err(|e| unauthorized(Source::Gitlab, peer(info), e))?;
    accept(&c, Source::Gitlab, &headers, &body).await
}

#[derive(Debug, Deserialize)]
struct GerritQuery {
    secret: Option<String>,
}

async fn gerrit(
    State(c): State<Arc<Coordinator>>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiQuery(q): ApiQuery<GerritQuery>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, HttpError> {
    let hook = c
        .config
        .hooks
        .gerrit
        .as_ref()
        .ok_or(disabled(Source::Gerrit))?;
    if hook.secret.is_none() && hook.allowed_cidrs.is_empty() {
        return Err(disabled(Source::Gerrit));
    }
    let ip = peer(info);
    verify::gerrit(
        hook.secret.as_deref(),
        &hook.allowed_cidrs,
        q.secret.as_deref(),
        ip,
    )
    .map_err(|e| unauthorized(Source::Gerrit, ip, e))?;
    accept(&c, Source::Gerrit, &headers, &body).await
}

/// A verified webhook: parsed, matched, recorded with its jobs.
async fn accept(
    c: &Coordinator,
    src: Source,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, HttpError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| HttpError::bad_request("the body is not valid UTF-8"))?;
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| HttpError::bad_request(format!("the body is not JSON: {e}")))?;
    let delivery =
        source::delivery(src, headers, &json).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let Some(rules) = c.config.trigger_rules.clone() else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no trigger rules configured (trigger_rules in the config file's [server] section)",
        ));
    };
    let mut event = Event::new(src, json).with_kind(delivery.kind.clone());
    for name in source::EVENT_HEADERS {
        if let Some(v) = header(headers, name) {
            event.headers.insert((*name).to_owned(), v.to_owned());
        }
    }
    let no_match = format!("no rule matches {src} event `{}`", delivery.kind);
    let decided = super::decide::decide(&rules, &event, &no_match);
    let new = NewEvent {
        source: src.as_str().to_owned(),
        topic: format!("{src}.{}", delivery.kind),
        kind: delivery.kind,
        delivery_id: delivery.delivery_id,
        dedup_key: delivery.dedup_key,
        body: text.to_owned(),
        matched_rules: decided.matched_rules,
        unqueued: decided.unqueued,
        reason: decided.reason,
    };
    let answer = match c.ingest_event(&new, decided.jobs).await? {
        Ingested::New {
            event_id,
            outcome,
            jobs,
        } => HookAnswer {
            event_id,
            outcome,
            jobs: jobs.iter().map(|j| j.job_id).collect(),
            reason: new.reason,
        },
        Ingested::Duplicate {
            event_id,
            first_event_id,
            job_ids,
        } => HookAnswer {
            event_id,
            outcome: EventOutcome::Duplicate,
            jobs: job_ids,
            reason: Some(format!("duplicate of event {first_event_id}")),
        },
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_every_hook_secret_and_signing_tokens_parse() {
        let key = GitlabHook::signing_key("whsec_c2lnbmluZy1rZXk=").unwrap();
        assert_eq!(key, b"signing-key");
        assert_eq!(
            GitlabHook::signing_key("c2lnbmluZy1rZXk="),
            Err(BadSigningToken)
        );
        assert_eq!(GitlabHook::signing_key("whsec_!!"), Err(BadSigningToken));
        let config = HooksConfig {
            github: Some(GithubHook {
                secret: "gh-s3cret".into(),
            }),
            gitlab: Some(GitlabHook {
                token: Some("gl-s3cret".into()),
                signing_key: Some(key),
            }),
            gerrit: Some(GerritHook {
                secret: Some("gerrit-s3cret".into()),
                allowed_cidrs: vec![],
            }),
            ..HooksConfig::default()
        };
        let shown = format!("{config:?}");
        for secret in [
            "gh-s3cret",
            "gl-s3cret",
            "gerrit-s3cret",
            "signing-key",
            "115",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("<secret>"), "{shown}");
    }
}
