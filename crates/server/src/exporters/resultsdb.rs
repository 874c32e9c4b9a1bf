//! The external ResultsDB reporter: posts each finished attempt's results, as
//! the coordinator's own ResultsDB API shows them, to another ResultsDB.
//!
//! Every posted result carries `tf_uid` = `<attempt>.<n>` in its data. Before
//! posting an attempt, the reporter asks the receiver which of that attempt's
//! uids it already holds and posts only the others, so a retry after a lost
//! answer (or a coordinator restart) does not post a result twice.
//!
//! The bodies it posts and the pages it reads are `testfleet_wire::resultsdb`
//! types, the ones the coordinator's own ResultsDB API reads and answers.

use std::collections::{BTreeMap, HashSet};

use testfleet_store::{ExportEvent, RdbResult, Store};
use testfleet_wire::resultsdb::{
    GroupRef, NewGroup, NewResult, NewTestcase, Page, TestResult, TestcaseRef,
};

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
            let mut groups = BTreeMap::new();
            for uuid in results.iter().flat_map(|r| &r.groups) {
                if !groups.contains_key(uuid)
                    && let Some(g) = store.rdb_group(uuid).await?
                {
                    let group = NewGroup {
                        description: g.description,
                        ref_url: self.config.absolute(&g.ref_url),
                        uuid: Some(g.uuid),
                    };
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
        groups: &BTreeMap<String, NewGroup>,
    ) -> Result<i64, DeliveryError> {
        let present = self.posted_uids(attempt_id).await?;
        let mut posted = 0;
        for r in results {
            let uid = r.data.get("tf_uid").and_then(|v| v.first());
            if uid.is_some_and(|u| present.contains(u)) {
                continue;
            }
            let body = self.config.result_body(r, groups)?;
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
            let text = response.text().await.map_err(|e| transport_error(&e))?;
            let page: Page<TestResult> = serde_json::from_str(&text).map_err(|e| {
                DeliveryError::Retry(format!(
                    "duplicate check failed: {u} did not answer a ResultsDB page of results: {e}"
                ))
            })?;
            for r in page.data {
                if let Some(values) = r.data.get("tf_uid") {
                    uids.extend(values.0.iter().cloned());
                }
            }
            url = page.next;
        }
        Ok(uids)
    }
}

impl ResultsDbReporterConfig {
    fn absolute(&self, url: &Option<String>) -> Option<String> {
        url.as_ref().map(|u| {
            if u.starts_with('/') {
                format!("{}{u}", self.public_url.trim_end_matches('/'))
            } else {
                u.clone()
            }
        })
    }

    /// The body posted for `r`: testcase and groups as objects, so the
    /// receiver learns their links and descriptions.
    fn result_body(
        &self,
        r: &RdbResult,
        groups: &BTreeMap<String, NewGroup>,
    ) -> Result<NewResult, DeliveryError> {
        let outcome = r
            .outcome
            .parse()
            .map_err(|e| DeliveryError::Refused(format!("result {}: {e}", r.id)))?;
        Ok(NewResult {
            data: r
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
            groups: r
                .groups
                .iter()
                .map(|u| {
                    groups.get(u).map_or_else(
                        || GroupRef::Uuid(u.clone()),
                        |g| GroupRef::Object(g.clone()),
                    )
                })
                .collect(),
            note: r.note.clone(),
            outcome,
            ref_url: self.absolute(&r.ref_url),
            testcase: TestcaseRef::Object(NewTestcase {
                name: r.testcase.name.clone(),
                ref_url: self.absolute(&r.testcase.ref_url),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use testfleet_store::{RdbGroup, RdbTestcase};

    use super::*;

    /// What the reporter posts is read by the served API's own request type
    /// and becomes the same result there.
    #[test]
    fn the_posted_body_is_what_the_served_api_reads() {
        let config = ResultsDbReporterConfig {
            url: "http://receiver/api/v2.0".into(),
            public_url: "https://coordinator/".into(),
        };
        let r = RdbResult {
            id: 9,
            testcase: RdbTestcase {
                name: "suite.case(row 1)".into(),
                ref_url: None,
            },
            outcome: "NEEDS_INSPECTION".into(),
            note: Some("crashed".into()),
            ref_url: Some("/api/v1/tasks/3/log?attempt=4".into()),
            submit_time: 0,
            groups: vec!["g-job".into(), "g-bare".into()],
            data: BTreeMap::from([
                ("item".into(), vec!["a".into(), "b".into()]),
                ("tf_uid".into(), vec!["4.0".into()]),
            ]),
        };
        let job = RdbGroup {
            uuid: "g-job".into(),
            description: Some("nightly".into()),
            ref_url: Some("/api/v1/jobs/1".into()),
        };
        let groups = BTreeMap::from([(
            job.uuid.clone(),
            NewGroup {
                description: job.description.clone(),
                ref_url: config.absolute(&job.ref_url),
                uuid: Some(job.uuid.clone()),
            },
        )]);
        let body = config.result_body(&r, &groups).unwrap();
        // `reqwest`'s `.json()` sends serde_json's bytes.
        let sent = serde_json::to_vec(&body).unwrap();
        let read = NewResult::from_json(&sent).unwrap();
        assert_eq!(read, body);

        let stored = crate::resultsdb::json::new_result(read);
        assert_eq!(stored.testcase, r.testcase.name);
        assert_eq!(stored.testcase_ref_url, None);
        assert_eq!(stored.outcome, r.outcome);
        assert_eq!(stored.note, r.note);
        assert_eq!(
            stored.ref_url.as_deref(),
            Some("https://coordinator/api/v1/tasks/3/log?attempt=4")
        );
        assert_eq!(
            stored.groups,
            [
                RdbGroup {
                    ref_url: Some("https://coordinator/api/v1/jobs/1".into()),
                    ..job
                },
                RdbGroup {
                    uuid: "g-bare".into(),
                    description: None,
                    ref_url: None,
                },
            ]
        );
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
        };
        assert_eq!(
            stored.data,
            pairs(&[("item", "a"), ("item", "b"), ("tf_uid", "4.0")])
        );
    }

    #[test]
    fn a_stored_outcome_resultsdb_does_not_know_is_refused_not_posted() {
        let config = ResultsDbReporterConfig {
            url: "http://receiver/api/v2.0".into(),
            public_url: "http://c".into(),
        };
        let r = RdbResult {
            id: 1,
            testcase: RdbTestcase {
                name: "t".into(),
                ref_url: None,
            },
            outcome: "SKIPPED".into(),
            note: None,
            ref_url: None,
            submit_time: 0,
            groups: vec![],
            data: BTreeMap::new(),
        };
        match config.result_body(&r, &BTreeMap::new()) {
            Err(DeliveryError::Refused(msg)) => assert!(msg.contains("SKIPPED"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
