//! PostgreSQL databases made for one run: `testfleet bench --database
//! postgres://…` and the tests create a fresh database on the given server,
//! use it, and drop it.

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::{DatabaseUrl, Result, StoreError};

/// A database created on a PostgreSQL server; dropped by [`ScratchDatabase::drop`].
#[derive(Debug)]
pub struct ScratchDatabase {
    server: String,
    name: String,
    url: DatabaseUrl,
}

impl ScratchDatabase {
    /// Creates `PREFIX_<random>` on the server of `server_url` (whose own
    /// database is only used to issue `CREATE DATABASE`).
    pub async fn create(server_url: &str, prefix: &str) -> Result<ScratchDatabase> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix)
            .map_err(|e| StoreError::Corrupt(format!("no randomness for a database name: {e}")))?;
        let name = format!("{prefix}_{}", hex::encode(suffix));
        let mut admin =
            PgConnection::connect_with(&PgConnectOptions::from_str(server_url)?).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(server_url)
            .map_err(|e| StoreError::BadUrl(format!("invalid PostgreSQL URL: {e}")))?;
        url.set_path(&format!("/{name}"));
        Ok(ScratchDatabase {
            server: server_url.to_owned(),
            name,
            url: DatabaseUrl::Postgres(url.to_string()),
        })
    }

    /// The new database's URL.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Drops the database, closing whatever connections are left on it.
    pub async fn drop(self) -> Result<()> {
        let mut admin =
            PgConnection::connect_with(&PgConnectOptions::from_str(&self.server)?).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}
