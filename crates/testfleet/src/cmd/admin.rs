//! Admin commands run on the coordinator's host: users, API tokens and
//! per-host agent secrets, written straight into its store, SQLite or
//! PostgreSQL (both allow a second writer; the running coordinator sees the
//! change at once).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use testfleet_server::auth::{hash_secret, new_secret, new_token, user_record};
use testfleet_store::{DatabaseUrl, Store};

use crate::cli::{AgentsCommand, SecretCommand, TokensCommand, UsersCommand};
use crate::exit;
use crate::settings::{self, FileConfig};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn open(data: &crate::cli::DataDirArg, file: &FileConfig) -> Result<Store> {
    let dir = settings::data_dir(data.data_dir.as_deref(), file);
    let url = settings::database(data.database.as_deref(), &dir, file)?;
    if let DatabaseUrl::Sqlite(path) = &url
        && !path.exists()
    {
        bail!(
            "no coordinator data in {} (pass --data-dir or --database, or set [server] data_dir or database in the config file)",
            path.display()
        );
    }
    Store::connect(&url)
        .await
        .with_context(|| format!("failed to open the store {url}"))
}

/// A secret from an environment variable, else one line of standard input
/// (without echo on a terminal).
fn read_secret(var: &str, what: &str) -> Result<String> {
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Ok(v);
    }
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("{what}: ");
        let _ = std::io::stderr().flush();
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if tty {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.context("failed to read standard input")?;
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        bail!("no {what} given: set {var} or type it on standard input");
    }
    Ok(secret)
}

fn hash(secret: &str) -> Result<String> {
    hash_secret(secret).map_err(|e| anyhow::anyhow!(e))
}

pub async fn users(action: UsersCommand, file: &FileConfig) -> Result<u8> {
    match action {
        UsersCommand::Add { name, admin, data } => {
            let store = open(&data, file).await?;
            if name.is_empty() || name.contains(':') {
                bail!("a user name must be non-empty and contain no `:`");
            }
            let realm = settings::auth_realm(file)?;
            let password = read_secret("TESTFLEET_PASSWORD", "password")?;
            // The argon2 hash for Basic and the HA1 values for Digest.
            let user =
                user_record(&name, &password, admin, &realm).map_err(|e| anyhow::anyhow!(e))?;
            store.save_user(&user, now()).await?;
            store
                .audit("admin:cli", None, "user add", Some(&name), None, now())
                .await?;
            outln!("user `{name}` saved{}", if admin { " (admin)" } else { "" })?;
        }
        UsersCommand::Remove { name, data } => {
            let store = open(&data, file).await?;
            store.remove_user(&name).await?;
            store
                .audit("admin:cli", None, "user remove", Some(&name), None, now())
                .await?;
            outln!("user `{name}` removed")?;
        }
        UsersCommand::List { data } => {
            let store = open(&data, file).await?;
            outln!("{}", serde_json::to_string_pretty(&store.users().await?)?)?;
        }
    }
    Ok(exit::OK)
}

pub async fn tokens(action: TokensCommand, file: &FileConfig) -> Result<u8> {
    match action {
        TokensCommand::Create { name, admin, data } => {
            let store = open(&data, file).await?;
            let (token, token_hash) = new_token().map_err(|e| anyhow::anyhow!(e))?;
            store.add_token(&name, &token_hash, admin, now()).await?;
            store
                .audit("admin:cli", None, "token create", Some(&name), None, now())
                .await?;
            eprintln!(
                "token `{name}` created; it is shown once, keep it (e.g. export TESTFLEET_TOKEN=…):"
            );
            outln!("{token}")?;
        }
        TokensCommand::Revoke { name, data } => {
            let store = open(&data, file).await?;
            store.revoke_token(&name, now()).await?;
            store
                .audit("admin:cli", None, "token revoke", Some(&name), None, now())
                .await?;
            outln!("token `{name}` revoked")?;
        }
        TokensCommand::List { data } => {
            let store = open(&data, file).await?;
            outln!("{}", serde_json::to_string_pretty(&store.tokens().await?)?)?;
        }
    }
    Ok(exit::OK)
}

pub async fn agents(action: AgentsCommand, file: &FileConfig) -> Result<u8> {
    let AgentsCommand::Secret { action } = action;
    match action {
        SecretCommand::Set { host, data } => {
            let store = open(&data, file).await?;
            let secret = read_secret("TESTFLEET_AGENT_SECRET", "agent secret")?;
            store
                .put_agent_secret(&host, &hash(&secret)?, now())
                .await?;
            store
                .audit(
                    "admin:cli",
                    None,
                    "agent secret set",
                    Some(&host),
                    None,
                    now(),
                )
                .await?;
            outln!("secret of host `{host}` set")?;
        }
        SecretCommand::Rotate { host, data } => {
            let store = open(&data, file).await?;
            let secret = new_secret().map_err(|e| anyhow::anyhow!(e))?;
            store
                .put_agent_secret(&host, &hash(&secret)?, now())
                .await?;
            store
                .audit(
                    "admin:cli",
                    None,
                    "agent secret rotate",
                    Some(&host),
                    None,
                    now(),
                )
                .await?;
            eprintln!(
                "new secret of host `{host}` (shown once; its agent is disconnected until it uses it):"
            );
            outln!("{secret}")?;
        }
        SecretCommand::Revoke { host, data } => {
            let store = open(&data, file).await?;
            store.revoke_agent_secret(&host, now()).await?;
            store
                .audit(
                    "admin:cli",
                    None,
                    "agent secret revoke",
                    Some(&host),
                    None,
                    now(),
                )
                .await?;
            outln!("secret of host `{host}` revoked; its agent is disconnected and refused")?;
        }
    }
    Ok(exit::OK)
}
