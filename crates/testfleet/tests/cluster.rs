//! Several coordinators on one PostgreSQL database: real `testfleet server`
//! processes sharing a scratch database, real agents spread over them
//! (docs/scale-out.md).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testfleet_client::ApiClient;
use testfleet_core::{JobState, TaskState};
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::postgres::ScratchPg;
use testfleet_testkit::process::ServerProcess;
use testfleet_testkit::wait::wait_job;

const SECRET: &str = "s3cret-for-tests";

/// A coordinator named `name` on `database`, with `[server.cluster]` set
/// to `cluster` (TOML lines).
fn coordinator(dir: &Path, name: &str, database: &str, cluster: &str) -> ServerProcess {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlease_timeout = \"3s\"\n[server.cluster]\nname = \"{name}\"\n{cluster}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join(name))
        .args(["--agent-secret", SECRET, "--database", database, "--config"])
        .arg(&config)
        .env("TESTFLEET_LOG", "info");
    ServerProcess::start(&mut cmd)
}

/// An agent `name` with label `pool=POOL`, connected to `url`.
fn agent(url: &str, name: &str, pool: &str, dir: &Path) -> TestAgent {
    agent_failing_over(&[url], name, pool, dir)
}

/// An agent that knows the coordinators `urls`, in that order.
fn agent_failing_over(urls: &[&str], name: &str, pool: &str, dir: &Path) -> TestAgent {
    let rest: Vec<String> = urls[1..].iter().map(|u| (*u).to_owned()).collect();
    TestAgent::start(urls[0], name, dir, |config| {
        config.secret = Some(SECRET.into());
        config.fallback_servers = rest;
        config.max_backoff = Duration::from_millis(200);
        config.poll_interval = Duration::from_secs(600);
        config.labels.insert("pool".to_owned(), pool.to_owned());
    })
}

fn job(name: &str, pool: &str, run: &str) -> String {
    format!(
        "name = \"{name}\"\n[[task]]\nname = \"t\"\nrequires = {{ pool = \"{pool}\" }}\nsteps = [{{ stage = \"test\", run = \"{run}\" }}]\n"
    )
}

/// Until `api` lists `host` online (another coordinator's agent included).
async fn wait_online(api: &ApiClient, host: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let agents = api.agents().await.unwrap();
        if agents.iter().any(|a| a.hostname == host && a.online) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{host}` not online within {within:?}: {agents:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until the job's only task runs on its agent: the agent has reported its
/// `test` stage. A task is `running` from its claim on, before the work
/// item has reached the agent; a coordinator killed in between leaves an
/// attempt that no agent holds, which ends with its lease and runs again.
async fn wait_running(api: &ApiClient, job: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = api.job(job).await.unwrap();
        if let Some(t) = view
            .tasks
            .iter()
            .find(|t| t.state == TaskState::Running && t.stage.as_deref() == Some("test"))
        {
            return t.agent.clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "job {job} never ran: {view:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A task sent to one coordinator runs on another's agent at once (a
/// notice, not the poll, which is set to 10 minutes here), the others'
/// agents are listed online everywhere, and a cancel made on a third
/// coordinator stops the agent of the second.
/// Waits until the coordinator's index holds no waiting task (as its
/// autoscaling decisions count them).
async fn wait_nothing_indexed(api: &ApiClient, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let plan = api.autoscale().await.unwrap();
        let waiting: u64 = plan.decisions.iter().map(|d| d.waiting).sum();
        if waiting == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} task(s) still indexed after {within:?}: {plan:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_share_one_queue_and_one_fleet() {
    let Some(db) = ScratchPg::create_named("tf_cluster").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let poll = "poll_interval = \"10m\"";
    let a = coordinator(dir.path(), "a", db.postgres_url(), poll);
    let b = coordinator(dir.path(), "b", db.postgres_url(), poll);
    let c = coordinator(dir.path(), "c", db.postgres_url(), poll);
    let (api_a, api_b, api_c) = (
        ApiClient::new(a.url()),
        ApiClient::new(b.url()),
        ApiClient::new(c.url()),
    );
    let on_b = agent(b.url(), "agent-b", "b", dir.path());
    let on_c = agent(c.url(), "agent-c", "c", dir.path());
    // The fleet: each coordinator lists the others' agents as online.
    wait_online(&api_a, "agent-b", Duration::from_secs(10)).await;
    wait_online(&api_a, "agent-c", Duration::from_secs(10)).await;
    wait_online(&api_c, "agent-b", Duration::from_secs(10)).await;

    // Submitted to A, run by B's agent.
    let started = Instant::now();
    let id = api_a
        .submit(&job("to-b", "b", "echo on b"))
        .await
        .unwrap()
        .id;
    let done = wait_job(&api_a, id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    assert_eq!(done.tasks[0].agent.as_deref(), Some("agent-b"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "dispatched across coordinators in {took:?}: the notice did not arrive"
    );
    // A and C dropped the task B claimed from their index at once (its
    // `Claimed` notice), not at their next poll, ten minutes away.
    wait_nothing_indexed(&api_a, Duration::from_secs(3)).await;
    wait_nothing_indexed(&api_c, Duration::from_secs(3)).await;

    // Running on C's agent, cancelled through B.
    let id = api_a
        .submit(&job("long", "c", "sleep 120"))
        .await
        .unwrap()
        .id;
    assert_eq!(wait_running(&api_a, id).await, "agent-c");
    api_b.cancel(id).await.unwrap();
    let cancelled = wait_job(&api_a, id, Duration::from_secs(10)).await;
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:#?}");
    // The agent stopped its `sleep 120`: it takes the next job at once.
    let started = Instant::now();
    let id = api_b.submit(&job("after", "c", "true")).await.unwrap().id;
    let after = wait_job(&api_b, id, Duration::from_secs(30)).await;
    assert_eq!(after.state, JobState::Passed, "{after:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "agent-c was still busy {:?} after the cancel",
        started.elapsed()
    );

    on_b.stop().await;
    on_c.stop().await;
    drop((a, b, c));
    db.remove().await.unwrap();
}

/// A coordinator that does not listen (PgBouncer in transaction mode)
/// still finds work queued on another, and a cancel made there, by its
/// poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_without_notices_catches_up_by_polling() {
    let Some(db) = ScratchPg::create_named("tf_cluster_poll").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = coordinator(dir.path(), "a", db.postgres_url(), "");
    let deaf = coordinator(
        dir.path(),
        "deaf",
        db.postgres_url(),
        "listen = false\npoll_interval = \"500ms\"",
    );
    let api_a = ApiClient::new(a.url());
    let on_deaf = agent(deaf.url(), "agent-deaf", "deaf", dir.path());
    wait_online(&api_a, "agent-deaf", Duration::from_secs(10)).await;

    let id = api_a
        .submit(&job("polled", "deaf", "true"))
        .await
        .unwrap()
        .id;
    let done = wait_job(&api_a, id, Duration::from_secs(10)).await;
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    assert_eq!(done.tasks[0].agent.as_deref(), Some("agent-deaf"));

    let id = api_a
        .submit(&job("long", "deaf", "sleep 120"))
        .await
        .unwrap()
        .id;
    assert_eq!(wait_running(&api_a, id).await, "agent-deaf");
    api_a.cancel(id).await.unwrap();
    let started = Instant::now();
    let id = api_a
        .submit(&job("after", "deaf", "true"))
        .await
        .unwrap()
        .id;
    let after = wait_job(&api_a, id, Duration::from_secs(30)).await;
    assert_eq!(after.state, JobState::Passed, "{after:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deaf coordinator's agent was still busy {:?} after the cancel",
        started.elapsed()
    );

    on_deaf.stop().await;
    drop((a, deaf));
    db.remove().await.unwrap();
}

/// An agent whose coordinator is killed goes to the other with its running
/// attempt, which that one takes over and renews: the attempt (longer than
/// two leases of 3 s) ends once, passed, with no second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_with_its_running_attempt_when_its_coordinator_is_killed() {
    let Some(db) = ScratchPg::create_named("tf_cluster_move").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = coordinator(dir.path(), "a", db.postgres_url(), "");
    let b = coordinator(dir.path(), "b", db.postgres_url(), "");
    let api_a = ApiClient::new(a.url());
    let api_b = ApiClient::new(b.url());
    let mover = agent_failing_over(&[b.url(), a.url()], "mover", "m", dir.path());
    wait_online(&api_b, "mover", Duration::from_secs(10)).await;
    let id = api_b
        .submit(&job("long", "m", "sleep 8 && echo finished"))
        .await
        .unwrap()
        .id;
    assert_eq!(wait_running(&api_b, id).await, "mover");
    drop(b); // SIGKILL
    let killed = Instant::now();
    let done = wait_job(&api_a, id, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    let task = api_a.task(done.tasks[0].id).await.unwrap();
    assert_eq!(
        task.attempts_list.len(),
        1,
        "the attempt was given up and run again: {task:#?}"
    );
    // The agent works on for A afterwards.
    let id = api_a.submit(&job("next", "m", "true")).await.unwrap().id;
    let next = wait_job(&api_a, id, Duration::from_secs(10)).await;
    assert_eq!(next.state, JobState::Passed, "{next:#?}");
    eprintln!("moved and finished {:?} after the kill", killed.elapsed());
    mover.stop().await;
    drop(a);
    db.remove().await.unwrap();
}

/// A TCP proxy on loopback that sends each connection to the first of
/// `backends` that accepts it (a load balancer's health check, crudely).
async fn tcp_proxy(backends: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backends = backends.clone();
            tokio::spawn(async move {
                for backend in &backends {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// An agent that knows one URL, a TCP proxy's in front of two coordinators:
/// when the coordinator behind it is killed, it reconnects to the same URL,
/// reaches the other, and works on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_behind_a_tcp_proxy_reaches_the_other_coordinator_after_a_kill() {
    let Some(db) = ScratchPg::create_named("tf_cluster_proxy").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = coordinator(dir.path(), "a", db.postgres_url(), "");
    let b = coordinator(dir.path(), "b", db.postgres_url(), "");
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let proxy = tcp_proxy(vec![host(a.url()), host(b.url())]).await;
    let api_b = ApiClient::new(b.url());
    let proxied = agent(&proxy, "proxied", "p", dir.path());
    wait_online(&api_b, "proxied", Duration::from_secs(10)).await;
    let id = api_b.submit(&job("first", "p", "true")).await.unwrap().id;
    let first = wait_job(&api_b, id, Duration::from_secs(10)).await;
    assert_eq!(first.state, JobState::Passed, "{first:#?}");

    drop(a); // SIGKILL of the coordinator behind the proxy
    let killed = Instant::now();
    let id = api_b.submit(&job("second", "p", "true")).await.unwrap().id;
    let second = wait_job(&api_b, id, Duration::from_secs(20)).await;
    assert_eq!(second.state, JobState::Passed, "{second:#?}");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "the agent worked again only {:?} after the kill",
        killed.elapsed()
    );
    proxied.stop().await;
    drop(b);
    db.remove().await.unwrap();
}
