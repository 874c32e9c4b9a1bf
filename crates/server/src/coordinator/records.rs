//! The writes the HTTP handlers ask for, as named coordinator methods:
//! artifact records (fenced on their attempt in the store) and ResultsDB's
//! results, testcases and groups, and catching the ResultsDB view up with
//! the outbox. The coordinator stamps them with its [`Clock`](super::Clock),
//! as it does every other write; the handlers read through
//! [`Views`](crate::views::Views) and never hold the store.

use testfleet_store::{
    NewAck, NewArtifact, NewRdbResult, RdbGroup, RdbResult, RdbTestcase, StoreError, StoredAck,
    StoredArtifact,
};

use super::Coordinator;

impl Coordinator {
    /// Records an artifact of `attempt`, uploaded by `host`, if the attempt
    /// still holds its task on that host and the attempt's artifacts stay
    /// within `limit` bytes.
    pub async fn add_artifact(
        &self,
        attempt: i64,
        host: &str,
        new: &NewArtifact,
        limit: u64,
    ) -> Result<StoredArtifact, StoreError> {
        self.store
            .add_artifact(attempt, host, new, limit, self.now())
            .await
    }

    /// Creates a ResultsDB result (and its testcase and groups when new).
    pub async fn rdb_create_result(&self, new: &NewRdbResult) -> Result<RdbResult, StoreError> {
        self.store.rdb_create_result(new, self.now()).await
    }

    /// Creates a ResultsDB testcase, or updates its `ref_url` when given.
    pub async fn rdb_put_testcase(
        &self,
        name: &str,
        ref_url: Option<&str>,
    ) -> Result<RdbTestcase, StoreError> {
        self.store.rdb_put_testcase(name, ref_url).await
    }

    /// Creates a ResultsDB group, or updates the fields given.
    pub async fn rdb_put_group(&self, group: &RdbGroup) -> Result<RdbGroup, StoreError> {
        self.store.rdb_put_group(group).await
    }

    /// Maps every finished attempt committed so far into the ResultsDB view,
    /// so a reader sees it (see `exporters::view`).
    pub async fn catch_up_resultsdb_view(&self) -> Result<(), StoreError> {
        crate::exporters::view::catch_up(&self.store).await
    }

    /// Records the acknowledgement of a benchmark series' change.
    pub async fn add_ack(&self, ack: &NewAck) -> Result<StoredAck, StoreError> {
        self.store.add_ack(ack, self.now()).await
    }
}
