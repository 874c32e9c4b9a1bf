//! The analytics endpoints (SPEC §11): benchmark series and their points,
//! change points, regressions across all series, acknowledgements and
//! comparisons of two jobs (or two sets of jobs).

use testfleet_wire::analysis::{
    AckRequest, AckView, CompareRequest, CompareView, RegressionsView, SeriesChanges, SeriesPage,
    SeriesPoints, SeriesView,
};

use crate::{ApiClient, ClientError};

/// Which series `GET /api/v1/series` lists; every field set narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    pub host: Option<String>,
    /// The test program (QtTest's test class, a Google Benchmark binary).
    pub program: Option<String>,
    /// The test function (benchmark name).
    pub function: Option<String>,
    pub metric: Option<String>,
    /// A substring of program, function or data tag.
    pub search: Option<String>,
    /// Series with an id above this: the previous page's `next_after`.
    pub after: Option<i64>,
    /// Series per page (the server's default when `None`).
    pub limit: Option<u32>,
}

impl SeriesQuery {
    /// The query string's pairs, only those that are set.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let text = [
            ("host", &self.host),
            ("program", &self.program),
            ("function", &self.function),
            ("metric", &self.metric),
            ("search", &self.search),
        ];
        let mut pairs: Vec<(&'static str, String)> = text
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

/// Joins job ids as the compare query wants them: `1,2,3`.
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

impl ApiClient {
    /// A page of benchmark series matching `query`, by id; the answer's
    /// `next_after` is the next page's [`SeriesQuery::after`].
    pub async fn series(&self, query: &SeriesQuery) -> Result<SeriesPage, ClientError> {
        let req = self
            .http
            .get(format!("{}/api/v1/series", self.base))
            .query(&query.pairs());
        self.send(req).await
    }

    /// One series with a summary of its points.
    pub async fn series_view(&self, id: i64) -> Result<SeriesView, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/series/{id}", self.base)))
            .await
    }

    /// A series' points (the newest `limit` at or after `since`, an RFC 3339
    /// time, oldest first) with its noise model and machine fingerprints.
    pub async fn series_points(
        &self,
        id: i64,
        since: Option<&str>,
        limit: Option<u32>,
    ) -> Result<SeriesPoints, ClientError> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/series/{id}/points", self.base));
        if let Some(since) = since {
            req = req.query(&[("since", since)]);
        }
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit.to_string())]);
        }
        self.send(req).await
    }

    /// The change points of a series, with their acknowledgements.
    pub async fn series_changes(&self, id: i64) -> Result<SeriesChanges, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/series/{id}/changes", self.base)),
        )
        .await
    }

    /// Acknowledges the change that starts at `ack.sha` in series `series`
    /// (and the same change in the test's other metrics). Needs write access.
    pub async fn ack(&self, series: i64, ack: &AckRequest) -> Result<AckView, ClientError> {
        self.send(
            self.http
                .post(format!("{}/api/v1/series/{series}/acks", self.base))
                .json(ack),
        )
        .await
    }

    /// Regressions across all series, newest first, grouped per test and
    /// place in history. `since` is an RFC 3339 time or an age such as `7d`.
    pub async fn regressions(
        &self,
        since: Option<&str>,
        limit: Option<u32>,
    ) -> Result<RegressionsView, ClientError> {
        let mut req = self.http.get(format!("{}/api/v1/regressions", self.base));
        if let Some(since) = since {
            req = req.query(&[("since", since)]);
        }
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit.to_string())]);
        }
        self.send(req).await
    }

    /// Every benchmark of the `baseline` jobs against the `contender` jobs,
    /// as they stand (no re-runs).
    pub async fn compare(
        &self,
        baseline: &[i64],
        contender: &[i64],
    ) -> Result<CompareView, ClientError> {
        let req = self
            .http
            .get(format!("{}/api/v1/compare", self.base))
            .query(&[
                ("baseline", id_list(baseline)),
                ("contender", id_list(contender)),
            ]);
        self.send(req).await
    }

    /// A comparison that may re-run both sides while a verdict is UNKNOWN
    /// (`request.confirm`), up to `request.max_rounds` rounds, before it
    /// answers. Re-runs submit jobs, so this needs write access; it answers
    /// when the rounds are done, which may take as long as the jobs do.
    pub async fn compare_confirm(
        &self,
        request: &CompareRequest,
    ) -> Result<CompareView, ClientError> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/compare", self.base))
            .json(request);
        if request.confirm {
            // Confirmation runs jobs: the client's default minute is too short.
            req = req.timeout(CONFIRM_TIMEOUT);
        }
        self.send(req).await
    }

    /// The change points of a series given as CSV text (`index,value` or
    /// `time,value` lines), computed by the coordinator; the answer has no
    /// `series`.
    pub async fn changes_of_csv(&self, csv: &str) -> Result<SeriesChanges, ClientError> {
        let req = self
            .http
            .post(format!("{}/api/v1/analysis/changes", self.base))
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(csv.to_owned());
        self.send(req).await
    }
}

/// How long `compare --confirm` waits for the coordinator's answer.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_query_sends_only_what_is_set() {
        assert!(SeriesQuery::default().pairs().is_empty());
        let q = SeriesQuery {
            host: Some("bench1".into()),
            search: Some("QString".into()),
            after: Some(40),
            limit: Some(10),
            ..SeriesQuery::default()
        };
        assert_eq!(
            q.pairs(),
            [
                ("host", "bench1".to_owned()),
                ("search", "QString".to_owned()),
                ("after", "40".to_owned()),
                ("limit", "10".to_owned()),
            ]
        );
    }

    #[test]
    fn job_ids_are_joined_with_commas() {
        assert_eq!(id_list(&[1, 22, 3]), "1,22,3");
        assert_eq!(id_list(&[7]), "7");
    }
}
