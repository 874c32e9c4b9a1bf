//! The coordinator: REST API, the socket.io endpoint for agents and browsers,
//! the scheduler and the store behind them.
//!
//! Entry points are testable: [`Server::start`] binds nothing itself; callers
//! pass a listener (port 0 in tests) and a shutdown future.

pub mod analytics;
pub mod auth;
pub mod autoscale;
pub mod blobs;
pub mod bots;
pub mod config;
mod coordinator;
mod dashboard;
pub mod exporters;
pub mod http_error;
pub mod metrics;
mod openapi;
mod reports;
mod rest;
mod resultsdb;
mod scheduler;
mod sio;
pub mod tls;
pub mod triggers;
pub mod views;

use std::future::Future;
use std::sync::Arc;

pub use config::{ConfigError, KnownFailure, ServerConfig};
pub use coordinator::{Clock, ClusterConfig, Coordinator, SystemClock};
use socketioxide::SocketIo;
use testfleet_store::{Store, StoreError};
use tokio::net::TcpListener;
pub use views::Views;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configuration the coordinator refuses to start with.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("failed to open the store")]
    Store(#[from] StoreError),
    #[error("failed to serve HTTP")]
    Io(#[from] std::io::Error),
    #[error("failed to set up TLS")]
    Tls(#[from] tls::TlsSetupError),
    #[error("failed to open the blob store")]
    Blobs(#[from] testfleet_cas::CasError),
    #[error("failed to start a merge-request bot")]
    Bot(#[from] bots::BotSetupError),
}

/// A built coordinator: its router and its shared state.
pub struct Server {
    pub router: axum::Router,
    pub coordinator: Arc<Coordinator>,
    /// The AMQP consumer and publisher, when `[server.amqp]` is configured.
    pub amqp: Option<triggers::amqp::AmqpHandle>,
}

/// Connections a listener keeps waiting for `accept` (the kernel caps it at
/// `net.core.somaxconn`, 4096 on current Linux). Tokio's `bind` asks for
/// 1,024, and thousands of agents reconnecting at once after a coordinator
/// restart overflowed that: the kernel dropped handshakes ("SYN flooding")
/// and those agents had to time out and try again.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket for [`Server::serve`] with [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's `bind`: a restarted coordinator can listen again at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    /// Opens the store, loads the queue and running attempts, and builds the
    /// router (REST + socket.io + dashboard).
    pub async fn build(config: ServerConfig) -> Result<Server, ServerError> {
        Server::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Server::build`], reading time from `clock` (tests drive leases
    /// and thresholds with a manual clock).
    pub async fn build_with_clock(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, ServerError> {
        // Before the store is opened: a refused configuration creates nothing.
        config.check_agent_access()?;
        let store = Store::connect(&config.database_url()).await?;
        Server::build_with_store(config, store, clock).await
    }

    /// Builds a coordinator on an open store (SQLite or PostgreSQL).
    ///
    /// Refuses a configuration without any agent secret unless
    /// `allow_any_agent` is set ([`ServerConfig::check_agent_access`]).
    pub async fn build_with_store(
        config: ServerConfig,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, ServerError> {
        config.check_agent_access()?;
        // HTTP clients (exporters) need a rustls provider; testfleet uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Arc::new(config);
        let (layer, io) = SocketIo::builder()
            .ping_interval(config.ping_interval)
            .ping_timeout(config.ping_timeout)
            .max_payload(config.max_socket_payload)
            .max_buffer_size(4096)
            .build_layer();
        // The background tasks below own the store's other handles; the
        // coordinator keeps its own private (handlers go through it).
        let coordinator =
            Coordinator::start(store.clone(), config.clone(), io.clone(), clock).await?;
        sio::register(&io, coordinator.clone());
        // Delivery tasks stop by themselves once the store is closed at shutdown.
        exporters::start(store.clone(), &config.exporters);
        exporters::view::start(store.clone());
        let blob_store = Arc::new(blobs::Blobs::open(&config.blobs, &config.data_dir)?);
        let clock_of = coordinator.clone();
        let amqp = config
            .amqp
            .as_ref()
            .map(|a| triggers::amqp::start(&coordinator, store.clone(), a));
        for bot in &config.bots {
            bots::start(coordinator.clone(), store.clone(), bot)?;
        }
        blobs::start_retention(store, blob_store.clone(), move || clock_of.now());
        triggers::hooks::start_retention(&coordinator);
        let analytics = Arc::new(analytics::Analytics::new(coordinator.clone()));
        let router = rest::router(coordinator.clone())
            .merge(blobs::router(coordinator.clone(), blob_store.clone()))
            .layer(axum::Extension(blob_store))
            .merge(dashboard::router(coordinator.clone(), analytics.clone()))
            .merge(exporters::router(coordinator.clone()))
            .merge(resultsdb::router(coordinator.clone()))
            .merge(analytics::rest::router(analytics))
            .merge(metrics::router(coordinator.clone()))
            .merge(autoscale::start(
                coordinator.clone(),
                config.autoscale.clone(),
            ))
            .merge(triggers::hooks::router(coordinator.clone()))
            .merge(triggers::hooks::events_router(coordinator.clone()))
            .layer(layer)
            .layer(axum::middleware::map_request(sio::own_request_head));
        Ok(Server {
            router,
            coordinator,
            amqp,
        })
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let coordinator = self.coordinator.clone();
        let app = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        match &coordinator.config.tls {
            Some(files) => {
                let config = tls::server_config(files)?;
                // `tap_io` gives the TLS listener axum's connect-info support.
                let listener = axum::serve::ListenerExt::tap_io(
                    tls::TlsListener::new(listener, config)?,
                    |_| {},
                );
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            }
            None => {
                // Small socket.io frames must not wait for Nagle's algorithm.
                let listener = axum::serve::ListenerExt::tap_io(
                    listener,
                    |tcp: &mut tokio::net::TcpStream| {
                        let _ = tcp.set_nodelay(true);
                    },
                );
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await?
            }
        }
        coordinator.shutdown().await;
        Ok(())
    }
}
