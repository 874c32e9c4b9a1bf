//! Stores to run the contract on: SQLite in a temporary directory, and a
//! fresh PostgreSQL database per test (the test kit's scratch database,
//! dropped afterwards, also when the test fails).

use std::future::Future;

use testfleet_store::{Backend, Store};

/// A database of its own on the test server, dropped with this value.
pub use testfleet_testkit::postgres::ScratchPg as PgDatabase;

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

/// Runs `test` on a store in a fresh PostgreSQL database; the peer rule
/// when the server is unreachable (a skip outside CI, a failure under it).
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
