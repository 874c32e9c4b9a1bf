//! A coordinator in the test's process on a free loopback port, and a
//! manual clock to drive its leases and thresholds without sleeping.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use testfleet_client::ApiClient;
use testfleet_server::{Clock, Coordinator, Server, ServerConfig, ServerError, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A coordinator serving on `127.0.0.1:<free port>`. Dropping it asks it to
/// stop; [`TestServer::stop`] also waits until it has.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub addr: std::net::SocketAddr,
    /// A REST client on [`TestServer::url`].
    pub api: ApiClient,
    pub coordinator: Arc<Coordinator>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A coordinator on the wall clock with its data in `data_dir`;
    /// `configure` adjusts the configuration before it starts.
    pub async fn start(data_dir: &Path, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::start_with_clock(data_dir, Arc::new(SystemClock), configure).await
    }

    /// As [`TestServer::start`], with its data in a temporary directory
    /// removed with the server.
    pub async fn in_tempdir(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::in_tempdir_with_clock(Arc::new(SystemClock), configure).await
    }

    /// As [`TestServer::in_tempdir`], reading time from `clock`.
    pub async fn in_tempdir_with_clock(
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("failed to create a temporary directory: {e}"));
        let mut server = TestServer::start_with_clock(dir.path(), clock, configure).await;
        server._dir = Some(dir);
        server
    }

    /// As [`TestServer::start`], reading time from `clock`.
    pub async fn start_with_clock(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("failed to listen on a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no address for the listener: {e}"));
        let mut config = ServerConfig::new(addr, data_dir.to_owned());
        configure(&mut config);
        let database = config.database_url();
        let server = Server::build_with_clock(config, clock)
            .await
            .unwrap_or_else(|e| panic!("failed to start a coordinator on {database}: {e:?}"));
        let coordinator = server.coordinator.clone();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.wait_for(|v| *v).await;
        }));
        let url = format!("http://{addr}");
        TestServer {
            api: ApiClient::new(&url),
            url,
            addr,
            coordinator,
            stop,
            task,
            _dir: None,
        }
    }

    /// Whether the server is still serving (it has neither stopped nor
    /// failed).
    pub fn is_serving(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the server and waits until it has; a server that fails or takes
    /// more than 10 s to stop fails the test.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let task = &mut self.task;
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Err(_) => panic!("the coordinator at {} did not stop within 10 s", self.url),
            Ok(Err(e)) => panic!("the coordinator at {} panicked: {e}", self.url),
            Ok(Ok(Err(e))) => panic!("the coordinator at {} failed: {e:?}", self.url),
            Ok(Ok(Ok(()))) => {}
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `millis` since the epoch.
    pub fn at(millis: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(millis)))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
