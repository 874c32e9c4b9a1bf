//! Autoscaling: the configured hook is called with the wanted agent count
//! per label set for a scripted queue, not again within the cool-down, and
//! `GET /api/v1/autoscale` shows the same decisions.

use std::path::Path;
use std::time::{Duration, Instant};

use testfleet_server::autoscale::{AutoscaleConfig, Policy};
use testfleet_testkit::server::TestServer;
use testfleet_wire::scale::ScalePlan;

/// A hook that appends `labels wanted current <stdin JSON>` to `log`.
fn hook(dir: &Path, log: &Path) -> Vec<String> {
    let script = dir.join("scale.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $2 $TESTFLEET_SCALE_CURRENT $(cat)\" >> '{}'\n",
            log.display()
        ),
    )
    .expect("script");
    vec!["/bin/sh".into(), script.display().to_string()]
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_calls(log: &Path, n: usize, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    loop {
        let c = calls(log);
        if c.len() >= n {
            return c;
        }
        assert!(
            Instant::now() < end,
            "{n} hook calls within {within:?}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bench_tasks(n: usize) -> String {
    let mut job = String::from("name = \"bench\"\n");
    for i in 0..n {
        job.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\nrequires = {{ pool = \"bench\" }}\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_gets_the_wanted_count_per_label_set_with_a_cooldown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("calls.log");
    let hook = hook(dir.path(), &log);
    let cooldown = Duration::from_millis(1500);
    let h = TestServer::start(dir.path(), |c| {
        c.allow_any_agent = true;
        c.autoscale = AutoscaleConfig {
            hook: Some(hook),
            interval: Duration::from_millis(100),
            cooldown,
            hook_timeout: Duration::from_secs(5),
            policy: Policy {
                min_idle: 1,
                max_agents: 10,
            },
        };
    })
    .await;
    // Nothing waits, no agent: nothing to ask for.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(calls(&log).is_empty(), "{:?}", calls(&log));

    h.api.submit(&bench_tasks(3)).await.expect("submit");
    let first = wait_calls(&log, 1, Duration::from_secs(5)).await;
    let called = Instant::now();
    assert!(
        first[0].starts_with("pool=bench 4 0 {"),
        "3 waiting + 1 spare, none connected: {first:?}"
    );
    assert!(first[0].contains("\"waiting\":3"), "{first:?}");

    // More work within the cool-down: no second call until it ends.
    h.api.submit(&bench_tasks(2)).await.expect("submit");
    let plan: ScalePlan = reqwest::get(format!("{}/api/v1/autoscale", h.url))
        .await
        .expect("get")
        .json()
        .await
        .expect("plan");
    assert!(plan.hook_configured);
    let d = plan
        .decisions
        .iter()
        .find(|d| d.labels == "pool=bench")
        .expect("decision");
    assert_eq!((d.waiting, d.wanted, d.current), (5, 6, 0), "{plan:#?}");
    assert!(
        !d.call_hook && d.cooldown_left_seconds > 0,
        "in its cool-down: {plan:#?}"
    );
    let second = wait_calls(&log, 2, Duration::from_secs(5)).await;
    let gap = called.elapsed();
    assert!(
        gap >= cooldown - Duration::from_millis(150),
        "the second call came {gap:?} after the first"
    );
    assert!(second[1].starts_with("pool=bench 6 0 {"), "{second:?}");
    // The wanted count stays the same: the hook is called again only after
    // each cool-down (a provisioner that has not caught up yet).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls(&log).len(), 2, "{:?}", calls(&log));
    h.stop().await;
}
