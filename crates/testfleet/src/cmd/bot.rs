//! `testfleet bot gitlab|github --once [--dry-run] [--json]`: one pass of
//! a configured merge-request bot, on a coordinator built on the
//! configured store.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use testfleet_server::bots::{Action, BotError, Host, error_chain};
use testfleet_server::{Server, SystemClock};
use testfleet_store::Store;

use crate::cli::BotArgs;
use crate::exit;
use crate::settings::{self, FileConfig};

pub async fn run(host: Host, args: BotArgs, file: &FileConfig) -> Result<u8> {
    let key = match host {
        Host::GitLab => "gitlab",
        Host::GitHub => "github",
    };
    if !args.once {
        bail!(
            "`testfleet bot {key}` runs one pass with `--once`; the bot otherwise runs inside `testfleet server` when `[server.bots.{key}]` is configured"
        );
    }
    let mut config = settings::server_config(&args.server, file)?;
    let bot_config = std::mem::take(&mut config.bots)
        .into_iter()
        .find(|b| b.host == host)
        .with_context(|| format!("`[server.bots.{key}]` is not configured"))?;
    let sign = match host {
        Host::GitLab => "!",
        Host::GitHub => "#",
    };
    let store = Store::connect(&config.database_url())
        .await
        .context("failed to open the store")?;
    let server = Server::build_with_store(config, store.clone(), Arc::new(SystemClock)).await?;
    let bot = bot_config.bot(server.coordinator.clone(), store)?;
    let actions = match bot.pass(args.dry_run).await {
        Ok(a) => a,
        Err(e @ BotError::Paused(..)) => {
            eprintln!("{}", error_chain(&e));
            return Ok(exit::SERVER);
        }
        Err(e) => bail!("{}", error_chain(&e)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&actions)?);
    } else if actions.is_empty() {
        println!("nothing to do");
    } else {
        for a in &actions {
            println!("{sign}{}", describe(a, args.dry_run));
        }
    }
    Ok(exit::OK)
}

fn jobs(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    match ids.len() {
        0 => "no job".to_owned(),
        1 => format!("job {}", ids[0]),
        _ => format!("jobs {}", ids.join(", ")),
    }
}

/// One line about an action, after the request's `!` or `#`.
fn describe(action: &Action, dry: bool) -> String {
    match action {
        Action::Started {
            iid,
            head_sha,
            base_sha,
            head_jobs,
            base_jobs,
            reused_jobs,
            note_id,
        } => {
            let reused = if reused_jobs.is_empty() {
                String::new()
            } else {
                format!("; stored results reused from {}", jobs(reused_jobs))
            };
            format!(
                "{iid}: started: head {head_sha} ({}), merge base {base_sha} ({}), note {note_id}{reused}",
                jobs(head_jobs),
                jobs(base_jobs)
            )
        }
        Action::WouldStart { iid, head_sha } => {
            format!("{iid}: would start: benchmark head {head_sha} and its merge base")
        }
        Action::Running {
            iid,
            head_jobs,
            base_jobs,
        } => {
            let all: Vec<i64> = head_jobs.iter().chain(base_jobs).copied().collect();
            let then = if dry {
                "; would report when they end"
            } else {
                ""
            };
            format!("{iid}: running ({}){then}", jobs(&all))
        }
        Action::Reported {
            iid,
            note_id,
            headline,
        } => format!("{iid}: reported in note {note_id}: {headline}; label removed"),
        Action::Confirming {
            iid,
            round,
            unknown,
            tasks,
        } => format!(
            "{iid}: {unknown} verdicts unknown: confirmation round {round}, {} tasks run again",
            tasks.len()
        ),
        Action::Failed { iid, reason } => format!("{iid}: failed: {reason}; label removed"),
        Action::Waiting { iid, why } => format!("{iid}: waiting: {why}"),
    }
}
