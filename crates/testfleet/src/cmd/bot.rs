//! `testfleet bot gitlab --once [--dry-run] [--json]`: one pass of the
//! configured GitLab bot, on a coordinator built on the configured store.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use testfleet_server::bots::gitlab::{Action, BotError, error_chain};
use testfleet_server::{Server, SystemClock};
use testfleet_store::Store;

use crate::cli::BotArgs;
use crate::exit;
use crate::settings::{self, FileConfig};

pub async fn gitlab(args: BotArgs, file: &FileConfig) -> Result<u8> {
    if !args.once {
        bail!(
            "`testfleet bot gitlab` runs one pass with `--once`; the bot otherwise runs inside `testfleet server` when `[server.bots.gitlab]` is configured"
        );
    }
    let mut config = settings::server_config(&args.server, file)?;
    let bot_config = config
        .gitlab_bot
        .take()
        .context("`[server.bots.gitlab]` is not configured")?;
    let store = Store::connect(&config.database_url())
        .await
        .context("failed to open the store")?;
    let server = Server::build_with_store(config, store.clone(), Arc::new(SystemClock)).await?;
    let bot = bot_config.bot(server.coordinator.clone(), store)?;
    let actions = match bot.pass(args.dry_run).await {
        Ok(a) => a,
        Err(e @ BotError::Paused(_)) => {
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
            println!("{}", describe(a, args.dry_run));
        }
    }
    Ok(exit::OK)
}

fn describe(action: &Action, dry: bool) -> String {
    match action {
        Action::Started {
            iid,
            head_sha,
            base_sha,
            head_job,
            base_job,
            note_id,
        } => format!(
            "!{iid}: started: head {head_sha} (job {head_job}), merge base {base_sha} (job {base_job}), note {note_id}"
        ),
        Action::WouldStart { iid, head_sha } => {
            format!("!{iid}: would start: benchmark head {head_sha} and its merge base")
        }
        Action::Running {
            iid,
            head_job,
            base_job,
        } if dry => {
            format!("!{iid}: running (jobs {head_job}, {base_job}); would report when both end")
        }
        Action::Running {
            iid,
            head_job,
            base_job,
        } => format!("!{iid}: running (jobs {head_job}, {base_job})"),
        Action::Reported {
            iid,
            note_id,
            headline,
        } => format!("!{iid}: reported in note {note_id}: {headline}; label removed"),
        Action::Failed { iid, reason } => format!("!{iid}: failed: {reason}; label removed"),
        Action::Waiting { iid, why } => format!("!{iid}: waiting: {why}"),
    }
}
