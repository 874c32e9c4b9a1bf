//! A typed client for the coordinator's REST API, used by the CLI, the demo
//! and the tests.

mod analysis;
mod blobs;
mod events;

use std::time::Duration;

use serde::de::DeserializeOwned;
use testfleet_wire::api::{
    AgentView, ErrorBody, ExportersView, JobSummary, JobView, LogSlice, RetryView, StatsView,
    TaskDetail, TaskPage, WhyView,
};

pub use analysis::SeriesQuery;
pub use blobs::{AgentHttp, UploadError, UploadReport};
pub use events::EventQuery;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the coordinator at {url}: {reason} (is `testfleet server` running there? set --server or TESTFLEET_SERVER)"
    )]
    Unreachable { url: String, reason: String },
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        body: Option<ErrorBody>,
    },
    #[error("unexpected answer from the coordinator: {0}")]
    Decode(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How the client proves who it is (never printed).
#[derive(Clone)]
pub enum Credentials {
    None,
    Token(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Token(_) => "Token(…)",
            Credentials::Basic { .. } => "Basic(…)",
        })
    }
}

/// The coordinator's REST API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    credentials: Credentials,
}

impl ApiClient {
    /// `base` is the coordinator's URL, such as `http://127.0.0.1:8080`;
    /// `https` URLs are checked against the system's trusted roots.
    pub fn new(base: &str) -> ApiClient {
        ApiClient::with_ca(base, None)
            .unwrap_or_else(|_| ApiClient::plain(base, reqwest::Client::builder()))
    }

    /// As [`ApiClient::new`], trusting the CA certificate in `ca_file` (PEM)
    /// for `https` URLs instead of the system's roots.
    pub fn with_ca(
        base: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<ApiClient, ClientError> {
        let mut builder = reqwest::Client::builder();
        if base.starts_with("https://") {
            let tls = testfleet_sio::tls::client_config(ca_file)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            builder = builder.tls_backend_preconfigured((*tls).clone());
        }
        Ok(ApiClient::plain(base, builder))
    }

    fn plain(base: &str, builder: reqwest::ClientBuilder) -> ApiClient {
        testfleet_sio::tls::install_default_provider();
        let http = builder
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
            credentials: Credentials::None,
        }
    }

    /// Sends these credentials with every request.
    pub fn with_credentials(mut self, credentials: Credentials) -> ApiClient {
        self.credentials = credentials;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let req = self.authorize(req);
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            let message = match &body {
                Some(b) => b.error.clone(),
                None => format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()),
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
                body,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => req,
            Credentials::Token(t) => req.bearer_auth(t),
            Credentials::Basic { user, password } => req.basic_auth(user, Some(password)),
        }
    }

    /// The innermost cause says what happened ("Connection refused"); the
    /// layers above it repeat the URL.
    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let reason = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            cause.to_string()
        };
        ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// Submits a job file (TOML, or JSON when it starts with `{`).
    pub async fn submit(&self, job_file: &str) -> Result<JobView, ClientError> {
        let content_type = if job_file.trim_start().starts_with('{') {
            "application/json"
        } else {
            "application/toml"
        };
        let req = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(job_file.to_owned());
        self.send(req).await
    }

    pub async fn job(&self, id: i64) -> Result<JobView, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/jobs/{id}", self.base)))
            .await
    }

    /// The newest jobs, each with its tasks counted (not listed): see
    /// [`ApiClient::job_tasks`] for the tasks.
    pub async fn jobs(
        &self,
        limit: u32,
        state: Option<&str>,
    ) -> Result<Vec<JobSummary>, ClientError> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/jobs", self.base))
            .query(&[("limit", limit.to_string())]);
        if let Some(s) = state {
            req = req.query(&[("state", s)]);
        }
        self.send(req).await
    }

    /// A page of at most `limit` tasks of job `id` whose ids are greater than
    /// `after` (`None` for the first page); the answer's `next_after` is the
    /// next page's `after`.
    pub async fn job_tasks(
        &self,
        id: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<TaskPage, ClientError> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/tasks", self.base))
            .query(&[("limit", limit.to_string())]);
        if let Some(after) = after {
            req = req.query(&[("after", after.to_string())]);
        }
        self.send(req).await
    }

    /// Queues the failed tasks of a finished job again as new attempts.
    pub async fn retry_job(&self, id: i64) -> Result<RetryView, ClientError> {
        self.send(
            self.http
                .post(format!("{}/api/v1/jobs/{id}/retry", self.base)),
        )
        .await
    }

    /// Queues one failed task again as a new attempt.
    pub async fn retry_task(&self, id: i64) -> Result<RetryView, ClientError> {
        self.send(
            self.http
                .post(format!("{}/api/v1/tasks/{id}/retry", self.base)),
        )
        .await
    }

    pub async fn cancel(&self, id: i64) -> Result<JobView, ClientError> {
        self.send(
            self.http
                .post(format!("{}/api/v1/jobs/{id}/cancel", self.base)),
        )
        .await
    }

    pub async fn task(&self, id: i64) -> Result<TaskDetail, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/tasks/{id}", self.base)))
            .await
    }

    pub async fn task_log(&self, id: i64, offset: u64) -> Result<LogSlice, ClientError> {
        let req = self
            .http
            .get(format!("{}/api/v1/tasks/{id}/log", self.base))
            .query(&[("offset", offset)]);
        self.send(req).await
    }

    /// The job's results as one JUnit XML document (`junit`) or TAP 13 (`tap`).
    pub async fn job_report(&self, id: i64, format: &str) -> Result<String, ClientError> {
        let req = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/report", self.base))
            .query(&[("format", format)]);
        let resp = self
            .authorize(req)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
            let message = body
                .as_ref()
                .map_or_else(|| format!("HTTP {status}"), |b| b.error.clone());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
                body,
            });
        }
        Ok(text)
    }

    /// The seed-000 run summary of an attempt.
    pub async fn attempt_summary(
        &self,
        id: i64,
    ) -> Result<testfleet_wire::api::RunSummary, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/attempts/{id}/summary", self.base)),
        )
        .await
    }

    /// Why a task is still pending.
    pub async fn why(&self, task: i64) -> Result<WhyView, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/tasks/{task}/why", self.base)),
        )
        .await
    }

    /// The exporters' delivery status (pending, delivered, last error).
    pub async fn exporters(&self) -> Result<ExportersView, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/exporters", self.base)))
            .await
    }

    /// Threshold, runtime and flaky statistics.
    pub async fn stats(&self) -> Result<StatsView, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/stats", self.base)))
            .await
    }

    pub async fn agents(&self) -> Result<Vec<AgentView>, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/agents", self.base)))
            .await
    }

    /// `GET /api/v1/autoscale`: how many agents each label set wants.
    pub async fn autoscale(&self) -> Result<testfleet_wire::scale::ScalePlan, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/autoscale", self.base)))
            .await
    }
}
