//! The store's contract: one suite, two backends.
//!
//! Every test here is an `async fn name(store: Store)` written once against
//! the public API; [`contract_tests!`] runs it on a fresh SQLite store in a
//! temporary directory (`sqlite::name`) and on a fresh PostgreSQL database
//! (`postgres::name`), as the CAS suite runs on a directory and on S3. The
//! coordinator relies on these answers (a claim of a task that is no longer
//! queued is `None`, a late or foreign finish is `Stale`, …), so both
//! backends must give the same ones. `concurrency` adds what only a shared
//! database can show: several coordinators racing on one PostgreSQL.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432`; each test gets its own
//! database, dropped afterwards. When the server is unreachable the test
//! kit's peer rule applies: outside CI the test is reported as skipped
//! (`SKIPPED …` on stderr), under `CI=true` it fails.

/// Generates, for every `async fn name(store: Store)` listed, the tests
/// `sqlite::name` and `postgres::name` that run it on each backend.
macro_rules! contract_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::fixture::on_sqlite(super::$name).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::fixture::on_postgres(super::$name).await;
                }
            )+
        }
    };
}

mod agents;
mod artifacts;
mod batched;
mod bots;
mod concurrency;
mod events;
mod finish;
mod fixture;
mod job_list;
mod jobs;
mod logs;
mod outbox;
mod planner_stats;
mod resultsdb;
mod retry;
mod security;
mod series;
mod support;
mod views;
