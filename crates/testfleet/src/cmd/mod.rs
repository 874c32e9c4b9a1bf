//! One module per group of subcommands.

mod admin;
mod analysis;
mod artifacts;
mod bench;
mod bot;
mod client;
mod demo;
mod events;
pub(crate) mod host_prep;
mod local;
mod parse;
mod scale;
mod store;
mod trigger;

use anyhow::Result;
use testfleet_client::{ApiClient, ClientError};

use crate::cli::{Cli, Command, TriggerCommand};
use crate::exit;
use crate::settings;

pub async fn run(cli: Cli) -> Result<u8> {
    let file = settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Server(args) => {
            let config = settings::server_config(&args, &file)?;
            serve(config).await
        }
        Command::Agent(args) => {
            let config = settings::agent_config(&args, cli.server.as_deref(), &file)?;
            let servers: Vec<&str> = config.servers().collect();
            eprintln!(
                "testfleet agent `{}` → {}",
                config.hostname,
                servers.join(", ")
            );
            testfleet_agent::run(config, shutdown_signal()).await?;
            Ok(exit::OK)
        }
        Command::Parse {
            file: path,
            format,
            json,
        } => parse::run(&path, format.as_deref(), json),
        Command::Demo { data_dir, serve } => demo::run(data_dir, serve).await,
        Command::Run {
            job,
            task,
            keep_temp,
            work_dir,
            vars,
        } => local::run_job(&job, task.as_deref(), keep_temp, work_dir, &vars).await,
        Command::Trigger {
            action:
                TriggerCommand::Test {
                    rules,
                    event,
                    source,
                    topic,
                    kind,
                    json,
                },
        } => {
            let args = trigger::EventArgs {
                source: source.as_deref(),
                topic: topic.as_deref(),
                kind: kind.as_deref(),
            };
            trigger::test(&rules, &event, &args, json)
        }
        Command::Bench(args) => bench::run(args, cli.server.clone()).await,
        Command::HostPrep(args) => host_prep::run(args, std::env::var("SUDO_UID").ok()),
        Command::Changes {
            file: Some(file),
            better,
            json,
            ..
        } => analysis::changes_file(&file, better, json),
        Command::Users { action } => admin::users(action, &file).await,
        Command::Tokens { action } => admin::tokens(action, &file).await,
        Command::Store { action } => store::run(action, &file).await,
        Command::Bot {
            action: crate::cli::BotCommand::Gitlab(args),
        } => bot::run(testfleet_server::bots::Host::GitLab, args, &file).await,
        Command::Bot {
            action: crate::cli::BotCommand::Github(args),
        } => bot::run(testfleet_server::bots::Host::GitHub, args, &file).await,
        Command::Agents {
            action: Some(action),
            ..
        } => admin::agents(action, &file).await,
        other => {
            let server = settings::client_server(cli.server.as_deref(), &file)?;
            let api = ApiClient::with_ca(&server, settings::client_ca(&file).as_deref())?
                .with_credentials(settings::client_credentials(&file));
            match other {
                Command::Artifacts { action } => artifacts::run(&api, action).await,
                Command::Repro { task, keep_temp } => local::repro(&api, task, keep_temp).await,
                Command::Scale { dry_run, json } => scale::run(&api, dry_run, json).await,
                Command::Events {
                    source,
                    outcome,
                    since,
                    limit,
                    json,
                } => {
                    let args = events::EventsArgs {
                        source,
                        outcome,
                        since,
                        limit,
                        json,
                    };
                    events::run(&api, args).await
                }
                other @ (Command::Changes { .. }
                | Command::Series { .. }
                | Command::Compare { .. }
                | Command::Regressions { .. }
                | Command::Ack { .. }) => analysis::run(&api, other).await,
                other => client::run(&api, other).await,
            }
        }
    }
}

async fn serve(config: testfleet_server::ServerConfig) -> Result<u8> {
    let listener = testfleet_server::listen(config.listen)
        .map_err(|e| anyhow::anyhow!("failed to listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    if !config.agents_authenticated() {
        tracing::warn!(
            "--allow-any-agent: no agent secret configured, any host may connect as an agent"
        );
    }
    let data_dir = config.data_dir.clone();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(files) = &config.tls {
        // Fail at start-up, not at the first connection, on a bad certificate or key.
        testfleet_server::tls::server_config(files)?;
    }
    let server = testfleet_server::Server::build(config).await?;
    outln!(
        "testfleet server listening on {scheme}://{addr} (data in {})",
        data_dir.display()
    )?;
    server.serve(listener, shutdown_signal()).await?;
    Ok(exit::OK)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Maps an error to the documented exit code.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { status, .. }) if *status < 500 => exit::USAGE,
        Some(_) => exit::SERVER,
        None if e.downcast_ref::<testfleet_server::ServerError>().is_some() => exit::SERVER,
        None => exit::USAGE,
    }
}
