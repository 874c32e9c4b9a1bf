//! Trigger events as the REST API shows them (`GET /api/v1/events`,
//! `GET /api/v1/events/{id}`) and the answer of a webhook
//! (`POST /api/v1/hooks/{source}`): every event received, the rules it
//! matched, the jobs it created or why none.

use serde::{Deserialize, Serialize};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Jobs were queued for it.
    Queued,
    /// No rule wanted it (the reason says why).
    Ignored,
    /// The same delivery (or the same change, patch set and sha) was seen
    /// before: nothing was queued again.
    Duplicate,
    /// A rule matched but its jobs were refused (for example, a rendered
    /// job file that does not validate).
    Dropped,
    /// It could not be handled.
    Error,
}

impl EventOutcome {
    /// Every outcome, in the order above.
    pub const ALL: [EventOutcome; 5] = [
        EventOutcome::Queued,
        EventOutcome::Ignored,
        EventOutcome::Duplicate,
        EventOutcome::Dropped,
        EventOutcome::Error,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Queued => "queued",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Dropped => "dropped",
            EventOutcome::Error => "error",
        }
    }
}

impl std::fmt::Display for EventOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`EventOutcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event outcome `{0}`; use queued, ignored, duplicate, dropped or error")]
pub struct UnknownOutcome(pub String);

impl std::str::FromStr for EventOutcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<EventOutcome, UnknownOutcome> {
        EventOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// One event in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: i64,
    /// `github`, `gitlab`, `gerrit` or `amqp`.
    pub source: String,
    /// The product's event name: `push`, `pull_request`, `merge_request`,
    /// `pipeline`, `change-merged`, …
    pub kind: String,
    /// The topic rules match on (`github.push`, `gerrit.change-merged`, …).
    pub topic: String,
    /// The sender's delivery id, when it sent one.
    pub delivery_id: Option<String>,
    /// RFC 3339.
    pub received_at: String,
    /// The names of the rules that matched.
    pub matched_rules: Vec<String>,
    /// The jobs created (for a duplicate: those of the first delivery).
    pub job_ids: Vec<i64>,
    pub outcome: EventOutcome,
    /// Why no job was created, or which event this one repeats.
    pub reason: Option<String>,
}

/// One event with its body (`GET /api/v1/events/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    /// What made it unique: a delivery id, an idempotency key, or
    /// `gerrit:<change>:<patch set>:<sha>`. `None` for a duplicate.
    pub dedup_key: Option<String>,
    /// The request body exactly as received (JSON text).
    pub body: String,
}

/// `GET /api/v1/events`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventList {
    pub events: Vec<EventSummary>,
}

/// The answer of a webhook (202 Accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAnswer {
    /// The recorded event (`GET /api/v1/events/{id}`).
    pub event_id: i64,
    pub outcome: EventOutcome,
    /// The jobs it created (for a duplicate: those of the first delivery).
    pub jobs: Vec<i64>,
    /// Why no job was created, or which event this one repeats.
    pub reason: Option<String>,
}

/// Most events one `GET /api/v1/events` returns.
pub const MAX_EVENT_PAGE: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_names() {
        for o in EventOutcome::ALL {
            assert_eq!(o.as_str().parse::<EventOutcome>(), Ok(o));
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        assert_eq!(
            "queue".parse::<EventOutcome>().unwrap_err().to_string(),
            "unknown event outcome `queue`; use queued, ignored, duplicate, dropped or error"
        );
    }
}
