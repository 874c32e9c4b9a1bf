//! The AMQP consumer and publisher end to end, on the real RabbitMQ of
//! 127.0.0.1:5672 (a vhost per test), with messages published by the real
//! `fedora-messaging` library through `fedora_messaging.api.publish`:
//! every message becomes one job, a message id seen before queues nothing,
//! a body that is not JSON is recorded as dropped, a topic no rule wants is
//! recorded as ignored, and a finished job is published back and read by
//! fedora-messaging's own `get_message`.

#[path = "amqp/common.rs"]
mod common;

use std::time::Duration;

use common::{BUILD_TOPIC, Fm, Running, Vhost};
use serde_json::json;
use testfleet_client::ApiClient;
use testfleet_server::triggers::amqp::{AmqpConfig, PublishConfig};
use testfleet_store::EventFilter;
use testfleet_wire::events::EventOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedora_messages_become_jobs_once_and_the_rest_is_recorded() {
    let Some(vhost) = Vhost::create("consume") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), AmqpConfig::new(vhost.url()), |_| {}).await;
    running.connected().await;

    let n = 20;
    let mut messages: Vec<(String, serde_json::Value, Option<String>)> = (0..n)
        .map(|i| {
            (
                BUILD_TOPIC.to_owned(),
                json!({"name": format!("pkg-{i}"), "build_id": i}),
                Some(format!("msg-{i}")),
            )
        })
        .collect();
    // The same message id again (a publisher's retry): nothing more queued.
    messages.push((
        BUILD_TOPIC.to_owned(),
        json!({"name": "pkg-3", "build_id": 3}),
        Some("msg-3".to_owned()),
    ));
    // A topic the queue is bound to but no rule wants.
    messages.push((
        "org.fedoraproject.prod.fedora_elections.candidate.new".to_owned(),
        json!({"candidate": "x"}),
        Some("other-1".to_owned()),
    ));
    // A matching topic whose body lacks what the template needs.
    messages.push((
        BUILD_TOPIC.to_owned(),
        json!({"build_id": 99}),
        Some("no-name".to_owned()),
    ));
    let fm = std::sync::Arc::new(fm);
    let publisher = fm.clone();
    tokio::task::spawn_blocking(move || {
        publisher.publish(&messages);
        publisher.publish_raw(BUILD_TOPIC, "this is not json", "raw-1");
    })
    .await
    .unwrap();

    running
        .until("every message is handled", Duration::from_secs(30), |s| {
            s.queued + s.duplicates + s.ignored + s.dropped >= n + 4
        })
        .await;
    let stats = running.amqp.stats();
    assert_eq!(
        (stats.queued, stats.duplicates, stats.ignored, stats.dropped),
        (n, 1, 1, 2),
        "{stats:?}"
    );
    assert_eq!(stats.store_errors, 0);
    // Acknowledged after the commit: nothing is left in the queue.
    running
        .until("the queue is empty", Duration::from_secs(10), |_| {
            vhost.ready("testfleet") == Some(0)
        })
        .await;

    let api = ApiClient::new(&running.url);
    let jobs = api.jobs(100, None).await.unwrap();
    assert_eq!(jobs.len(), usize::try_from(n).unwrap());
    let mut names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    names.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("rpmlint-pkg-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);

    let events = running
        .coordinator
        .views()
        .events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), usize::try_from(n + 4).unwrap());
    let of = |outcome| events.iter().filter(move |e| e.outcome == outcome);
    assert_eq!(
        of(EventOutcome::Queued).count(),
        usize::try_from(n).unwrap()
    );
    for e in of(EventOutcome::Queued) {
        assert_eq!((e.source.as_str(), e.topic.as_str()), ("amqp", BUILD_TOPIC));
        assert_eq!(e.kind, "base.message", "fedora-messaging's schema header");
        assert_eq!(e.job_ids.len(), 1);
        assert!(e.delivery_id.as_deref().unwrap().starts_with("msg-"));
    }
    let dup: Vec<_> = of(EventOutcome::Duplicate).collect();
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].delivery_id.as_deref(), Some("msg-3"));
    assert_eq!(dup[0].job_ids.len(), 1, "names the first delivery's job");
    let ignored: Vec<_> = of(EventOutcome::Ignored).collect();
    assert_eq!(ignored.len(), 1);
    assert!(
        ignored[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no rule matches amqp topic `org.fedoraproject.prod.fedora_elections"),
        "{:?}",
        ignored[0].reason
    );
    let dropped: Vec<_> = of(EventOutcome::Dropped).collect();
    assert_eq!(dropped.len(), 2);
    let raw = dropped
        .iter()
        .find(|e| e.delivery_id.as_deref() == Some("raw-1"))
        .expect("the non-JSON message is recorded");
    assert!(
        raw.reason
            .as_deref()
            .unwrap()
            .starts_with("the body is not JSON"),
        "{:?}",
        raw.reason
    );
    let no_name = dropped
        .iter()
        .find(|e| e.delivery_id.as_deref() == Some("no-name"))
        .expect("the unrenderable message is recorded");
    assert!(
        no_name.reason.as_deref().unwrap().contains("body.name"),
        "{:?}",
        no_name.reason
    );
    let p99 = stats.p99.unwrap();
    eprintln!(
        "AMQP received → committed over {} messages: p50 {:?}, p99 {p99:?}",
        stats.received, stats.p50
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_does_not_queue_a_message_twice() {
    let Some(vhost) = Vhost::create("restart") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let fm = std::sync::Arc::new(fm);
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), AmqpConfig::new(vhost.url()), |_| {}).await;
    running.connected().await;
    let first: Vec<_> = (0..5)
        .map(|i| {
            (
                BUILD_TOPIC.to_owned(),
                json!({"name": format!("a-{i}")}),
                Some(format!("r-{i}")),
            )
        })
        .collect();
    let p = fm.clone();
    let again = first.clone();
    tokio::task::spawn_blocking(move || p.publish(&first))
        .await
        .unwrap();
    running
        .until("five jobs", Duration::from_secs(20), |s| s.queued == 5)
        .await;
    running.stop().await;

    // The same messages again while the coordinator is down (a publisher
    // retrying), then it starts on the same store and queue.
    let p = fm.clone();
    tokio::task::spawn_blocking(move || p.publish(&again))
        .await
        .unwrap();
    let running = Running::start(dir.path(), AmqpConfig::new(vhost.url()), |_| {}).await;
    running
        .until("five duplicates", Duration::from_secs(20), |s| {
            s.duplicates == 5
        })
        .await;
    assert_eq!(running.amqp.stats().queued, 0);
    let api = ApiClient::new(&running.url);
    assert_eq!(api.jobs(100, None).await.unwrap().len(), 5);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_published_back_for_fedora_messaging_consumers() {
    let Some(vhost) = Vhost::create("publish") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let fm = std::sync::Arc::new(fm);
    let p = fm.clone();
    tokio::task::spawn_blocking(move || p.declare("watcher", "testfleet.job.finished"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut amqp = AmqpConfig::new(vhost.url());
    let mut publish = PublishConfig::new();
    publish.settle = Duration::from_millis(100);
    publish.poll_interval = Duration::from_millis(50);
    publish.public_url = Some("https://testfleet.example/".into());
    amqp.publish = Some(publish);
    let running = Running::start(dir.path(), amqp, |_| {}).await;
    running.connected().await;

    let p = fm.clone();
    tokio::task::spawn_blocking(move || {
        p.publish(&[(
            BUILD_TOPIC.to_owned(),
            json!({"name": "bash"}),
            Some("b-1".to_owned()),
        )])
    })
    .await
    .unwrap();
    running
        .until("one job", Duration::from_secs(20), |s| s.queued == 1)
        .await;
    let api = ApiClient::new(&running.url);
    let job = api.jobs(10, None).await.unwrap().remove(0);
    // Finish it (no agent runs it here): cancelled is a finished state.
    api.cancel(job.id).await.unwrap();

    let p = fm.clone();
    let got = tokio::task::spawn_blocking(move || p.get("watcher", Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("a finished-job message within 20 s");
    assert_eq!(got["topic"], "testfleet.job.finished");
    assert_eq!(got["severity"], 20);
    assert_eq!(got["schema"], "base.message");
    assert_eq!(got["content_type"], "application/json");
    assert_eq!(got["delivery_mode"], 2);
    assert!(
        got["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("testfleet-job-{}-", job.id)),
        "{got}"
    );
    let body = &got["body"];
    assert_eq!(body["id"], job.id);
    assert_eq!(body["name"], "rpmlint-bash");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["tasks"]["total"], 1);
    assert_eq!(body["tasks"]["cancelled"], 1);
    assert_eq!(
        body["links"]["dashboard"],
        format!("https://testfleet.example/jobs/{}", job.id)
    );
    assert_eq!(
        body["links"]["junit"],
        format!(
            "https://testfleet.example/api/v1/jobs/{}/report?format=junit",
            job.id
        )
    );

    // A restart resumes after the cursor: the job is not published again.
    running.stop().await;
    let mut amqp = AmqpConfig::new(vhost.url());
    let mut publish = PublishConfig::new();
    publish.settle = Duration::from_millis(100);
    publish.poll_interval = Duration::from_millis(50);
    amqp.publish = Some(publish);
    let running = Running::start(dir.path(), amqp, |_| {}).await;
    running.connected().await;
    let p = fm.clone();
    let again = tokio::task::spawn_blocking(move || p.get("watcher", Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(again, None, "published once");
    running.stop().await;
}
