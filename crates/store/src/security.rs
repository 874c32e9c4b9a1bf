//! Users, API tokens, per-host agent secrets and the audit log. Only hashes
//! are stored; hashing itself happens in the server's `auth` module.

use serde_json::{Value, json};
use sqlx::Row;
use testfleet_core::time_fmt::{UnixMillis, format_millis};

use crate::{Result, Store, StoreError};

/// A stored user.
#[derive(Clone, PartialEq)]
pub struct StoredUser {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub admin: bool,
    /// HTTP Digest: the realm the HA1 values below were computed for.
    /// `None` for users whose password was set before Digest support.
    pub digest_realm: Option<String>,
    /// HA1 = MD5(username:realm:password), hex.
    pub digest_ha1_md5: Option<String>,
    /// HA1 = SHA-256(username:realm:password), hex.
    pub digest_ha1_sha256: Option<String>,
}

/// Names and flags only: the hashes (HA1 is password-equivalent for
/// Digest) never reach a log through `{:?}`.
impl std::fmt::Debug for StoredUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredUser")
            .field("name", &self.name)
            .field("admin", &self.admin)
            .field("digest_realm", &self.digest_realm)
            .finish_non_exhaustive()
    }
}

/// A stored API token (its hash only).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    pub name: String,
    pub admin: bool,
    pub revoked: bool,
}

/// A host's own agent secret.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAgentSecret {
    pub secret_hash: String,
    pub revoked: bool,
}

impl Store {
    /// Adds or replaces a user, without Digest credentials (any stored
    /// ones are dropped: they belonged to the previous password).
    pub async fn put_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
        now: UnixMillis,
    ) -> Result<()> {
        self.save_user(
            &StoredUser {
                name: name.to_owned(),
                password_hash: password_hash.to_owned(),
                admin,
                digest_realm: None,
                digest_ha1_md5: None,
                digest_ha1_sha256: None,
            },
            now,
        )
        .await
    }

    /// Adds or replaces a user: its argon2 hash and its Digest HA1 values
    /// (from the same password) are written together.
    pub async fn save_user(&self, user: &StoredUser, now: UnixMillis) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (name, password_hash, admin, created_at, digest_realm, digest_ha1_md5, digest_ha1_sha256)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, admin = excluded.admin,
             digest_realm = excluded.digest_realm, digest_ha1_md5 = excluded.digest_ha1_md5,
             digest_ha1_sha256 = excluded.digest_ha1_sha256",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.admin)
        .bind(now)
        .bind(&user.digest_realm)
        .bind(&user.digest_ha1_md5)
        .bind(&user.digest_ha1_sha256)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn remove_user(&self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<StoredUser>> {
        Ok(sqlx::query(
            "SELECT name, password_hash, admin, digest_realm, digest_ha1_md5, digest_ha1_sha256
             FROM users WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .map(|r| StoredUser {
            name: r.get(0),
            password_hash: r.get(1),
            admin: r.get(2),
            digest_realm: r.get(3),
            digest_ha1_md5: r.get(4),
            digest_ha1_sha256: r.get(5),
        }))
    }

    pub async fn users(&self) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT name, admin, created_at, digest_ha1_sha256 IS NOT NULL FROM users ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| json!({"name": r.get::<String, _>(0), "admin": r.get::<bool, _>(1), "created_at": format_millis(r.get(2)),
                            "digest": r.get::<bool, _>(3)}))
            .collect())
    }

    /// Stores a new token's hash under a unique name.
    pub async fn add_token(
        &self,
        name: &str,
        token_hash: &str,
        admin: bool,
        now: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, admin, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(name)
        .bind(token_hash)
        .bind(admin)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("a token named `{name}` exists already"))
            }
            _ => StoreError::Db(e),
        })?;
        Ok(())
    }

    pub async fn revoke_token(&self, name: &str, now: UnixMillis) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("active token `{name}`")));
        }
        Ok(())
    }

    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<StoredToken>> {
        Ok(sqlx::query(
            "SELECT name, admin, revoked_at IS NOT NULL FROM api_tokens WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?
        .map(|r| StoredToken {
            name: r.get(0),
            admin: r.get(1),
            revoked: r.get(2),
        }))
    }

    pub async fn tokens(&self) -> Result<Vec<Value>> {
        let rows =
            sqlx::query("SELECT name, admin, created_at, revoked_at FROM api_tokens ORDER BY id")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows
            .iter()
            .map(|r| {
                json!({"name": r.get::<String, _>(0), "admin": r.get::<bool, _>(1),
                       "created_at": format_millis(r.get(2)), "revoked_at": r.get::<Option<i64>, _>(3).map(format_millis)})
            })
            .collect())
    }

    /// Sets (or rotates) a host's own secret.
    pub async fn put_agent_secret(
        &self,
        hostname: &str,
        secret_hash: &str,
        now: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_secrets (hostname, secret_hash, created_at) VALUES (?, ?, ?)
             ON CONFLICT (hostname) DO UPDATE SET secret_hash = excluded.secret_hash, created_at = excluded.created_at,
             revoked_at = NULL",
        )
        .bind(hostname)
        .bind(secret_hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn revoke_agent_secret(&self, hostname: &str, now: UnixMillis) -> Result<()> {
        let done = sqlx::query(
            "UPDATE agent_secrets SET revoked_at = ? WHERE hostname = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(hostname)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "active secret for host `{hostname}`"
            )));
        }
        Ok(())
    }

    pub async fn agent_secret(&self, hostname: &str) -> Result<Option<StoredAgentSecret>> {
        Ok(sqlx::query(
            "SELECT secret_hash, revoked_at IS NOT NULL FROM agent_secrets WHERE hostname = ?",
        )
        .bind(hostname)
        .fetch_optional(&self.reader)
        .await?
        .map(|r| StoredAgentSecret {
            secret_hash: r.get(0),
            revoked: r.get(1),
        }))
    }

    /// Hosts whose secret was revoked or changed after `since`.
    pub async fn agent_secrets_changed_since(&self, since: UnixMillis) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT hostname FROM agent_secrets WHERE revoked_at > ? OR created_at > ? ORDER BY hostname",
        )
        .bind(since)
        .bind(since)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records who did what.
    pub async fn audit(
        &self,
        actor: &str,
        peer: Option<&str>,
        action: &str,
        target: Option<&str>,
        detail: Option<&Value>,
        now: UnixMillis,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (at, actor, peer, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(now)
            .bind(actor)
            .bind(peer)
            .bind(action)
            .bind(target)
            .bind(detail.map(Value::to_string))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<Value>> {
        let rows = sqlx::query("SELECT at, actor, peer, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                json!({"at": format_millis(r.get(0)), "actor": r.get::<String, _>(1), "peer": r.get::<Option<String>, _>(2),
                       "action": r.get::<String, _>(3), "target": r.get::<Option<String>, _>(4),
                       "detail": r.get::<Option<&str>, _>(5).and_then(|d| serde_json::from_str::<Value>(d).ok())})
            })
            .collect())
    }
}
