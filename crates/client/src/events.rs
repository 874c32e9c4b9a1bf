//! The events log (`GET /api/v1/events`): trigger events received, the
//! rules they matched and the jobs they created, or why none.

use testfleet_wire::events::{EventDetail, EventList};

use crate::{ApiClient, ClientError};

/// Which events `GET /api/v1/events` lists (newest first); every field set
/// narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// `github`, `gitlab`, `gerrit`, …
    pub source: Option<String>,
    /// `queued`, `ignored`, `duplicate`, `dropped` or `error`.
    pub outcome: Option<String>,
    /// RFC 3339, or an age such as `1d`, `12h` or `30m`.
    pub since: Option<String>,
    /// Only events recorded after this one.
    pub after: Option<i64>,
    /// At most this many (the server's default when `None`).
    pub limit: Option<u32>,
}

impl EventQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = [
            ("source", &self.source),
            ("outcome", &self.outcome),
            ("since", &self.since),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        if let Some(after) = self.after {
            pairs.push(("after", after.to_string()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        pairs
    }
}

impl ApiClient {
    /// Trigger events matching `query`, newest first.
    pub async fn events(&self, query: &EventQuery) -> Result<EventList, ClientError> {
        let req = self
            .http
            .get(format!("{}/api/v1/events", self.base))
            .query(&query.pairs());
        self.send(req).await
    }

    /// One trigger event with its body.
    pub async fn event(&self, id: i64) -> Result<EventDetail, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/events/{id}", self.base)))
            .await
    }
}
