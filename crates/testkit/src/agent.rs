//! A testfleet agent in the test's process.

use std::path::Path;
use std::time::Duration;

use testfleet_agent::AgentConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An agent running in this process until [`TestAgent::stop`] (or drop).
pub struct TestAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TestAgent {
    /// Starts an agent `name` for the coordinator at `url`, working in
    /// `work_dir/name`; `configure` sets its secret, labels, limits, ….
    /// An agent that ends with an error fails the test when it is stopped.
    pub fn start(
        url: &str,
        name: &str,
        work_dir: &Path,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> TestAgent {
        let handle = tokio::runtime::Handle::current();
        TestAgent::spawn(&handle, url, name, work_dir, configure, true)
    }

    /// Like [`TestAgent::start`], on the runtime of `handle` (for tests that
    /// drive a runtime of their own from a plain thread). Its error is
    /// ignored: such tests kill the coordinator under it.
    pub fn start_on(
        handle: &tokio::runtime::Handle,
        url: &str,
        name: &str,
        work_dir: &Path,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> TestAgent {
        TestAgent::spawn(handle, url, name, work_dir, configure, false)
    }

    fn spawn(
        handle: &tokio::runtime::Handle,
        url: &str,
        name: &str,
        work_dir: &Path,
        configure: impl FnOnce(&mut AgentConfig),
        fail_on_error: bool,
    ) -> TestAgent {
        let mut config = AgentConfig::new(url, name, work_dir.join(name));
        configure(&mut config);
        let (stop, mut stopped) = watch::channel(false);
        let name = name.to_owned();
        let task = handle.spawn(async move {
            let ended = testfleet_agent::run(config, async move {
                let _ = stopped.wait_for(|v| *v).await;
            })
            .await;
            if let Err(e) = ended
                && fail_on_error
            {
                panic!("agent {name} failed: {e:?}");
            }
        });
        TestAgent { stop, task }
    }

    /// Stops the agent and waits (up to 10 s) until it has.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(10), &mut self.task).await {
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => {}
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
