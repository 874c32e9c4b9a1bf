//! The coordinator's read-only handle on the store, for the HTTP and
//! socket.io handlers: exactly the reads they answer with (jobs, tasks, logs,
//! results, stats, artifacts, the ResultsDB tables, benchmark series,
//! credentials, the outbox and the work log) and nothing that changes the
//! store. Writes go through the coordinator's named methods
//! (`coordinator::records`, `audit`, …), so every state change has one owner.
//!
//! Cheap to clone: it holds the store's pools, not a copy of anything.

use testfleet_core::JobState;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{
    ArtifactSlot, AttemptContext, Fingerprint, RdbGroup, RdbQuery, RdbResult, RdbTestcase,
    SeriesFilter, SeriesPoints, SinkStatus, Store, StoreError, StoredAck, StoredAgentSecret,
    StoredPoint, StoredSeries, StoredToken, StoredUser,
};
use testfleet_wire::api::{
    ArtifactView, JobSummary, JobView, LogSlice, StatsView, TaskDetail, TaskPage,
};
use testfleet_wire::protocol::{WorkItem, WorkLogEntry};
use testfleet_wire::results::Results;

type Result<T> = std::result::Result<T, StoreError>;

/// Reads of the store for the handlers; see the module documentation.
#[derive(Clone)]
pub struct Views {
    store: Store,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl Views {
    pub(crate) fn new(store: Store) -> Views {
        Views { store }
    }

    // ----- jobs, tasks, attempts ----------------------------------------------

    /// The newest jobs first (at most `limit`), in `state` when given, each
    /// with its tasks counted per state and per outcome.
    pub async fn jobs(&self, limit: i64, state: Option<JobState>) -> Result<Vec<JobSummary>> {
        self.store.jobs(limit, state).await
    }

    /// One job with its tasks.
    pub async fn job(&self, job_id: i64) -> Result<JobView> {
        self.store.job(job_id).await
    }

    /// One job with its tasks counted, as [`Views::jobs`] lists it.
    pub async fn job_summary(&self, job_id: i64) -> Result<JobSummary> {
        self.store.job_summary(job_id).await
    }

    /// A page of a job's tasks in id order, after task `after`.
    pub async fn job_tasks(&self, job_id: i64, after: Option<i64>, limit: i64) -> Result<TaskPage> {
        self.store.job_tasks(job_id, after, limit).await
    }

    /// A task with its attempts.
    pub async fn task(&self, task_id: i64) -> Result<TaskDetail> {
        self.store.task(task_id).await
    }

    /// A slice of a task's log from byte `offset`: the given attempt's, or
    /// the latest attempt's.
    pub async fn task_log(
        &self,
        task_id: i64,
        attempt_id: Option<i64>,
        offset: u64,
    ) -> Result<LogSlice> {
        self.store.task_log(task_id, attempt_id, offset).await
    }

    /// The parsed result files of an attempt.
    pub async fn attempt_results(&self, attempt_id: i64) -> Result<Vec<Results>> {
        self.store.attempt_results(attempt_id).await
    }

    /// The context of one attempt (what its run summary is made of).
    pub async fn attempt_context(&self, attempt_id: i64) -> Result<AttemptContext> {
        self.store.attempt_context(attempt_id).await
    }

    /// The results of every task's current (or last) attempt of a job, with
    /// the task's name and agent.
    pub async fn job_results(&self, job_id: i64) -> Result<Vec<(String, String, Results)>> {
        self.store.job_results(job_id).await
    }

    /// The work item a task's last attempt ran (or would run, if it never
    /// ran), for `testfleet repro`.
    pub async fn task_work(&self, task_id: i64) -> Result<WorkItem> {
        let attempt = self.store.last_attempt(task_id).await?;
        self.store.work_item_for_task(task_id, attempt).await
    }

    /// Attempts stopped per threshold, and runtime history and flaky counts
    /// per task key (at most `limit` task keys each).
    pub async fn stats(&self, limit: i64) -> Result<StatsView> {
        Ok(StatsView {
            flaky: self.store.flaky_stats(limit).await?,
            runtimes: self.store.runtime_stats(limit).await?,
            thresholds: self.store.threshold_stats().await?,
        })
    }

    /// The newest `limit` entries of the work log, oldest first (browsers'
    /// `getWorkLog`).
    pub async fn work_log(&self, limit: i64) -> Result<Vec<WorkLogEntry>> {
        self.store.work_log(limit).await
    }

    // ----- artifacts ----------------------------------------------------------

    /// A job's artifacts.
    pub async fn job_artifacts(&self, job_id: i64) -> Result<Vec<ArtifactView>> {
        self.store.job_artifacts(job_id).await
    }

    /// One artifact's record.
    pub async fn artifact(&self, id: i64) -> Result<ArtifactView> {
        self.store.artifact(id).await
    }

    /// The attempt `attempt_id` if it is running on `host` and still holds
    /// its task (what it may still add as artifacts); otherwise a conflict
    /// that says why artifacts are refused.
    pub async fn artifact_slot(&self, attempt_id: i64, host: &str) -> Result<ArtifactSlot> {
        self.store.artifact_slot(attempt_id, host).await
    }

    // ----- credentials ----------------------------------------------------------

    /// A host's own agent secret (hashed), if it has one.
    pub async fn agent_secret(&self, hostname: &str) -> Result<Option<StoredAgentSecret>> {
        self.store.agent_secret(hostname).await
    }

    /// The API token with this SHA-256 hash.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<StoredToken>> {
        self.store.token_by_hash(token_hash).await
    }

    /// A user's record (argon2 hash, Digest HA1 values).
    pub async fn user(&self, name: &str) -> Result<Option<StoredUser>> {
        self.store.user(name).await
    }

    // ----- exporters ------------------------------------------------------------

    /// The delivery state of every registered sink.
    pub async fn outbox_status(&self) -> Result<Vec<SinkStatus>> {
        self.store.outbox_status().await
    }

    // ----- benchmark series -------------------------------------------------------

    /// Benchmark series matching `filter`, by id.
    pub async fn list_series(&self, filter: &SeriesFilter) -> Result<Vec<StoredSeries>> {
        self.store.list_series(filter).await
    }

    /// One benchmark series.
    pub async fn series(&self, id: i64) -> Result<StoredSeries> {
        self.store.series(id).await
    }

    /// The newest `limit` points of a series at or after `since`, oldest first.
    pub async fn series_points(
        &self,
        id: i64,
        since: Option<UnixMillis>,
        limit: i64,
    ) -> Result<Vec<StoredPoint>> {
        self.store.series_points(id, since, limit).await
    }

    /// Every series the jobs' attempts gave values to, with those values.
    pub async fn job_points(&self, job_ids: &[i64]) -> Result<Vec<SeriesPoints>> {
        self.store.job_points(job_ids).await
    }

    /// The machine fingerprints with these hashes.
    pub async fn fingerprints(&self, hashes: &[String]) -> Result<Vec<Fingerprint>> {
        self.store.fingerprints(hashes).await
    }

    /// Acknowledgements of changes of these series (all when `None`).
    pub async fn acks(&self, series: Option<&[i64]>) -> Result<Vec<StoredAck>> {
        self.store.acks(series).await
    }

    /// Whether every finished attempt's benchmark values are in the series.
    pub async fn series_caught_up(&self) -> Result<bool> {
        self.store.series_caught_up().await
    }

    // ----- ResultsDB ------------------------------------------------------------

    /// One page of ResultsDB results matching `q`: `limit` rows from `offset`.
    pub async fn rdb_results(
        &self,
        q: &RdbQuery,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RdbResult>> {
        self.store.rdb_results(q, offset, limit).await
    }

    /// The newest ResultsDB result per testcase (and per value of each
    /// `distinct_on` data key) among those matching `q`; the outcome filter
    /// does not apply, as in ResultsDB.
    pub async fn rdb_latest(&self, q: &RdbQuery, distinct_on: &[String]) -> Result<Vec<RdbResult>> {
        self.store.rdb_latest(q, distinct_on).await
    }

    /// One ResultsDB result.
    pub async fn rdb_result(&self, id: i64) -> Result<Option<RdbResult>> {
        self.store.rdb_result(id).await
    }

    /// ResultsDB testcases by name (exact, or with `*` wildcards), sorted by
    /// name: `limit` rows from `offset`.
    pub async fn rdb_testcases(
        &self,
        names: &[String],
        like: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RdbTestcase>> {
        self.store.rdb_testcases(names, like, offset, limit).await
    }

    /// One ResultsDB testcase.
    pub async fn rdb_testcase(&self, name: &str) -> Result<Option<RdbTestcase>> {
        self.store.rdb_testcase(name).await
    }

    /// ResultsDB groups, newest first, filtered by uuid and description
    /// (exact or `*` wildcards): `limit` rows from `offset`.
    pub async fn rdb_groups(
        &self,
        uuids: &[String],
        descriptions: &[String],
        descriptions_like: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RdbGroup>> {
        self.store
            .rdb_groups(uuids, descriptions, descriptions_like, offset, limit)
            .await
    }

    /// One ResultsDB group.
    pub async fn rdb_group(&self, uuid: &str) -> Result<Option<RdbGroup>> {
        self.store.rdb_group(uuid).await
    }
}

// ----- the events log (trigger events) ----------------------------------------

impl Views {
    /// Trigger events matching `filter`, newest first.
    pub async fn events(
        &self,
        filter: &testfleet_store::EventFilter,
    ) -> Result<Vec<testfleet_wire::events::EventSummary>> {
        self.store.list_events(filter).await
    }

    /// One trigger event with its body.
    pub async fn event(&self, id: i64) -> Result<testfleet_wire::events::EventDetail> {
        self.store.event(id).await
    }
}

#[cfg(test)]
mod tests {
    use testfleet_core::JobSpec;
    use testfleet_store::NewTask;

    use super::*;

    #[tokio::test]
    async fn views_answer_from_the_store_they_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let views = Views::new(store.clone());
        let spec = JobSpec::from_toml(
            "name = \"j\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
        )
        .unwrap();
        let tasks = NewTask::plain(&spec);
        let (job, queued) = store.submit_job(&spec, tasks, 1_000).await.unwrap();

        let jobs = views.jobs(10, None).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].id, jobs[0].tasks.total), (job, 1));
        assert_eq!(views.job_summary(job).await.unwrap().name, "j");
        // A task that never ran: the work item its first attempt would run.
        let item = views.task_work(queued[0].id).await.unwrap();
        assert_eq!(item.task_id, Some(queued[0].id));
        assert_eq!(item.job_id, Some(job));
        assert_eq!(item.attempt_id, None);
        // Nothing ran, so no statistics, and an unknown task is not found.
        let stats = views.stats(100).await.unwrap();
        assert!(
            stats.flaky.is_empty() && stats.runtimes.is_empty(),
            "{stats:?}"
        );
        assert!(matches!(
            views.task(queued[0].id + 1).await,
            Err(StoreError::NotFound(_))
        ));
    }
}
