//! Planner statistics of a young PostgreSQL database, kept current.
//!
//! The store's PostgreSQL connections let the server keep one generic plan
//! per prepared statement (its default `plan_cache_mode`), so a hot
//! statement is planned a few times per connection rather than at every
//! run. A generic plan is made from the tables' statistics of the moment,
//! and made again whenever `ANALYZE` changes them. autovacuum analyses a
//! table once a tenth of it changed, but looks only once a minute: on a
//! new database, whose tables grow from nothing within that minute, plans
//! made on empty tables (sequential scans) would be kept while the tables
//! grow by tens of thousands of rows.
//!
//! So each PostgreSQL store looks at its hot tables' change counters once
//! a second (`pg_stat_user_tables`, read from the server's memory) and
//! analyses a table once the rows changed since its last analysis reach
//! its live rows (it doubled, or was rewritten), and at least
//! [`MIN_CHANGES`]: a few analyses while a table grows to millions of
//! rows, and none for a large table that changes by a steady fraction
//! (autovacuum's). The large columns no statement filters on (a job's
//! spec, a report) have no statistics (migration 0012), so an analysis
//! does not read them. An analysis of a whole table resets its counter
//! for everyone: coordinators sharing the database do not analyse a table
//! again after another one did, and `SKIP_LOCKED` lets them skip one
//! another is analysing (quietly: that skip is not worth a warning).

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::oneshot;

/// Tables whose hot statements' plans depend on their size.
const HOT_TABLES: &[&str] = &["attempts", "jobs", "task_stats", "tasks"];

/// Changes below this never call for an analysis.
const MIN_CHANGES: i64 = 1_000;

/// How often the counters are read.
const EVERY: Duration = Duration::from_secs(1);

/// The running keeper; it stops when this is dropped (with the last handle
/// of its store).
#[derive(Debug)]
pub(crate) struct Keeper {
    _stop: oneshot::Sender<()>,
}

/// Starts the keeper on `pool`.
pub(crate) fn spawn(pool: PgPool) -> Keeper {
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        // The first look a second after the store opens: a short-lived store
        // (an admin command) never reads the counters.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Warned once per run of failures (the server may be down a while).
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return,
            }
            if pool.is_closed() {
                return;
            }
            match analyse_grown(&pool).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("could not bring the planner's statistics up to date: {e}");
                }
                Err(e) => tracing::debug!("planner statistics still not updated: {e}"),
            }
        }
    });
    Keeper { _stop: stop }
}

/// The hot tables that changed enough since their last analysis.
async fn grown_tables(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables
         WHERE schemaname = current_schema() AND relname = ANY($1)
           AND n_mod_since_analyze >= GREATEST($2, n_live_tup)
         ORDER BY relname",
    )
    .bind(HOT_TABLES)
    .bind(MIN_CHANGES)
    .fetch_all(pool)
    .await
}

/// Analyses the hot tables that grew.
async fn analyse_grown(pool: &PgPool) -> sqlx::Result<()> {
    let grown = grown_tables(pool).await?;
    if grown.is_empty() {
        return Ok(());
    }
    // Names from `HOT_TABLES`, as the catalog gave them back.
    let list = HOT_TABLES
        .iter()
        .filter(|table| grown.iter().any(|g| g == *table))
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let started = std::time::Instant::now();
    analyse(pool, &list).await?;
    tracing::debug!(tables = %list, took = ?started.elapsed(), "analysed grown tables");
    Ok(())
}

/// `ANALYZE (SKIP_LOCKED)` of `list` (table names, comma-separated). A
/// table skipped because another coordinator is analysing it raises a
/// WARNING, which sqlx would log; that skip is expected, so the server is
/// asked to send errors only (an analysis that fails still fails).
async fn analyse(pool: &PgPool, list: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL client_min_messages = error")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE (SKIP_LOCKED) {list}")))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the events sqlx logs for the server's notices.
    struct Notices(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Notices {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event
                .metadata()
                .target()
                .starts_with("sqlx::postgres::notice")
            {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[tokio::test]
    async fn a_table_another_coordinator_analyses_is_skipped_without_a_warning() {
        let Some(db) = testfleet_testkit::postgres::ScratchPg::create().await else {
            return;
        };
        let pool = db.pool().await;
        sqlx::query("CREATE TABLE tasks (id BIGINT)")
            .execute(&pool)
            .await
            .unwrap();
        // Another coordinator's analysis holds the table.
        let mut other = pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE tasks IN SHARE UPDATE EXCLUSIVE MODE")
            .execute(&mut *other)
            .await
            .unwrap();

        let notices = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Notices(notices.clone()));
        let guard = tracing::subscriber::set_default(subscriber);
        super::analyse(&pool, "tasks").await.unwrap();
        drop(guard);
        assert_eq!(notices.load(Ordering::Relaxed), 0, "a skip was logged");

        other.rollback().await.unwrap();
        pool.close().await;
    }
}
