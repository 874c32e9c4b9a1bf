//! The external ResultsDB reporter: posts each finished attempt's results, as
//! the coordinator's own ResultsDB API shows them, to another ResultsDB.
//!
//! Every posted result carries `tf_uid` = `<attempt>.<n>` in its data. Before
//! posting an attempt, the reporter asks the receiver which of that attempt's
//! uids it already holds and posts only the others, so a retry after a lost
//! answer (or a coordinator restart) does not post a result twice.

use std::collections::HashSet;

use serde_json::{Value, json};
use testfleet_store::{ExportEvent, RdbResult, Store};

use super::{Delivered, DeliveryError, status_error, transport_error};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsDbReporterConfig {
    /// The receiver's API base, such as `https://resultsdb/api/v2.0`.
    pub url: String,
    /// This coordinator's URL as the receiver's users reach it, for `ref_url`s.
    pub public_url: String,
}

#[derive(Clone)]
pub(super) struct ResultsDbSink {
    http: reqwest::Client,
    config: ResultsDbReporterConfig,
}

impl ResultsDbSink {
    pub(super) fn new(http: reqwest::Client, config: ResultsDbReporterConfig) -> ResultsDbSink {
        ResultsDbSink { http, config }
    }

    fn api(&self) -> &str {
        self.config.url.trim_end_matches('/')
    }

    /// Posts attempt by attempt; the cursor moves past the attempts fully posted.
    pub(super) async fn deliver(
        &self,
        store: &Store,
        batch: &[ExportEvent],
    ) -> Result<Delivered, DeliveryError> {
        let mut done = Delivered {
            through: 0,
            delivered: 0,
            dropped: 0,
        };
        for event in batch {
            let results = store.rdb_attempt_results(event.attempt_id).await?;
            // Groups go as objects, so the receiver learns their description and link.
            let mut groups = std::collections::BTreeMap::new();
            for uuid in results.iter().flat_map(|r| &r.groups) {
                if !groups.contains_key(uuid)
                    && let Some(g) = store.rdb_group(uuid).await?
                {
                    let group = json!({
                        "uuid": g.uuid,
                        "description": g.description,
                        "ref_url": self.absolute(&g.ref_url),
                    });
                    groups.insert(uuid.clone(), group);
                }
            }
            match self.post_attempt(event.attempt_id, &results, &groups).await {
                Ok(n) => {
                    done.delivered += n;
                    done.through = event.id;
                }
                // Report what went through; the failed attempt is retried.
                Err(e) if done.through > 0 => {
                    tracing::warn!("resultsdb: {e}; retrying later");
                    return Ok(done);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    async fn post_attempt(
        &self,
        attempt_id: i64,
        results: &[RdbResult],
        groups: &std::collections::BTreeMap<String, Value>,
    ) -> Result<i64, DeliveryError> {
        let present = self.posted_uids(attempt_id).await?;
        let mut posted = 0;
        for r in results {
            let uid = r.data.get("tf_uid").and_then(|v| v.first());
            if uid.is_some_and(|u| present.contains(u)) {
                continue;
            }
            let body = self.result_body(r, groups);
            let response = self
                .http
                .post(format!("{}/results", self.api()))
                .json(&body)
                .send()
                .await
                .map_err(|e| transport_error(&e))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                return Err(status_error(status, &text));
            }
            posted += 1;
        }
        Ok(posted)
    }

    /// The `tf_uid`s of `attempt_id` the receiver holds already, following its pages.
    async fn posted_uids(&self, attempt_id: i64) -> Result<HashSet<String>, DeliveryError> {
        let mut uids = HashSet::new();
        let mut url = Some(format!(
            "{}/results?tf_uid:like={attempt_id}.*&limit=1000",
            self.api()
        ));
        while let Some(u) = url.take() {
            let response = self
                .http
                .get(&u)
                .send()
                .await
                .map_err(|e| transport_error(&e))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                // A failed duplicate check must never lead to posting blind.
                return Err(DeliveryError::Retry(format!(
                    "duplicate check failed: {}",
                    status_error(status, &text)
                )));
            }
            let page: Value = response.json().await.map_err(|e| transport_error(&e))?;
            for r in page["data"].as_array().into_iter().flatten() {
                for v in r["data"]["tf_uid"].as_array().into_iter().flatten() {
                    if let Some(s) = v.as_str() {
                        uids.insert(s.to_owned());
                    }
                }
            }
            url = page["next"].as_str().map(str::to_owned);
        }
        Ok(uids)
    }

    fn absolute(&self, url: &Option<String>) -> Option<String> {
        url.as_ref().map(|u| {
            if u.starts_with('/') {
                format!("{}{u}", self.config.public_url.trim_end_matches('/'))
            } else {
                u.clone()
            }
        })
    }

    fn result_body(
        &self,
        r: &RdbResult,
        groups: &std::collections::BTreeMap<String, Value>,
    ) -> Value {
        let groups: Vec<Value> = r
            .groups
            .iter()
            .map(|u| groups.get(u).cloned().unwrap_or_else(|| json!(u)))
            .collect();
        json!({
            "testcase": {"name": r.testcase.name, "ref_url": self.absolute(&r.testcase.ref_url)},
            "outcome": r.outcome,
            "note": r.note,
            "ref_url": self.absolute(&r.ref_url),
            "groups": groups,
            "data": r.data,
        })
    }
}
