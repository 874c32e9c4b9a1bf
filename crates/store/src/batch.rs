//! Group commit for the hot writes: claims and finishes.
//!
//! Each claim and each finish is a transaction of its own in meaning, but
//! under load hundreds arrive per second from different agents. One
//! background writer takes whatever is waiting, runs each operation in turn
//! inside one transaction and commits once, then answers every caller. A
//! caller is answered only after the commit, so what it was told is durable.
//!
//! A batch whose claims are of distinct tasks and whose finishes are of
//! distinct attempts runs grouped (`batch_pg`, with SQLite's statements in
//! `batch_sqlite`): all its claims in one statement (three on SQLite), all
//! its finishes in two or three, with the same fences and answers as one by
//! one. (On PostgreSQL each statement is a round trip; on SQLite a hand-off
//! to its worker thread.) A batch that names a task or an attempt twice
//! runs its operations in turn.
//!
//! When one operation of a batch fails, the batch is rolled back and each
//! operation runs again in a transaction of its own, so one bad operation
//! fails alone. On PostgreSQL two coordinators' batches may lock rows in
//! opposite orders; the database then aborts one of them (deadlock), and
//! its operations run again alone, retried while the conflict lasts.

use testfleet_core::job::JobSpec;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_core::{AttemptOutcome, JobState, Stage};
use testfleet_wire::reason::ReasonData;
use testfleet_wire::results::Results;
use tokio::sync::{mpsc, oneshot, watch};

use crate::attempts::{RuntimeSample, claim_in, finish_in, refresh_job_state};
use std::sync::Arc;
use std::time::Duration;

use crate::batch_pg::{ClaimReq, claim_many, finish_many, record_runtimes};
use crate::db::{Backend, Pool, Tx, on_tx};
use crate::ops::{Claimed, FinishEffect};
use crate::{Result, StoreError};

/// Most operations committed together.
const MAX_BATCH: usize = 128;

/// Batch writers on PostgreSQL while this coordinator writes alone.
const POSTGRES_WRITERS: usize = 2;

/// Batch writers on PostgreSQL while other coordinators write to the same
/// database. Every writer holds row locks until its commit; with two
/// coordinators, four writers in all (two each) made about 10 % fewer tasks
/// a second than two (one each), and eight (four each) about 20 % fewer
/// (`testfleet bench --coordinators 1,2`, medians of 7–8 runs), while one
/// coordinator alone ran about as fast with one, two or four.
const SHARED_POSTGRES_WRITERS: usize = 1;

/// How long a batch on PostgreSQL waits for more operations after the
/// waiting ones, before it begins. A batch's transaction costs the server a
/// commit, a few statements and a second, settling transaction whatever its
/// size; with the wait, 20,000 no-op tasks on 100 agents ran 5.5 % faster
/// (docs/performance.md, "A millisecond's wait for a batch"). tokio's timer
/// counts whole milliseconds, so the wait is one to two. SQLite's one
/// writer takes what is waiting at once.
const POSTGRES_LINGER: Duration = Duration::from_millis(1);

/// Most test cases a batch's finishes may report for the batch to run
/// grouped on SQLite (`groups_well`).
const SQLITE_GROUPED_CASES: usize = 1_000;

/// Most job specs kept parsed.
const MAX_CACHED_JOBS: usize = 256;

/// Parsed job specs by id. A job's spec never changes once stored, and it
/// lists every task, so reading and parsing it at each claim cost more than
/// the claim itself for large jobs.
#[derive(Debug, Default)]
pub(crate) struct JobCache {
    jobs: std::sync::Mutex<std::collections::HashMap<i64, std::sync::Arc<JobSpec>>>,
}

impl JobCache {
    pub(crate) async fn get_or_load(
        &self,
        tx: &mut Tx,
        job_id: i64,
    ) -> Result<std::sync::Arc<JobSpec>> {
        if let Some(job) = self.jobs.lock().ok().and_then(|j| j.get(&job_id).cloned()) {
            return Ok(job);
        }
        let spec: String = on_tx!(tx, c => sqlx::query_scalar("SELECT spec FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(c)
            .await)?;
        let job = std::sync::Arc::new(serde_json::from_str::<JobSpec>(&spec)?);
        if let Ok(mut jobs) = self.jobs.lock() {
            if jobs.len() >= MAX_CACHED_JOBS {
                jobs.clear();
            }
            jobs.insert(job_id, job.clone());
        }
        Ok(job)
    }
}

/// What [`crate::Store::finish_attempt`] was asked.
#[derive(Debug, Clone)]
pub(crate) struct FinishArgs {
    pub attempt_id: i64,
    pub by_agent: Option<String>,
    pub outcome: AttemptOutcome,
    pub reason: Option<String>,
    pub reason_data: Option<ReasonData>,
    pub results: Option<Vec<Results>>,
    pub stage: Option<Stage>,
    pub now: UnixMillis,
}

/// One batched write.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    Claim {
        task_id: i64,
        agent: String,
        now: UnixMillis,
        /// The new attempt's lease runs until `now + lease_ms`.
        lease_ms: i64,
    },
    Finish(FinishArgs),
}

/// What a batched write answered.
#[derive(Debug)]
pub(crate) enum WriteDone {
    Claimed(Option<Box<Claimed>>),
    /// The effect, and the run's duration for its key's history.
    Finished(FinishEffect, Option<RuntimeSample>),
}

impl WriteDone {
    pub(crate) fn into_claimed(self) -> Result<Option<Claimed>> {
        match self {
            WriteDone::Claimed(c) => Ok(c.map(|c| *c)),
            WriteDone::Finished(..) => Err(StoreError::Corrupt("claim answered as finish".into())),
        }
    }

    pub(crate) fn into_finished(self) -> Result<FinishEffect> {
        match self {
            WriteDone::Finished(f, _) => Ok(f),
            WriteDone::Claimed(_) => Err(StoreError::Corrupt("finish answered as claim".into())),
        }
    }
}

type Reply = oneshot::Sender<Result<WriteDone>>;

/// Hands operations to the background writer; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<(WriteOp, Reply)>,
    /// How many of the writers take batches now (the others wait).
    writing: Arc<watch::Sender<usize>>,
    /// How many writers there are.
    writers: usize,
}

impl Batcher {
    /// Starts the writers: one on SQLite (it has one writer connection),
    /// several on PostgreSQL, where each batch is a round trip per statement
    /// and the database's own fencing keeps concurrent batches correct.
    pub(crate) fn spawn(pool: Pool) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let workers = match pool.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITERS,
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let jobs = Arc::new(JobCache::default());
        let (writing, allowed) = watch::channel(workers);
        for index in 0..workers {
            let writer = Writer {
                pool: pool.clone(),
                rx: rx.clone(),
                jobs: jobs.clone(),
                index,
                allowed: allowed.clone(),
            };
            tokio::spawn(writer.run());
        }
        Batcher {
            tx,
            writing: Arc::new(writing),
            writers: workers,
        }
    }

    /// Fewer writers while other coordinators write to the same database
    /// ([`SHARED_POSTGRES_WRITERS`]), all of them again once it is alone.
    pub(crate) fn set_shared(&self, shared: bool) {
        let wanted = if shared {
            SHARED_POSTGRES_WRITERS.min(self.writers)
        } else {
            self.writers
        };
        self.writing.send_if_modified(|now| {
            let changed = *now != wanted;
            *now = wanted;
            changed
        });
    }

    /// Runs `op` in the next batch; answers after its commit.
    pub(crate) async fn run(&self, op: WriteOp) -> Result<WriteDone> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((op, reply))
            .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?
    }
}

type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(WriteOp, Reply)>>>;

/// One of the batch writers.
struct Writer {
    pool: Pool,
    rx: Queue,
    jobs: Arc<JobCache>,
    /// Writers from 0 up to `allowed` (excluded) take batches.
    index: usize,
    allowed: watch::Receiver<usize>,
}

impl Writer {
    async fn run(mut self) {
        let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(MAX_BATCH);
        loop {
            if !wait_turn(self.index, &mut self.allowed).await {
                return;
            }
            let linger = match self.pool.backend() {
                Backend::Sqlite => Duration::ZERO,
                Backend::Postgres => POSTGRES_LINGER,
            };
            if !take_batch(&self.rx, &mut batch, linger).await {
                return;
            }
            write_batch(&self.pool, &self.jobs, &mut batch).await;
        }
    }
}

/// Waits while writer `index` is beyond the number allowed to write; false
/// once the store is gone (its handles dropped).
async fn wait_turn(index: usize, allowed: &mut watch::Receiver<usize>) -> bool {
    while index >= *allowed.borrow_and_update() {
        if allowed.changed().await.is_err() {
            return false;
        }
    }
    true
}

/// Takes what is waiting (at least one operation), and what arrives within
/// `linger` of the first, up to [`MAX_BATCH`]; false once the queue is
/// closed and empty.
async fn take_batch(rx: &Queue, batch: &mut Vec<(WriteOp, Reply)>, linger: Duration) -> bool {
    // One writer at a time takes what is waiting; the others run their
    // batches meanwhile.
    let mut rx = rx.lock().await;
    let Some(first) = rx.recv().await else {
        return false;
    };
    batch.push(first);
    let until = tokio::time::Instant::now() + linger;
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) if linger.is_zero() => break,
            Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            },
        }
    }
    true
}

/// Commits `batch` and answers each of its callers; empties it.
async fn write_batch(pool: &Pool, jobs: &JobCache, batch: &mut Vec<(WriteOp, Reply)>) {
    match run_together(pool, jobs, batch).await {
        Ok(done) => {
            // A claim owes nothing to the settling of jobs (PostgreSQL's
            // second transaction): its caller, an agent waiting for work,
            // hears at once.
            let now = batch_now(batch);
            let mut replies = Vec::with_capacity(batch.len());
            let mut ended = Vec::with_capacity(batch.len());
            for ((_, reply), done) in batch.drain(..).zip(done) {
                match done {
                    WriteDone::Claimed(_) => {
                        let _ = reply.send(Ok(done));
                    }
                    WriteDone::Finished(..) => {
                        replies.push(reply);
                        ended.push(done);
                    }
                }
            }
            settle_jobs(pool, &mut ended, now).await;
            for (reply, done) in replies.into_iter().zip(ended) {
                let _ = reply.send(Ok(done));
            }
        }
        Err(e) => {
            if e.is_conflict() {
                // Another writer's batch locked the same rows in another order.
                tracing::debug!(
                    ops = batch.len(),
                    "batched write aborted ({e}); retrying one by one"
                );
            } else if batch.len() > 1 {
                tracing::warn!(
                    ops = batch.len(),
                    "batched write failed ({e}); retrying one by one"
                );
            }
            for (op, reply) in batch.drain(..) {
                let mut done = run_alone(pool, jobs, &op).await;
                if let Ok(done) = &mut done {
                    settle_jobs(pool, std::slice::from_mut(done), op_now(&op)).await;
                }
                let _ = reply.send(done);
            }
        }
    }
}

fn op_now(op: &WriteOp) -> UnixMillis {
    match op {
        WriteOp::Claim { now, .. } => *now,
        WriteOp::Finish(args) => args.now,
    }
}

fn batch_now(batch: &[(WriteOp, Reply)]) -> UnixMillis {
    batch.iter().map(|(op, _)| op_now(op)).max().unwrap_or(0)
}

/// The jobs whose tasks a batch ended, each once, in id order.
fn ended_jobs(done: &[WriteDone]) -> Vec<i64> {
    let mut ids: Vec<i64> = done
        .iter()
        .filter_map(|d| match d {
            WriteDone::Finished(FinishEffect::TaskFinished { job_id, .. }, _) => Some(*job_id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The runs a batch ended, grouped by task key in key order.
fn ended_runs(done: &[WriteDone]) -> Vec<(String, Vec<i64>)> {
    let mut runs: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for d in done {
        if let WriteDone::Finished(_, Some(sample)) = d {
            runs.entry(sample.key.clone())
                .or_default()
                .push(sample.duration_ms);
        }
    }
    runs.into_iter().collect()
}

/// Records the runs' durations (each key once, in key order, so writers
/// lock history rows in one order) and recomputes the state of every job in
/// `ids` (in id order) inside `tx`; a job that finished gets its counts
/// stored with its state (`refresh_job_state`).
async fn settle_in(
    tx: &mut Tx,
    runs: &[(String, Vec<i64>)],
    ids: &[i64],
    now: UnixMillis,
) -> Result<Settled> {
    let mut settled = Settled::default();
    if !runs.is_empty() {
        settled.means = record_runtimes(tx, runs).await?;
    }
    for &id in ids {
        settled
            .jobs
            .insert(id, refresh_job_state(tx, id, Some("running"), now).await?);
    }
    Ok(settled)
}

/// What settling a batch found: job states and the keys' new mean runtimes.
#[derive(Default)]
struct Settled {
    jobs: std::collections::HashMap<i64, JobState>,
    means: std::collections::HashMap<String, f64>,
}

/// Writes settled job states and mean runtimes into the answers.
fn answer_states(done: &mut [WriteDone], settled: &Settled) {
    for d in done.iter_mut() {
        match d {
            WriteDone::Finished(
                FinishEffect::TaskFinished {
                    job_id, job_state, ..
                },
                _,
            ) => {
                if let Some(state) = settled.jobs.get(job_id) {
                    *job_state = *state;
                }
            }
            WriteDone::Finished(FinishEffect::Requeued(task), Some(_)) => {
                task.expected_ms = settled.means.get(&task.task_key).copied();
            }
            _ => {}
        }
    }
}

/// Settles what a committed batch derived, on PostgreSQL: the runtime
/// history of its runs and the state of every job it ended a task of, in
/// one small transaction after the batch's, each key and job once, in
/// order (so two coordinators lock them in the same order), so the batch's
/// own transaction never queues on those rows' locks. (On SQLite, with its
/// one writer, the batch settles its jobs before its own commit.) A failure
/// is logged, not answered: the ends are committed, and the coordinator's
/// start-up repairs a job left running (`repair_job_states`).
async fn settle_jobs(pool: &Pool, done: &mut [WriteDone], now: UnixMillis) {
    if pool.backend() == Backend::Sqlite {
        return;
    }
    let ids = ended_jobs(done);
    let runs = ended_runs(done);
    if ids.is_empty() && runs.is_empty() {
        return;
    }
    let settled = crate::retry_conflicts(|| async {
        let mut tx = pool.begin().await?;
        let states = settle_in(&mut tx, &runs, &ids, now).await?;
        tx.commit().await?;
        Ok(states)
    })
    .await;
    match settled {
        Ok(states) => answer_states(done, &states),
        Err(e) => tracing::error!(jobs = ?ids, "failed to settle job states: {e}"),
    }
}

async fn run_together(
    pool: &Pool,
    jobs: &JobCache,
    batch: &[(WriteOp, Reply)],
) -> Result<Vec<WriteDone>> {
    let mut tx = pool.begin().await?;
    let mut done = if each_target_once(batch) && groups_well(tx.backend(), batch) {
        apply_grouped(&mut tx, jobs, batch).await?
    } else {
        let mut done = Vec::with_capacity(batch.len());
        for (op, _) in batch {
            done.push(apply(&mut tx, jobs, op).await?);
        }
        done
    };
    if tx.backend() == Backend::Sqlite {
        let states = settle_in(
            &mut tx,
            &ended_runs(&done),
            &ended_jobs(&done),
            batch_now(batch),
        )
        .await?;
        answer_states(&mut done, &states);
    }
    tx.commit().await?;
    Ok(done)
}

/// Whether no task is claimed twice and no attempt finished twice in
/// `batch`; only then may its writes run grouped (`batch_pg`), where each
/// statement sees the rows as they were before it. (A second claim of a
/// task, or a second finish of an attempt, must see the first's effect,
/// so such a batch runs its writes in turn.)
fn each_target_once(batch: &[(WriteOp, Reply)]) -> bool {
    let mut tasks = std::collections::HashSet::new();
    let mut attempts = std::collections::HashSet::new();
    batch.iter().all(|(op, _)| match op {
        WriteOp::Claim { task_id, .. } => tasks.insert(*task_id),
        WriteOp::Finish(args) => attempts.insert(args.attempt_id),
    })
}

/// Whether `batch` runs faster grouped on `backend`. On SQLite a grouped
/// finish's results travel inside the batch's one JSON array, copied in and
/// parsed out again; for large reports that costs more than the hand-offs
/// it saves, and every claim of the batch would wait for it.
fn groups_well(backend: Backend, batch: &[(WriteOp, Reply)]) -> bool {
    backend == Backend::Postgres
        || batch
            .iter()
            .map(|(op, _)| match op {
                WriteOp::Finish(args) => args
                    .results
                    .iter()
                    .flatten()
                    .map(|r| r.cases().count())
                    .sum(),
                WriteOp::Claim { .. } => 0,
            })
            .sum::<usize>()
            <= SQLITE_GROUPED_CASES
}

/// The batch's writes, grouped: its claims (one statement; three on
/// SQLite), then its finishes (a few statements for all of them), answered in the
/// batch's order. Claims go first so that every answer still holds at the
/// commit: a task a finish of this batch re-queues is answered `Requeued`
/// and is queued when the coordinator hears it (a claim of it in the same
/// batch loses, as any claim may).
async fn apply_grouped(
    tx: &mut Tx,
    jobs: &JobCache,
    batch: &[(WriteOp, Reply)],
) -> Result<Vec<WriteDone>> {
    let finishes: Vec<&FinishArgs> = batch
        .iter()
        .filter_map(|(op, _)| match op {
            WriteOp::Finish(args) => Some(args),
            WriteOp::Claim { .. } => None,
        })
        .collect();
    let claims: Vec<ClaimReq> = batch
        .iter()
        .filter_map(|(op, _)| match op {
            WriteOp::Claim {
                task_id,
                agent,
                now,
                lease_ms,
            } => Some(ClaimReq {
                task_id: *task_id,
                agent,
                now: *now,
                lease_ms: *lease_ms,
            }),
            WriteOp::Finish(_) => None,
        })
        .collect();
    let mut claimed = if claims.is_empty() {
        Vec::new()
    } else {
        claim_many(tx, jobs, &claims).await?
    }
    .into_iter();
    let mut finished = if finishes.is_empty() {
        Vec::new()
    } else {
        finish_many(tx, &finishes).await?
    }
    .into_iter();
    let mut done = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        let answer = match op {
            WriteOp::Claim { .. } => claimed.next().map(|c| WriteDone::Claimed(c.map(Box::new))),
            WriteOp::Finish(_) => finished
                .next()
                .map(|(effect, sample)| WriteDone::Finished(effect, sample)),
        };
        done.push(answer.ok_or_else(|| {
            StoreError::Corrupt("a grouped write of the batch was not answered".into())
        })?);
    }
    Ok(done)
}

async fn run_alone(pool: &Pool, jobs: &JobCache, op: &WriteOp) -> Result<WriteDone> {
    crate::retry_conflicts(|| async {
        let mut tx = pool.begin().await?;
        let mut done = [apply(&mut tx, jobs, op).await?];
        if tx.backend() == Backend::Sqlite {
            let states =
                settle_in(&mut tx, &ended_runs(&done), &ended_jobs(&done), op_now(op)).await?;
            answer_states(&mut done, &states);
        }
        tx.commit().await?;
        let [done] = done;
        Ok(done)
    })
    .await
}

async fn apply(tx: &mut Tx, jobs: &JobCache, op: &WriteOp) -> Result<WriteDone> {
    Ok(match op {
        WriteOp::Claim {
            task_id,
            agent,
            now,
            lease_ms,
        } => WriteDone::Claimed(
            claim_in(tx, jobs, *task_id, agent, *now, *lease_ms)
                .await?
                .map(Box::new),
        ),
        WriteOp::Finish(args) => {
            let (effect, sample) = finish_in(tx, args).await?;
            WriteDone::Finished(effect, sample)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::{mpsc, oneshot, watch};

    use testfleet_core::AttemptOutcome;
    use testfleet_wire::results::{Case, Results, Suite};

    use super::{
        Backend, FinishArgs, POSTGRES_LINGER, Queue, Reply, SQLITE_GROUPED_CASES, WriteOp,
        groups_well, take_batch, wait_turn,
    };

    fn finish_with_cases(cases: usize) -> WriteOp {
        let suite = Suite {
            cases: (0..cases)
                .map(|i| Case::new(format!("c{i}"), None))
                .collect(),
            ..Suite::default()
        };
        WriteOp::Finish(FinishArgs {
            attempt_id: 1,
            by_agent: None,
            outcome: AttemptOutcome::Passed,
            reason: None,
            reason_data: None,
            results: Some(vec![Results {
                suites: vec![suite],
                ..Results::default()
            }]),
            stage: None,
            now: 0,
        })
    }

    #[test]
    fn a_sqlite_batch_with_a_large_report_runs_one_write_at_a_time() {
        let batch = |cases: &[usize]| {
            cases
                .iter()
                .map(|&n| (finish_with_cases(n), tokio::sync::oneshot::channel().0))
                .collect::<Vec<_>>()
        };
        let small = batch(&[10, 20, 0]);
        assert!(groups_well(Backend::Sqlite, &small));
        let large = batch(&[10, SQLITE_GROUPED_CASES]);
        assert!(!groups_well(Backend::Sqlite, &large));
        assert!(groups_well(Backend::Postgres, &large));
    }

    #[tokio::test]
    async fn a_writer_beyond_the_allowed_number_waits_its_turn() {
        let (allowed, mut rx) = watch::channel(2);
        assert!(wait_turn(1, &mut rx.clone()).await);
        allowed.send_replace(1);
        assert!(
            wait_turn(0, &mut rx.clone()).await,
            "the first writer always writes"
        );
        let waiting = tokio::spawn(async move { wait_turn(1, &mut rx).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the second writer waits while one is allowed"
        );
        allowed.send_replace(2);
        assert_eq!(waiting.await.ok(), Some(true));
    }

    fn claim(task_id: i64) -> (WriteOp, Reply) {
        let (reply, _) = oneshot::channel();
        let op = WriteOp::Claim {
            task_id,
            agent: "a".into(),
            now: 0,
            lease_ms: 1,
        };
        (op, reply)
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_its_linger_for_more_and_without_one_takes_only_what_waits() {
        // The timer ticks in milliseconds: the wait here is ten of them.
        const LINGER: Duration = Duration::from_millis(10);
        assert!(POSTGRES_LINGER > Duration::ZERO);
        let (tx, rx) = mpsc::unbounded_channel();
        let queue: Queue = Arc::new(tokio::sync::Mutex::new(rx));
        let late = tx.clone();
        tx.send(claim(1)).unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            late.send(claim(2)).unwrap();
            tokio::time::sleep(LINGER * 2).await;
            late.send(claim(3)).unwrap();
        });
        let mut batch = Vec::new();
        assert!(take_batch(&queue, &mut batch, LINGER).await);
        assert_eq!(batch.len(), 2, "the second claim came within the wait");
        batch.clear();
        assert!(take_batch(&queue, &mut batch, Duration::ZERO).await);
        assert_eq!(batch.len(), 1);
        // Without a wait, only what is waiting.
        tx.send(claim(4)).unwrap();
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            sender.send(claim(5)).unwrap();
        });
        batch.clear();
        assert!(take_batch(&queue, &mut batch, Duration::ZERO).await);
        assert_eq!(batch.len(), 1);
        drop(tx);
        batch.clear();
        assert!(take_batch(&queue, &mut batch, LINGER).await);
        assert_eq!(batch.len(), 1, "the claim sent meanwhile");
        batch.clear();
        assert!(!take_batch(&queue, &mut batch, LINGER).await);
    }

    #[tokio::test]
    async fn a_waiting_writer_stops_with_the_store() {
        let (allowed, mut rx) = watch::channel(1);
        let waiting = tokio::spawn(async move { wait_turn(1, &mut rx).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(allowed);
        assert_eq!(waiting.await.ok(), Some(false));
    }
}
