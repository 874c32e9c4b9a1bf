//! The one error answer of every HTTP route: a status and a JSON body.
//!
//! The REST API (`rest`, `blobs`) answers `{error, field?, line?, column?}`
//! ([`ErrorBody`]); the ResultsDB API answers `{message}`, the shape its
//! clients read. Both come from [`HttpError`], so a store error, a bad path,
//! a malformed JSON body or query string is refused the same way everywhere,
//! never with axum's plain-text rejections.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use testfleet_cas::CasError;
use testfleet_core::JobSpecError;
use testfleet_store::StoreError;
use testfleet_wire::api::ErrorBody;

use crate::coordinator::SubmitError;

/// Which body an error answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// testfleet's [`ErrorBody`]: `{error, field?, line?, column?}`.
    Testfleet,
    /// ResultsDB's `{message}`.
    ResultsDb,
}

/// An error answer: a status and a message, with the job file's location
/// when the message is about one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    line: Option<usize>,
    column: Option<usize>,
    shape: ErrorShape,
}

impl HttpError {
    /// An answer with `status` and `message` (a lowercase fragment).
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
            field: None,
            line: None,
            column: None,
            shape: ErrorShape::Testfleet,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    /// `500`, logged here: the caller learns the kind, the log the details.
    pub fn internal(context: &str, error: &dyn std::error::Error) -> HttpError {
        tracing::error!("{context}: {error:?}");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {context}: {error}"),
        )
    }

    /// The same error with ResultsDB's `{message}` body.
    pub fn resultsdb(mut self) -> HttpError {
        self.shape = ErrorShape::ResultsDb;
        self
    }

    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message of the answer.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A positive id in a path, or `400` naming what was expected.
    pub fn parse_id(kind: &str, raw: &str) -> Result<i64, HttpError> {
        raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            HttpError::bad_request(format!(
                "`{raw}` is not a {kind} id (an integer from 1 to {})",
                i64::MAX
            ))
        })
    }

    fn from_rejection(status: StatusCode, what: &str, detail: &str) -> HttpError {
        HttpError::new(status, format!("{what}: {}", lowercase_first(detail)))
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self.shape {
            ErrorShape::Testfleet => (
                self.status,
                Json(ErrorBody {
                    error: self.message,
                    field: self.field,
                    line: self.line,
                    column: self.column,
                }),
            )
                .into_response(),
            ErrorShape::ResultsDb => (
                self.status,
                Json(testfleet_wire::resultsdb::Message {
                    message: self.message,
                }),
            )
                .into_response(),
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        match e {
            StoreError::Conflict(what) => HttpError::new(StatusCode::CONFLICT, what),
            StoreError::NotFound(what) => HttpError::not_found(format!("{what} not found")),
            other => HttpError::internal("store", &other),
        }
    }
}

impl From<CasError> for HttpError {
    fn from(e: CasError) -> HttpError {
        let status = match &e {
            CasError::InvalidDigest(_)
            | CasError::UnsafePath { .. }
            | CasError::Manifest(_)
            | CasError::Transfer(_) => StatusCode::BAD_REQUEST,
            CasError::NotFound(_) => StatusCode::NOT_FOUND,
            CasError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CasError::Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CasError::Store(_) | CasError::Io { .. } | CasError::Config(_) => {
                return HttpError::internal("blob store", &e);
            }
        };
        HttpError::new(status, e.to_string())
    }
}

impl From<JobSpecError> for HttpError {
    fn from(e: JobSpecError) -> HttpError {
        HttpError {
            message: format!("invalid job file: {e}"),
            field: e.field,
            line: e.line,
            column: e.column,
            ..HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "")
        }
    }
}

impl From<SubmitError> for HttpError {
    fn from(e: SubmitError) -> HttpError {
        match e {
            SubmitError::Invalid(msg) => HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, msg),
            SubmitError::Store(s) => s.into(),
        }
    }
}

impl From<JsonRejection> for HttpError {
    fn from(r: JsonRejection) -> HttpError {
        let what = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                return HttpError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the body must be JSON, sent with `Content-Type: application/json`",
                );
            }
            JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON",
            JsonRejection::JsonDataError(_) => "the JSON body does not have the documented shape",
            _ => "the body could not be read",
        };
        HttpError::from_rejection(r.status(), what, &r.body_text())
    }
}

impl From<BytesRejection> for HttpError {
    fn from(r: BytesRejection) -> HttpError {
        HttpError::from_rejection(r.status(), "the body could not be read", &r.body_text())
    }
}

impl From<PathRejection> for HttpError {
    fn from(r: PathRejection) -> HttpError {
        HttpError::from_rejection(r.status(), "bad path", &r.body_text())
    }
}

impl From<QueryRejection> for HttpError {
    fn from(r: QueryRejection) -> HttpError {
        HttpError::from_rejection(
            StatusCode::BAD_REQUEST,
            "bad query string; see /api/v1/openapi.json",
            &r.body_text(),
        )
    }
}

/// [`axum::extract::Path`], refused with an [`HttpError`].
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// [`axum::extract::Query`], refused with an [`HttpError`].
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// [`axum::Json`], refused with an [`HttpError`] (`415` without a JSON
/// content type, `400` for bad syntax, `422` for the wrong shape, `413` past
/// the body limit).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

/// The whole body as [`Bytes`], refused with an [`HttpError`] (`413` past
/// the body limit).
#[derive(Debug)]
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        Ok(ApiBytes(Bytes::from_request(request, state).await?))
    }
}

/// The answer to a method a route does not serve (`405`; axum adds `Allow`).
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path; see /api/v1/openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: HttpError) -> (StatusCode, String, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let content_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn testfleet_errors_are_error_bodies_and_resultsdb_errors_are_messages() {
        let (status, content_type, json) = body(HttpError::not_found("job 7 not found")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, "application/json");
        assert_eq!(json, serde_json::json!({"error": "job 7 not found"}));

        let (status, content_type, json) =
            body(HttpError::not_found("Result not found").resultsdb()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, "application/json");
        assert_eq!(json, serde_json::json!({"message": "Result not found"}));
    }

    #[tokio::test]
    async fn a_job_file_error_keeps_its_location() {
        let e = testfleet_core::JobSpec::from_toml("name = \"j\"\n[[task]]\nname = 5\n")
            .expect_err("a task name must be a string");
        let (status, _, json) = body(HttpError::from(e)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid job file")
        );
        assert_eq!(json["line"], 3, "{json}");
    }

    #[test]
    fn ids_are_positive_i64s() {
        assert_eq!(HttpError::parse_id("job", "42").unwrap(), 42);
        for bad in ["0", "-1", "x", "9223372036854775808", ""] {
            let e = HttpError::parse_id("job", bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message().contains("is not a job id"), "{}", e.message());
        }
    }
}
