//! Stores to run the contract on: SQLite in a temporary directory, and a
//! fresh PostgreSQL database per test (the store's `ScratchDatabase`),
//! dropped afterwards — also when the test fails: [`PgDatabase`]'s `Drop`
//! drops it.

use std::future::Future;

use sqlx::{Connection, PgConnection, PgPool};
use testfleet_store::{Backend, DatabaseUrl, ScratchDatabase, Store};

/// The test server's maintenance database (trust authentication).
const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

fn admin_url() -> String {
    format!("{SERVER}/postgres")
}

/// Runs `test` on a store in a fresh temporary directory.
pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let store = Store::open(dir.path())
        .await
        .expect("failed to open the SQLite store");
    assert_eq!(store.backend(), Backend::Sqlite);
    test(store.clone()).await;
    store.close().await;
}

/// Runs `test` on a store in a fresh PostgreSQL database; skips (outside CI)
/// when the server is unreachable.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    assert_eq!(store.backend(), Backend::Postgres);
    test(store.clone()).await;
    store.close().await;
    drop(db);
}

/// A database of its own on the test server, dropped with this value.
pub struct PgDatabase {
    scratch: Option<ScratchDatabase>,
}

impl PgDatabase {
    /// Creates `tf_<random hex>`. `None` (after a notice) when the server
    /// cannot be reached outside CI; under `CI=true` that panics instead, so
    /// a missing service cannot pass as skipped tests.
    pub async fn create() -> Option<PgDatabase> {
        match PgConnection::connect(&admin_url()).await {
            Ok(c) => {
                let _ = c.close().await;
            }
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL at {SERVER} is unreachable ({e}); CI must start it"
                );
                eprintln!(
                    "skipping: PostgreSQL at {SERVER} is unreachable ({e}); start it to run the PostgreSQL half of the store contract"
                );
                return None;
            }
        }
        let scratch = ScratchDatabase::create(&admin_url(), "tf")
            .await
            .unwrap_or_else(|e| panic!("failed to create a database on {SERVER}: {e:?}"));
        Some(PgDatabase {
            scratch: Some(scratch),
        })
    }

    pub fn url(&self) -> DatabaseUrl {
        self.scratch
            .as_ref()
            .map(|s| s.url().clone())
            .expect("the database exists until dropped")
    }

    /// A store (its own pools, as one coordinator has) on this database.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("failed to open the store on {}: {e:?}", self.url()))
    }

    /// A plain pool on this database, to check tables directly.
    pub async fn pool(&self) -> PgPool {
        let DatabaseUrl::Postgres(url) = self.url() else {
            unreachable!("a PostgreSQL database");
        };
        PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("failed to connect to {url}: {e}"))
    }
}

/// Why a test database could not be dropped.
#[derive(Debug, thiserror::Error)]
enum DropError {
    #[error("failed to start a runtime to drop")]
    Runtime(#[source] std::io::Error),
    #[error("failed to drop")]
    Drop(#[source] testfleet_store::StoreError),
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let Some(scratch) = self.scratch.take() else {
            return;
        };
        // Drop may run inside the test's runtime (or while a failed test
        // unwinds): use a runtime of its own on a thread of its own, and
        // never panic here.
        let url = scratch.url().to_string();
        let dropped = std::thread::spawn(move || -> Result<(), DropError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DropError::Runtime)?;
            runtime.block_on(scratch.drop()).map_err(DropError::Drop)
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                eprintln!("warning: {e} {url}: {}", cause.unwrap_or_default());
            }
            Err(_) => eprintln!("warning: dropping {url} panicked"),
        }
    }
}
