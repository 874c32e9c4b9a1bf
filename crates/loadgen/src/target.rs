//! Where a run's coordinators come from: one in process, the given
//! `--server` URLs, or spawned `testfleet server` processes.

use crate::coordinators::{Coordinators, FleetFigures};
use crate::server::LocalServer;
use crate::{BenchConfig, BenchError};

/// The coordinators of one run.
pub(crate) enum Target {
    InProcess(LocalServer),
    Given(Vec<String>),
    Spawned(Coordinators),
}

impl Target {
    pub async fn start(config: &BenchConfig, secret: &str) -> Result<Target, BenchError> {
        if !config.server.is_empty() {
            let urls = config
                .server
                .iter()
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .collect();
            return Ok(Target::Given(urls));
        }
        match (&config.server_program, config.coordinators) {
            (Some(program), n) if n > 0 => Coordinators::start(
                program,
                n,
                secret,
                config.database.as_ref(),
                config.status_requests,
            )
            .await
            .map(Target::Spawned)
            .map_err(BenchError::Coordinators),
            _ => LocalServer::start(secret, config.status_requests, config.database.as_ref())
                .await
                .map(Target::InProcess),
        }
    }

    pub fn urls(&self) -> Vec<String> {
        match self {
            Target::InProcess(l) => vec![l.url.clone()],
            Target::Given(urls) => urls.clone(),
            Target::Spawned(c) => c.urls(),
        }
    }

    pub fn describe(&self, config: &BenchConfig) -> String {
        match self {
            Target::InProcess(_) => "in-process".to_owned(),
            Target::Given(urls) => urls.join(","),
            Target::Spawned(_) => format!(
                "{} spawned ({})",
                config.coordinators,
                config
                    .database
                    .as_ref()
                    .map_or("sqlite", |d| d.backend().as_str())
            ),
        }
    }

    /// Stops what this bench started; the spawned coordinators' figures.
    pub async fn stop(self) -> Option<FleetFigures> {
        match self {
            Target::InProcess(l) => {
                l.stop().await;
                None
            }
            Target::Given(_) => None,
            Target::Spawned(c) => Some(c.stop().await),
        }
    }
}
