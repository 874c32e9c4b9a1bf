//! Users, API tokens, per-host agent secrets and the audit log. Only hashes
//! are stored; hashing itself happens in the server's `auth` module.

use serde_json::Value;
use testfleet_core::time_fmt::{UnixMillis, format_millis};

use crate::db::on_pool;
use crate::{Missing, Result, Store, StoreError};

/// A stored user.
#[derive(Clone, PartialEq, sqlx::FromRow)]
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
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredToken {
    pub name: String,
    pub admin: bool,
    pub revoked: bool,
}

/// A host's own agent secret.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredAgentSecret {
    pub secret_hash: String,
    pub revoked: bool,
}

// The listings below are printed as JSON (`testfleet users list`, `tokens
// list`) and were JSON maps before, whose keys serde_json sorts: the fields
// are declared in that order so the output stays the same.

/// A user as listed: no hashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserEntry {
    pub admin: bool,
    /// RFC 3339.
    pub created_at: String,
    /// Whether the user has Digest credentials.
    pub digest: bool,
    pub name: String,
}

/// A token as listed: no hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenEntry {
    pub admin: bool,
    /// RFC 3339.
    pub created_at: String,
    pub name: String,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub action: String,
    pub actor: String,
    /// RFC 3339.
    pub at: String,
    /// The JSON detail recorded with the action (`None` when there was none
    /// or it does not parse).
    pub detail: Option<Value>,
    /// The client's address, when the action came over the network.
    pub peer: Option<String>,
    pub target: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    name: String,
    admin: bool,
    created_at: i64,
    digest: bool,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    name: String,
    admin: bool,
    created_at: i64,
    revoked_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    at: i64,
    actor: String,
    peer: Option<String>,
    action: String,
    target: Option<String>,
    detail: Option<String>,
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
        on_pool!(&self.writer, p => sqlx::query(
            "INSERT INTO users (name, password_hash, admin, created_at, digest_realm, digest_ha1_md5, digest_ha1_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
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
        .execute(p)
        .await
.map(|_| ()))?;
        Ok(())
    }

    pub async fn remove_user(&self, name: &str) -> Result<()> {
        let done = on_pool!(&self.writer, p => sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound(Missing::User(name.to_owned())));
        }
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<StoredUser>> {
        Ok(on_pool!(&self.reader, p => sqlx::query_as::<_, StoredUser>(
            "SELECT name, password_hash, admin, digest_realm, digest_ha1_md5, digest_ha1_sha256
             FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(p)
        .await)?)
    }

    pub async fn users(&self) -> Result<Vec<UserEntry>> {
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, UserRow>(
            "SELECT name, admin, created_at, digest_ha1_sha256 IS NOT NULL AS digest
             FROM users ORDER BY name",
        )
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| UserEntry {
                admin: r.admin,
                created_at: format_millis(r.created_at),
                digest: r.digest,
                name: r.name,
            })
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
        on_pool!(&self.writer, p => sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, admin, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(token_hash)
        .bind(admin)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("a token named `{name}` exists already"))
            }
            _ => StoreError::Db(e),
        })
    }

    pub async fn revoke_token(&self, name: &str, now: UnixMillis) -> Result<()> {
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(p)
        .await
        .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound(Missing::ActiveToken(name.to_owned())));
        }
        Ok(())
    }

    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<StoredToken>> {
        Ok(
            on_pool!(&self.reader, p => sqlx::query_as::<_, StoredToken>(
            "SELECT name, admin, revoked_at IS NOT NULL AS revoked FROM api_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(p)
        .await)?,
        )
    }

    pub async fn tokens(&self) -> Result<Vec<TokenEntry>> {
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, TokenRow>(
            "SELECT name, admin, created_at, revoked_at FROM api_tokens ORDER BY id",
        )
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| TokenEntry {
                admin: r.admin,
                created_at: format_millis(r.created_at),
                name: r.name,
                revoked_at: r.revoked_at.map(format_millis),
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
        on_pool!(&self.writer, p => sqlx::query(
            "INSERT INTO agent_secrets (hostname, secret_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (hostname) DO UPDATE SET secret_hash = excluded.secret_hash, created_at = excluded.created_at,
             revoked_at = NULL",
        )
        .bind(hostname)
        .bind(secret_hash)
        .bind(now)
        .execute(p)
        .await
.map(|_| ()))?;
        Ok(())
    }

    pub async fn revoke_agent_secret(&self, hostname: &str, now: UnixMillis) -> Result<()> {
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE agent_secrets SET revoked_at = $1 WHERE hostname = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(hostname)
        .execute(p)
        .await
        .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound(Missing::ActiveAgentSecret(
                hostname.to_owned(),
            )));
        }
        Ok(())
    }

    pub async fn agent_secret(&self, hostname: &str) -> Result<Option<StoredAgentSecret>> {
        Ok(
            on_pool!(&self.reader, p => sqlx::query_as::<_, StoredAgentSecret>(
            "SELECT secret_hash, revoked_at IS NOT NULL AS revoked FROM agent_secrets WHERE hostname = $1",
        )
        .bind(hostname)
        .fetch_optional(p)
        .await)?,
        )
    }

    /// Hosts whose secret was revoked or changed after `since`.
    pub async fn agent_secrets_changed_since(&self, since: UnixMillis) -> Result<Vec<String>> {
        Ok(on_pool!(&self.reader, p => sqlx::query_scalar::<_, String>(
            "SELECT hostname FROM agent_secrets WHERE revoked_at > $1 OR created_at > $1 ORDER BY hostname",
        )
        .bind(since)
        .fetch_all(p)
        .await)?)
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
        on_pool!(&self.writer, p => sqlx::query(
            "INSERT INTO audit_log (at, actor, peer, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now)
        .bind(actor)
        .bind(peer)
        .bind(action)
        .bind(target)
        .bind(detail.map(Value::to_string))
        .execute(p)
        .await
.map(|_| ()))?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, AuditRow>(
            "SELECT at, actor, peer, action, target, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                action: r.action,
                actor: r.actor,
                at: format_millis(r.at),
                detail: r
                    .detail
                    .and_then(|d| serde_json::from_str::<Value>(&d).ok()),
                peer: r.peer,
                target: r.target,
            })
            .collect())
    }
}
