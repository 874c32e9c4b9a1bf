//! The AMQP consumer while its store fails (issue 13 item 3): a
//! coordinator on a scratch PostgreSQL database consumes messages that the
//! real `fedora-messaging` library publishes while a trigger on
//! `trigger_events` refuses every insert. No message is lost (the queue
//! still holds each one, ready or unacknowledged), nothing is recorded, the
//! consumer logs the cause and backs off instead of spinning; once the
//! trigger is dropped every message becomes exactly one job and the queue
//! drains.

#[path = "amqp/common.rs"]
mod common;
#[path = "amqp/logs.rs"]
mod logs;

use logs::{capture_logs, logged};

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BUILD_TOPIC, Fm, Running, Vhost};
use serde_json::json;
use testfleet_client::ApiClient;
use testfleet_server::triggers::amqp::AmqpConfig;
use testfleet_store::EventFilter;
use testfleet_testkit::postgres::ScratchPg;
use testfleet_wire::events::EventOutcome;

/// What the trigger's exception says (and the consumer's log must name);
/// the same text is in the `CREATE FUNCTION` below.
const OUTAGE: &str = "testfleet test: the events table refuses writes";

/// `(messages, messages_unacknowledged)` of `queue` in `vhost`: all it
/// holds, and of those the ones delivered but not yet acknowledged.
fn queue_depth(vhost: &Vhost, queue: &str) -> (u64, u64) {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-p",
            &vhost.name,
            "-q",
            "name",
            "messages",
            "messages_unacknowledged",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "rabbitmqctl list_queues: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            match parts.as_slice() {
                [name, total, unacked] if *name == queue => {
                    Some((total.parse().unwrap(), unacked.parse().unwrap()))
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no queue `{queue}` in {text}"))
}

/// Rows of the events log and of the jobs table.
async fn rows(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM trigger_events), (SELECT count(*) FROM jobs)")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A coordinator on a scratch PostgreSQL database consuming from a vhost
/// of its own, with a plain pool on that database.
struct Setup {
    vhost: Vhost,
    fm: Fm,
    pool: sqlx::PgPool,
    running: Running,
    _db: ScratchPg,
    _dir: tempfile::TempDir,
}

/// The consumer's backoff in these tests: requeued after 100 ms, doubling
/// up to 800 ms.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(800);

/// `None` (the peer rule) without RabbitMQ, the peers or PostgreSQL.
async fn setup(tag: &str) -> Option<Setup> {
    capture_logs();
    let vhost = Vhost::create(tag)?;
    let fm = Fm::new(&vhost)?;
    let db = ScratchPg::create_named("tf_amqp").await?;
    let dir = tempfile::tempdir().unwrap();
    let mut amqp = AmqpConfig::new(vhost.url());
    amqp.retry_initial = RETRY_INITIAL;
    amqp.retry_max = RETRY_MAX;
    let url = db.url();
    let running = Running::start(dir.path(), amqp, |c| c.database = Some(url)).await;
    running.connected().await;
    let pool = db.pool().await;
    Some(Setup {
        vhost,
        fm,
        pool,
        running,
        _db: db,
        _dir: dir,
    })
}

impl Setup {
    /// Publishes `n` build messages `<prefix>-<i>` (package `pkg-<i>`)
    /// through fedora-messaging; returns once the broker confirmed them.
    async fn publish(&self, prefix: &str, n: u64) {
        let messages: Vec<(String, serde_json::Value, Option<String>)> = (0..n)
            .map(|i| {
                (
                    BUILD_TOPIC.to_owned(),
                    json!({"name": format!("pkg-{i}"), "build_id": i}),
                    Some(format!("{prefix}-{i}")),
                )
            })
            .collect();
        tokio::task::block_in_place(|| self.fm.publish(&messages));
    }

    /// The queue holds all `n` messages (ready or unacknowledged), and
    /// neither an event nor a job is recorded, at a few moments apart.
    async fn nothing_lost_nor_recorded(&self, n: u64) {
        for _ in 0..3 {
            let (total, unacked) = queue_depth(&self.vhost, "testfleet");
            assert_eq!(total, n, "no message lost while the store fails");
            assert!(unacked <= n, "{unacked}");
            assert_eq!(rows(&self.pool).await, (0, 0), "nothing recorded");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let stats = self.running.amqp.stats();
        assert_eq!(
            (stats.queued, stats.duplicates, stats.ignored, stats.dropped),
            (0, 0, 0, 0),
            "nothing acknowledged while the store fails: {stats:?}"
        );
        let api = ApiClient::new(&self.running.url);
        assert!(api.jobs(100, None).await.unwrap().is_empty());
    }

    /// Every message `<prefix>-<i>` became exactly one job and one queued
    /// event, and the queue is empty; returns how long that took.
    async fn each_once(&self, prefix: &str, n: u64) -> Duration {
        let since = Instant::now();
        self.running
            .until("every message queued", Duration::from_secs(15), |s| {
                s.queued >= n
            })
            .await;
        let took = since.elapsed();
        self.running
            .until("the queue is empty", Duration::from_secs(10), |_| {
                queue_depth(&self.vhost, "testfleet") == (0, 0)
            })
            .await;
        let stats = self.running.amqp.stats();
        assert_eq!(
            (stats.queued, stats.duplicates, stats.ignored, stats.dropped),
            (n, 0, 0, 0),
            "{stats:?}"
        );
        let api = ApiClient::new(&self.running.url);
        let jobs = api.jobs(100, None).await.unwrap();
        let names: BTreeSet<String> = jobs.iter().map(|j| j.name.clone()).collect();
        let expected: BTreeSet<String> = (0..n).map(|i| format!("rpmlint-pkg-{i}")).collect();
        assert_eq!(jobs.len(), names.len(), "no job twice");
        assert_eq!(names, expected);
        let events = self
            .running
            .coordinator
            .views()
            .events(&EventFilter {
                limit: 100,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), usize::try_from(n).unwrap());
        let ids: BTreeSet<String> = events
            .iter()
            .filter_map(|e| e.delivery_id.clone())
            .collect();
        let expected_ids: BTreeSet<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        assert_eq!(ids, expected_ids, "one event per message id");
        for e in &events {
            assert_eq!(e.outcome, EventOutcome::Queued, "{e:?}");
            assert_eq!(e.job_ids.len(), 1, "{e:?}");
        }
        let n_rows = i64::try_from(n).unwrap();
        assert_eq!(rows(&self.pool).await, (n_rows, n_rows));
        took
    }

    async fn stop(self) {
        self.pool.close().await;
        self.running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_requeued_while_the_store_fails_and_become_jobs_once_after() {
    let Some(t) = setup("storefail").await else {
        return;
    };
    // The store fails: every insert into the events log raises.
    sqlx::query(
        "CREATE FUNCTION outage() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'testfleet test: the events table refuses writes'; END $$",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER outage BEFORE INSERT ON trigger_events
         FOR EACH ROW EXECUTE FUNCTION outage()",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let n: u64 = 20;
    let failing_since = Instant::now();
    t.publish("sf", n).await;

    // Every message fails at least twice (so each was requeued and came
    // back); meanwhile the queue holds all of them and nothing is recorded.
    t.running
        .until("every message failed twice", Duration::from_secs(15), |s| {
            s.store_errors >= 2 * n
        })
        .await;
    t.nothing_lost_nor_recorded(n).await;
    let failing_for = failing_since.elapsed();
    let during = t.running.amqp.stats();
    // Backed off, not spinning: each delivery waits at least
    // `RETRY_INITIAL` before it is requeued.
    let rounds = failing_for.as_millis() / RETRY_INITIAL.as_millis() + 2;
    let bound = n * u64::try_from(rounds).unwrap();
    assert!(
        during.received <= bound,
        "{} deliveries in {failing_for:?} (at most {bound} with the backoff)",
        during.received
    );
    let cause = logged("failed to record an AMQP message, requeueing it");
    assert!(!cause.is_empty(), "the consumer logs the store failure");
    assert!(
        cause.iter().all(|l| l.contains(OUTAGE)),
        "the log names the cause: {cause:?}"
    );

    // The store recovers: every message becomes exactly one job.
    sqlx::query("DROP TRIGGER outage ON trigger_events")
        .execute(&t.pool)
        .await
        .unwrap();
    let took = t.each_once("sf", n).await;
    assert!(took < RETRY_MAX * 4, "recovered in {took:?}");
    eprintln!(
        "store failing {failing_for:?}: {} deliveries, {} store errors; \
         recovered → {n} jobs in {took:?}",
        during.received, during.store_errors
    );
    t.stop().await;
}

/// A store that hangs rather than fails (the events log locked by another
/// transaction): nothing is acknowledged until the commit, and then each
/// message becomes one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_the_store_hangs() {
    let Some(t) = setup("storelock").await else {
        return;
    };
    let mut lock = t.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE trigger_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let n: u64 = 20;
    t.publish("lk", n).await;
    t.running
        .until("every message delivered", Duration::from_secs(15), |s| {
            s.received >= n
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, unacked) = queue_depth(&t.vhost, "testfleet");
    assert_eq!((total, unacked), (n, n), "held, unacknowledged");
    let stats = t.running.amqp.stats();
    assert_eq!(
        (stats.queued, stats.store_errors),
        (0, 0),
        "nothing acknowledged nor requeued while the store hangs: {stats:?}"
    );
    lock.rollback().await.unwrap();
    let took = t.each_once("lk", n).await;
    eprintln!("store unlocked → {n} jobs in {took:?}");
    t.stop().await;
}
