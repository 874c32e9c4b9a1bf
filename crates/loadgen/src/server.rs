//! The in-process coordinator used when no `--server` is given: SQLite in a
//! temporary directory (or a fresh database on a given PostgreSQL server),
//! bound to 127.0.0.1:0, on a runtime and OS thread of
//! its own (two workers, like `testfleet server`), so the load generator's
//! own work does not steal the coordinator's CPU time.

use std::net::SocketAddr;
use std::time::Duration;

use testfleet_server::{Server, ServerConfig};
use tokio::sync::{oneshot, watch};

use testfleet_store::{DatabaseUrl, ScratchDatabase};

use crate::BenchError;

/// Why the in-process coordinator did not start (reported as [`BenchError::Server`]).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("failed to start its runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("failed to listen: {0}")]
    Listen(#[source] std::io::Error),
    #[error("failed to build: {0}")]
    Build(#[source] testfleet_server::ServerError),
}

/// A running in-process coordinator; stopped by [`LocalServer::stop`] or on drop.
pub(crate) struct LocalServer {
    pub url: String,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
    scratch: Option<ScratchDatabase>,
}

impl LocalServer {
    pub async fn start(
        secret: &str,
        status_requests: bool,
        database: Option<&DatabaseUrl>,
    ) -> Result<LocalServer, BenchError> {
        let data_dir = tempfile::Builder::new()
            .prefix("testfleet-bench-")
            .tempdir()
            .map_err(|e| BenchError::Server(format!("failed to create a data directory: {e}")))?;
        let scratch = match database {
            Some(DatabaseUrl::Postgres(server)) => Some(
                ScratchDatabase::create(server, "testfleet_bench")
                    .await
                    .map_err(|e| {
                        BenchError::Server(format!("failed to create a bench database: {e}"))
                    })?,
            ),
            _ => None,
        };
        let database = match &scratch {
            Some(db) => Some(db.url().clone()),
            None => database.cloned(),
        };
        let data_path = data_dir.path().to_owned();
        let secret = secret.to_owned();
        let (stop, mut stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel::<Result<String, StartError>>();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("bench-server-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener =
                        match testfleet_server::listen(SocketAddr::from(([127, 0, 0, 1], 0))) {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = ready_tx.send(Err(StartError::Listen(e)));
                                return;
                            }
                        };
                    let addr = match listener.local_addr() {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Listen(e)));
                            return;
                        }
                    };
                    let mut config = ServerConfig::new(addr, data_path);
                    config.database = database;
                    config.agent_secret = Some(secret);
                    if !status_requests {
                        // Beyond any run, even counted from the epoch.
                        let never = Duration::from_secs(1000 * 365 * 24 * 3600);
                        config.request_status_interval = never;
                        config.request_status_interval_in_test = never;
                    }
                    let server = match Server::build(config).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Build(e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(format!("http://{addr}")));
                    let shutdown = async move {
                        let _ = stop_rx.wait_for(|v| *v).await;
                    };
                    if let Err(e) = server.serve(listener, shutdown).await {
                        tracing::error!("bench coordinator stopped: {e}");
                    }
                });
            })
            .map_err(|e| BenchError::Server(format!("failed to start its thread: {e}")))?;
        let url = ready_rx
            .await
            .map_err(|_| BenchError::Server("its thread ended early".into()))?
            .map_err(|e| BenchError::Server(e.to_string()))?;
        Ok(LocalServer {
            url,
            stop,
            thread: Some(thread),
            _data_dir: data_dir,
            scratch,
        })
    }

    /// Asks the coordinator to stop and waits (bounded) for its thread.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(Duration::from_secs(10), joined)
                .await
                .is_err()
            {
                tracing::warn!("the bench coordinator did not stop within 10 s");
            }
        }
        if let Some(db) = self.scratch.take()
            && let Err(e) = db.drop().await
        {
            tracing::warn!("failed to drop the bench database: {e}");
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
