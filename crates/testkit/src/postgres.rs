//! A scratch PostgreSQL database per test on the test server
//! (`postgres://postgres@127.0.0.1:5432`, trust authentication): made with
//! the store's [`ScratchDatabase`], dropped with the value, also when the
//! test fails. An unreachable server is the peer rule's business.

use sqlx::{Connection, PgConnection, PgPool};
use testfleet_store::{DatabaseUrl, ScratchDatabase, Store, StoreError};

use crate::peers::{POSTGRES, require_peer};

/// The test server's maintenance database.
pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own on the test server, dropped with this value.
#[derive(Debug)]
pub struct ScratchPg {
    scratch: Option<ScratchDatabase>,
    url: DatabaseUrl,
}

impl ScratchPg {
    /// Creates `tf_<random hex>`; see [`ScratchPg::create_named`].
    pub async fn create() -> Option<ScratchPg> {
        ScratchPg::create_named("tf").await
    }

    /// Creates `PREFIX_<random hex>`. `None` under the peer rule when the
    /// server is unreachable; a server that answers but refuses to create
    /// the database fails the test.
    pub async fn create_named(prefix: &str) -> Option<ScratchPg> {
        let reachable = match PgConnection::connect(SERVER).await {
            Ok(c) => {
                let _ = c.close().await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        require_peer(&POSTGRES, reachable)?;
        let scratch = ScratchDatabase::create(SERVER, prefix)
            .await
            .unwrap_or_else(|e| panic!("failed to create a database on {SERVER}: {e:?}"));
        Some(ScratchPg {
            url: scratch.url().clone(),
            scratch: Some(scratch),
        })
    }

    pub fn url(&self) -> DatabaseUrl {
        self.url.clone()
    }

    /// The `postgres://…` URL of the database.
    pub fn postgres_url(&self) -> &str {
        match &self.url {
            DatabaseUrl::Postgres(url) => url,
            DatabaseUrl::Sqlite(path) => {
                unreachable!("a scratch database is PostgreSQL, not {}", path.display())
            }
        }
    }

    /// A store (its own pools, as one coordinator has) on this database.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("failed to open the store on {}: {e:?}", self.url))
    }

    /// A plain pool on this database, to look at tables directly.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(self.postgres_url())
            .await
            .unwrap_or_else(|e| panic!("failed to connect to {}: {e}", self.url))
    }

    /// Drops the database now, saying why when that fails.
    pub async fn remove(mut self) -> Result<(), StoreError> {
        match self.scratch.take() {
            Some(scratch) => scratch.drop().await,
            None => Ok(()),
        }
    }
}

/// Why a scratch database could not be dropped.
#[derive(Debug, thiserror::Error)]
enum DropError {
    #[error("failed to start a runtime to drop")]
    Runtime(#[source] std::io::Error),
    #[error("failed to drop")]
    Drop(#[source] StoreError),
}

impl Drop for ScratchPg {
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
