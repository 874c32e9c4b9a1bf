//! The InfluxDB sink: one seed-000 point per benchmark value (and per crashed
//! test), in line protocol, written to InfluxDB 1.x `/write` or 2.x
//! `/api/v2/write`.
//!
//! A repeated delivery (a coordinator killed between InfluxDB's 2xx and the
//! cursor update) writes the same points again; InfluxDB keeps one point per
//! series and timestamp, so the data does not double.

use testfleet_formats::{InfluxContext, influx_lines};
use testfleet_store::{AttemptContext, ExportEvent, Store};

use super::{Delivered, DeliveryError, status_error, transport_error};

/// Which write API to use, with its credentials (its `Debug` hides them).
#[derive(Clone, PartialEq, Eq)]
pub enum InfluxApi {
    /// InfluxDB 1.x: `POST /write?db=…&precision=ns`, optional user and password.
    V1 {
        database: String,
        user: Option<String>,
        password: Option<String>,
    },
    /// InfluxDB 2.x: `POST /api/v2/write?org=…&bucket=…&precision=ns`, token auth.
    V2 {
        org: String,
        bucket: String,
        token: Option<String>,
    },
}

impl std::fmt::Debug for InfluxApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        match self {
            InfluxApi::V1 {
                database,
                user,
                password,
            } => f
                .debug_struct("V1")
                .field("database", database)
                .field("user", user)
                .field("password", &hidden(password))
                .finish(),
            InfluxApi::V2 { org, bucket, token } => f
                .debug_struct("V2")
                .field("org", org)
                .field("bucket", bucket)
                .field("token", &hidden(token))
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxConfig {
    /// Base URL, such as `http://influx:8086`.
    pub url: String,
    pub api: InfluxApi,
    /// Most points in one write request.
    pub batch_points: usize,
}

/// The line-protocol body of one attempt's results and its number of points.
/// The point time is the integration's timestamp, not the run's (seed 000).
pub fn influx_body(ctx: &AttemptContext) -> (String, usize) {
    let machine = ctx.machine.clone().unwrap_or_default();
    let ictx = InfluxContext {
        platform: machine.platform,
        host: ctx.agent.clone(),
        branch: ctx.branch.clone(),
        gcc: machine.compiler,
        cpu_model: machine.cpu_model,
        integration_id: ctx.integration_id.clone(),
        sha1: ctx.sha.clone(),
        timestamp_ns: ctx.integration_timestamp.saturating_mul(1_000_000),
        metric_tag: false,
    };
    let mut body = String::new();
    for r in &ctx.results {
        body.push_str(&influx_lines(r, &ictx));
    }
    let points = body.lines().count();
    (body, points)
}

#[derive(Clone)]
pub(super) struct InfluxSink {
    http: reqwest::Client,
    config: InfluxConfig,
}

impl InfluxSink {
    pub(super) fn new(http: reqwest::Client, config: InfluxConfig) -> InfluxSink {
        InfluxSink { http, config }
    }

    /// Delivers whole attempts, as many as fit in one request (one attempt
    /// larger than a request is split). The cursor moves only past attempts
    /// whose every point was accepted.
    pub(super) async fn deliver(
        &self,
        store: &Store,
        batch: &[ExportEvent],
    ) -> Result<Delivered, DeliveryError> {
        let max = self.config.batch_points.max(1);
        let mut body = String::new();
        let mut points = 0usize;
        let mut through = 0;
        for event in batch {
            let ctx = store.attempt_context(event.attempt_id).await?;
            let (lines, n) = influx_body(&ctx);
            if points > 0 && points + n > max {
                break;
            }
            body.push_str(&lines);
            points += n;
            through = event.id;
        }
        if points <= max {
            self.write(body).await?;
        } else {
            // One attempt with more points than a request may carry.
            let lines: Vec<&str> = body.lines().collect();
            for chunk in lines.chunks(max) {
                let mut part = chunk.join("\n");
                part.push('\n');
                self.write(part).await?;
            }
        }
        Ok(Delivered {
            through,
            delivered: i64::try_from(points).unwrap_or(i64::MAX),
            dropped: 0,
        })
    }

    async fn write(&self, body: String) -> Result<(), DeliveryError> {
        if body.is_empty() {
            return Ok(());
        }
        let base = self.config.url.trim_end_matches('/');
        let request = match &self.config.api {
            InfluxApi::V1 {
                database,
                user,
                password,
            } => {
                let mut query = vec![("db", database.as_str()), ("precision", "ns")];
                if let Some(u) = user {
                    query.push(("u", u));
                }
                if let Some(p) = password {
                    query.push(("p", p));
                }
                self.http.post(format!("{base}/write")).query(&query)
            }
            InfluxApi::V2 { org, bucket, token } => {
                let r = self.http.post(format!("{base}/api/v2/write")).query(&[
                    ("org", org.as_str()),
                    ("bucket", bucket),
                    ("precision", "ns"),
                ]);
                match token {
                    Some(t) => r.header("Authorization", format!("Token {t}")),
                    None => r,
                }
            }
        };
        let response = request
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(status_error(status, &text))
    }
}
