//! Artifacts: files kept per attempt, each naming a blob of the
//! coordinator's blob store. Only the attempt that currently holds its task,
//! on the agent running it, may add artifacts (fencing), and an attempt's
//! artifacts together stay under a size limit.

use testfleet_core::job::TaskSpec;
use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_wire::api::ArtifactView;
use testfleet_wire::artifact::{ArtifactKind, UnknownArtifactKind};

use crate::db::{Backend, on_pool, on_tx};
use crate::{Missing, Result, Store, StoreError};

/// The running attempt an agent adds artifacts to.
#[derive(Debug, Clone)]
pub struct ArtifactSlot {
    pub attempt_id: i64,
    pub task_id: i64,
    pub job_id: i64,
    pub task: TaskSpec,
    /// Bytes the attempt already keeps.
    pub used_bytes: u64,
}

/// An artifact to record.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub path: String,
    pub kind: ArtifactKind,
    pub digest: String,
    pub size: u64,
}

/// How adding an artifact went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredArtifact {
    Added {
        id: i64,
    },
    /// The attempt's artifacts would exceed `limit` bytes.
    OverLimit {
        used: u64,
        limit: u64,
    },
}

/// The fence: the attempt runs on the agent, has no outcome yet and still
/// holds its task.
macro_rules! fence_sql {
    () => {
        "SELECT a.task_id, t.job_id, t.spec FROM attempts a JOIN tasks t ON t.id = a.task_id
         WHERE a.id = $1 AND a.agent = $2 AND a.outcome IS NULL AND t.current_attempt = a.id"
    };
}

const FENCE: &str = fence_sql!();

/// The fence inside `add_artifact`'s transaction on PostgreSQL, where other
/// coordinators write at the same time: locking the attempt's row keeps its
/// outcome unset until the artifact is committed (finishing and cancelling
/// set the outcome before they move the task on), and serializes the adders
/// of one attempt so two of them cannot both pass the size limit. `NO KEY`
/// leaves alone the key-share locks that inserts referencing the attempt
/// take. SQLite needs no lock: its one writer runs one transaction at a time.
const FENCE_LOCKED: &str = concat!(fence_sql!(), " FOR NO KEY UPDATE OF a");

#[derive(sqlx::FromRow)]
struct FenceRow {
    task_id: i64,
    job_id: i64,
    spec: String,
}

#[derive(sqlx::FromRow)]
struct AttemptHolder {
    agent: String,
    outcome: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ArtifactRow {
    id: i64,
    digest: String,
    size: i64,
}

macro_rules! view_sql {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.job_id, r.task_id, t.name AS task_name, r.attempt_id, a.number AS attempt,
                    a.outcome, r.path, r.kind, r.digest, r.size, r.created_at
             FROM artifacts r JOIN attempts a ON a.id = r.attempt_id JOIN tasks t ON t.id = r.task_id ",
            $tail
        )
    };
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: i64,
    job_id: i64,
    task_id: i64,
    task_name: String,
    attempt_id: i64,
    attempt: i64,
    outcome: Option<String>,
    path: String,
    kind: String,
    digest: String,
    size: i64,
    created_at: i64,
}

fn view(row: ViewRow) -> Result<ArtifactView> {
    Ok(ArtifactView {
        id: row.id,
        job_id: row.job_id,
        task_id: row.task_id,
        task_name: row.task_name,
        attempt_id: row.attempt_id,
        attempt: row.attempt,
        outcome: row
            .outcome
            .map(|o| {
                o.parse()
                    .map_err(|_| StoreError::Corrupt(format!("outcome `{o}`")))
            })
            .transpose()?,
        path: row.path,
        kind: row
            .kind
            .parse()
            .map_err(|e: UnknownArtifactKind| StoreError::Corrupt(e.to_string()))?,
        digest: row.digest,
        size: u64::try_from(row.size).unwrap_or(0),
        created_at: format_millis(row.created_at),
    })
}

impl Store {
    /// The attempt `attempt_id` if it is running on `host` and still holds
    /// its task; otherwise a conflict that says why artifacts are refused.
    pub async fn artifact_slot(&self, attempt_id: i64, host: &str) -> Result<ArtifactSlot> {
        let row = on_pool!(&self.reader, p => sqlx::query_as::<_, FenceRow>(FENCE)
            .bind(attempt_id)
            .bind(host)
            .fetch_optional(p)
            .await)?;
        let Some(row) = row else {
            let exists = on_pool!(&self.reader, p => sqlx::query_as::<_, AttemptHolder>(
                "SELECT agent, outcome FROM attempts WHERE id = $1",
            )
            .bind(attempt_id)
            .fetch_optional(p)
            .await)?;
            return Err(match exists {
                None => StoreError::NotFound(Missing::Attempt(attempt_id)),
                Some(r) => StoreError::Conflict(format!(
                    "attempt {attempt_id} is not running on `{host}` (agent `{}`, outcome {}); only the attempt that holds its task may add artifacts",
                    r.agent,
                    r.outcome.unwrap_or_else(|| "pending".into())
                )),
            });
        };
        let task: TaskSpec = serde_json::from_str(&row.spec)?;
        let used: i64 = on_pool!(&self.reader, p => sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM artifacts WHERE attempt_id = $1",
        )
        .bind(attempt_id)
        .fetch_one(p)
        .await)?;
        Ok(ArtifactSlot {
            attempt_id,
            task_id: row.task_id,
            job_id: row.job_id,
            task,
            used_bytes: u64::try_from(used).unwrap_or(0),
        })
    }

    /// Records an artifact of a running attempt, checking the fence and the
    /// attempt's size limit again inside the transaction. A second artifact
    /// with the same path replaces the first.
    pub async fn add_artifact(
        &self,
        attempt_id: i64,
        host: &str,
        new: &NewArtifact,
        limit: u64,
        now: UnixMillis,
    ) -> Result<StoredArtifact> {
        let mut tx = self.writer.begin().await?;
        let fence = match tx.backend() {
            Backend::Sqlite => FENCE,
            Backend::Postgres => FENCE_LOCKED,
        };
        let row = on_tx!(&mut tx, c => sqlx::query_as::<_, FenceRow>(fence)
            .bind(attempt_id)
            .bind(host)
            .fetch_optional(c)
            .await)?
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "attempt {attempt_id} no longer holds its task on `{host}`; artifact `{}` refused",
                new.path
            ))
        })?;
        let used: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM artifacts WHERE attempt_id = $1 AND path <> $2",
        )
        .bind(attempt_id)
        .bind(&new.path)
        .fetch_one(c)
        .await)?;
        let used = u64::try_from(used).unwrap_or(0);
        if used.saturating_add(new.size) > limit {
            return Ok(StoredArtifact::OverLimit { used, limit });
        }
        let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "INSERT INTO artifacts (attempt_id, task_id, job_id, path, kind, digest, size, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (attempt_id, path) DO UPDATE SET kind = excluded.kind,
                 digest = excluded.digest, size = excluded.size, created_at = excluded.created_at
             RETURNING id",
        )
        .bind(attempt_id)
        .bind(row.task_id)
        .bind(row.job_id)
        .bind(&new.path)
        .bind(new.kind.as_str())
        .bind(&new.digest)
        .bind(i64::try_from(new.size).unwrap_or(i64::MAX))
        .bind(now)
        .fetch_one(c)
        .await)?;
        tx.commit().await?;
        Ok(StoredArtifact::Added { id })
    }

    /// A job's artifacts, by task, attempt and path.
    pub async fn job_artifacts(&self, job_id: i64) -> Result<Vec<ArtifactView>> {
        let exists: Option<i64> = on_pool!(&self.reader, p => sqlx::query_scalar(
            "SELECT id FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(p)
        .await)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(Missing::Job(job_id)));
        }
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, ViewRow>(view_sql!(
            "WHERE r.job_id = $1 ORDER BY r.task_id, a.number, r.path"
        ))
        .bind(job_id)
        .fetch_all(p)
        .await)?;
        rows.into_iter().map(view).collect()
    }

    pub async fn artifact(&self, id: i64) -> Result<ArtifactView> {
        let row =
            on_pool!(&self.reader, p => sqlx::query_as::<_, ViewRow>(view_sql!("WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(p)
            .await)?
            .ok_or_else(|| StoreError::NotFound(Missing::Artifact(id)))?;
        view(row)
    }

    /// The latest attempt of a task, if it ever ran.
    pub async fn last_attempt(&self, task_id: i64) -> Result<Option<i64>> {
        Ok(
            on_pool!(&self.reader, p => sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(id) FROM attempts WHERE task_id = $1",
        )
        .bind(task_id)
        .fetch_one(p)
        .await)?,
        )
    }

    /// Retention: drops artifacts older than `older_than`, then the oldest
    /// until all together weigh at most `max_total` bytes. Returns the
    /// digests no artifact names any more.
    pub async fn expire_artifacts(
        &self,
        older_than: UnixMillis,
        max_total: u64,
    ) -> Result<(usize, Vec<String>)> {
        let mut tx = self.writer.begin().await?;
        let mut dropped: Vec<ArtifactRow> = on_tx!(&mut tx, c => sqlx::query_as::<_, ArtifactRow>(
            "SELECT id, digest, size FROM artifacts WHERE created_at < $1",
        )
        .bind(older_than)
        .fetch_all(c)
        .await)?;
        let total: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM artifacts WHERE created_at >= $1",
        )
        .bind(older_than)
        .fetch_one(c)
        .await)?;
        let mut total = u64::try_from(total).unwrap_or(0);
        if total > max_total {
            let rows = on_tx!(&mut tx, c => sqlx::query_as::<_, ArtifactRow>(
                "SELECT id, digest, size FROM artifacts WHERE created_at >= $1 ORDER BY created_at, id",
            )
            .bind(older_than)
            .fetch_all(c)
            .await)?;
            for r in rows {
                if total <= max_total {
                    break;
                }
                total -= u64::try_from(r.size).unwrap_or(0);
                dropped.push(r);
            }
        }
        for r in &dropped {
            on_tx!(&mut tx, c => sqlx::query("DELETE FROM artifacts WHERE id = $1")
                .bind(r.id)
                .execute(c)
                .await
.map(|_| ()))?;
        }
        let mut released: Vec<String> = Vec::new();
        for r in &dropped {
            let still: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
                "SELECT COUNT(*) FROM artifacts WHERE digest = $1",
            )
            .bind(&r.digest)
            .fetch_one(c)
            .await)?;
            if still == 0 && !released.contains(&r.digest) {
                released.push(r.digest.clone());
            }
        }
        tx.commit().await?;
        Ok((dropped.len(), released))
    }

    /// Whether any artifact names this blob.
    pub async fn artifact_uses(&self, digest: &str) -> Result<bool> {
        let n: i64 = on_pool!(&self.reader, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM artifacts WHERE digest = $1",
        )
        .bind(digest)
        .fetch_one(p)
        .await)?;
        Ok(n > 0)
    }

    /// The `inputs` of jobs created since `since` or not finished (manifest
    /// digests as submitted, `sha256:<hex>`), for blob retention.
    pub async fn job_inputs_since(&self, since: UnixMillis) -> Result<Vec<String>> {
        let rows: Vec<String> = on_pool!(&self.reader, p => sqlx::query_scalar(
            "SELECT spec FROM jobs WHERE created_at >= $1 OR finished_at IS NULL",
        )
        .bind(since)
        .fetch_all(p)
        .await)?;
        let mut out = Vec::new();
        for spec in rows {
            let Ok(job) = serde_json::from_str::<testfleet_core::JobSpec>(&spec) else {
                continue;
            };
            out.extend(job.inputs.clone());
            out.extend(job.tasks.iter().filter_map(|t| t.inputs.clone()));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewTask;
    use testfleet_core::JobSpec;

    async fn running_attempt(store: &Store, agent: &str, max_size: Option<&str>) -> i64 {
        let limit = max_size.map_or(String::new(), |m| format!(", max_size = \"{m}\""));
        let spec = JobSpec::from_toml(&format!(
            "name = \"j\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\nartifacts = {{ always = [\"*\"]{limit} }}\n"
        ))
        .unwrap();
        let (_, queued) = store
            .submit_job(&spec, NewTask::plain(&spec), 1_000)
            .await
            .unwrap();
        let claimed = store
            .claim(queued[0].id, agent, 2_000)
            .await
            .unwrap()
            .unwrap();
        claimed.attempt.attempt_id
    }

    fn art(path: &str, size: u64) -> NewArtifact {
        NewArtifact {
            path: path.into(),
            kind: ArtifactKind::Always,
            digest: "ab".repeat(32),
            size,
        }
    }

    #[tokio::test]
    async fn only_the_running_attempt_on_its_agent_adds_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let a = running_attempt(&store, "h1", Some("1KB")).await;
        let slot = store.artifact_slot(a, "h1").await.unwrap();
        assert_eq!(slot.task.artifacts.max_size.map(|m| m.0), Some(1000));
        let err = store.artifact_slot(a, "h2").await.unwrap_err().to_string();
        assert!(err.contains("not running on `h2`"), "{err}");
        assert!(matches!(
            store.artifact_slot(999, "h1").await,
            Err(StoreError::NotFound(_))
        ));
        let added = store
            .add_artifact(a, "h1", &art("x", 600), 1000, 3_000)
            .await
            .unwrap();
        assert!(matches!(added, StoredArtifact::Added { .. }));
        // Over the limit together; the same path replaces rather than adds.
        let over = store
            .add_artifact(a, "h1", &art("y", 600), 1000, 3_000)
            .await
            .unwrap();
        assert_eq!(
            over,
            StoredArtifact::OverLimit {
                used: 600,
                limit: 1000
            }
        );
        let again = store
            .add_artifact(a, "h1", &art("x", 900), 1000, 3_000)
            .await
            .unwrap();
        assert!(matches!(again, StoredArtifact::Added { .. }));
        let job = store.artifact(1).await.unwrap().job_id;
        let list = store.job_artifacts(job).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].size, 900);
        assert!(matches!(
            store.add_artifact(a, "h2", &art("z", 1), 1000, 3_000).await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn retention_drops_old_then_oldest_over_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let a = running_attempt(&store, "h1", None).await;
        for (i, at) in [(0u64, 10), (1, 20), (2, 30), (3, 40)] {
            let mut n = art(&format!("f{i}"), 100);
            n.digest = format!("{i:064}");
            store.add_artifact(a, "h1", &n, 1 << 20, at).await.unwrap();
        }
        // f0 is past the age; then the oldest go until 200 bytes remain.
        let (dropped, released) = store.expire_artifacts(15, 200).await.unwrap();
        assert_eq!(dropped, 2);
        assert_eq!(released, vec![format!("{:064}", 0), format!("{:064}", 1)]);
        let left: Vec<String> = store
            .job_artifacts(1)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(left, vec!["f2", "f3"]);
        assert!(store.artifact_uses(&format!("{:064}", 2)).await.unwrap());
        assert!(!store.artifact_uses(&format!("{:064}", 0)).await.unwrap());
    }
}
