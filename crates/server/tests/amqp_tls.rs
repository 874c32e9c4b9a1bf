//! The AMQP consumer and publisher over `amqps://` (TLS), on the real
//! RabbitMQ of 127.0.0.1:5672: the broker has no TLS listener (and the
//! system's broker is not ours to reconfigure), so a TLS-terminating proxy
//! in the test (rustls, a self-signed certificate for `127.0.0.1` and
//! `localhost` made with the openssl CLI) forwards each connection to it.
//! With the certificate as `ca_file` messages published by the real
//! fedora-messaging library become jobs and a finished job is published
//! back, all through the proxy; without it the consumer refuses the
//! certificate, queues nothing and logs why on every retry.

#[path = "amqp/common.rs"]
mod common;
#[path = "amqp/logs.rs"]
mod logs;

use logs::{capture_logs, logged};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{BUILD_TOPIC, Fm, Running, Vhost};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use testfleet_client::ApiClient;
use testfleet_server::triggers::amqp::{AmqpConfig, PublishConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A self-signed server certificate for `IP:127.0.0.1` and `DNS:localhost`
/// (cert, key) in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=testfleet-amqp-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // A server certificate, not a CA: rustls refuses a CA used as an end entity.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (`cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// What the proxy saw.
#[derive(Default)]
struct ProxyCounts {
    /// TCP connections accepted.
    accepted: AtomicU64,
    /// TLS handshakes completed (then forwarded to the broker).
    handshakes: AtomicU64,
    /// TLS handshakes that failed (the client refused the certificate).
    refused: AtomicU64,
}

/// A TLS-terminating proxy on a loopback port in front of the plain broker.
struct TlsProxy {
    addr: SocketAddr,
    counts: Arc<ProxyCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(cert: &Path, key: &Path) -> TlsProxy {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(ProxyCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, c) = (acceptor.clone(), c.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            c.refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    c.handshakes.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                });
            }
        });
        TlsProxy { addr, counts, task }
    }

    /// `amqps://guest:guest@127.0.0.1:<proxy port>/<vhost>`.
    fn url(&self, vhost: &Vhost) -> String {
        format!(
            "amqps://guest:guest@127.0.0.1:{}/{}",
            self.addr.port(),
            vhost.name
        )
    }

    fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    fn handshakes(&self) -> u64 {
        self.counts.handshakes.load(Ordering::SeqCst)
    }

    fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn build_messages(prefix: &str, n: usize) -> Vec<(String, serde_json::Value, Option<String>)> {
    (0..n)
        .map(|i| {
            (
                BUILD_TOPIC.to_owned(),
                json!({"name": format!("{prefix}-{i}")}),
                Some(format!("{prefix}-{i}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_the_ca_file_consumes_and_publishes_back_through_tls() {
    let Some(vhost) = Vhost::create("tls") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let fm = Arc::new(fm);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let proxy = TlsProxy::start(&cert, &key).await;

    // A reader of the finished-job messages, over TLS through the proxy too.
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: Some(std::fs::read_to_string(&cert).unwrap()),
    };
    let reader = lapin::Connection::connect_with_config(
        &proxy.url(&vhost),
        lapin::ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
    .expect("a lapin client trusting the certificate connects through the proxy");
    let channel = reader.create_channel().await.unwrap();
    channel
        .queue_declare(
            "watcher".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            "watcher".into(),
            "amq.topic".into(),
            "testfleet.job.finished".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut finished = channel
        .basic_consume(
            "watcher".into(),
            "tls-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(proxy.handshakes(), 1, "the reader's connection");

    let mut amqp = AmqpConfig::new(proxy.url(&vhost));
    amqp.ca_file = Some(cert.clone());
    let mut publish = PublishConfig::new();
    publish.settle = Duration::from_millis(100);
    publish.poll_interval = Duration::from_millis(50);
    amqp.publish = Some(publish);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let running = Running::start(&data, amqp, |_| {}).await;
    running.connected().await;

    // Published to the plain broker by fedora-messaging; consumed over TLS.
    let n = 10;
    let p = fm.clone();
    tokio::task::spawn_blocking(move || p.publish(&build_messages("tls", n)))
        .await
        .unwrap();
    running
        .until("every message queued", Duration::from_secs(30), |s| {
            s.queued == n as u64
        })
        .await;
    let api = ApiClient::new(&running.url);
    let jobs = api.jobs(100, None).await.unwrap();
    assert_eq!(jobs.len(), n);
    let mut names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    names.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("rpmlint-tls-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    running
        .until("the queue is empty", Duration::from_secs(10), |_| {
            vhost.ready("testfleet") == Some(0)
        })
        .await;

    // One job finished: published back over TLS, read over TLS.
    let job = jobs[0].clone();
    api.cancel(job.id).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(20), finished.next())
        .await
        .expect("a finished-job message within 20 s")
        .expect("the reader's consumer is open")
        .unwrap();
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["id"], job.id);
    assert_eq!(body["state"], "cancelled");
    assert_eq!(delivery.routing_key.as_str(), "testfleet.job.finished");

    // The reader, the consumer and the publisher: every connection was TLS.
    assert!(proxy.handshakes() >= 3, "{} handshakes", proxy.handshakes());
    assert_eq!(proxy.refused(), 0);
    assert_eq!(proxy.accepted(), proxy.handshakes());
    running.stop().await;
    let _ = reader.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_without_the_ca_file_refuses_a_self_signed_broker_and_says_why() {
    capture_logs();
    let Some(vhost) = Vhost::create("tls-untrusted") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let fm = Arc::new(fm);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let proxy = TlsProxy::start(&cert, &key).await;
    let port = format!(":{}/", proxy.addr.port());

    // Messages wait in the queue the consumer would read (declared by
    // fedora-messaging on the plain broker).
    let p = fm.clone();
    tokio::task::spawn_blocking(move || {
        p.declare("testfleet", "org.fedoraproject.#");
        p.publish(&build_messages("untrusted", 3));
    })
    .await
    .unwrap();

    let mut amqp = AmqpConfig::new(proxy.url(&vhost));
    amqp.retry_initial = Duration::from_millis(100);
    amqp.retry_max = Duration::from_millis(800);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let running = Running::start(&data, amqp, |_| {}).await;

    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let s = running.amqp.stats();
        assert_eq!((s.sessions, s.received, s.queued), (0, 0, 0), "{s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api = ApiClient::new(&running.url);
    assert!(api.jobs(100, None).await.unwrap().is_empty());
    assert_eq!(vhost.ready("testfleet"), Some(3), "nothing was consumed");

    // It tried, over TLS, more than once (backoff), and the client refused.
    assert!(proxy.accepted() >= 2, "{} connections", proxy.accepted());
    assert_eq!(proxy.handshakes(), 0);
    assert!(proxy.refused() >= 2, "{} refused", proxy.refused());
    let lines = logged(&port);
    assert!(lines.len() >= 2, "one warning per retry: {lines:#?}");
    for line in &lines {
        assert!(
            line.contains("UnknownIssuer"),
            "the cause is logged: {line}"
        );
        assert!(line.contains("retry_in="), "with its backoff: {line}");
        assert!(!line.contains("guest:guest"), "password hidden: {line}");
    }
    eprintln!("logged: {}", lines[0]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_accepts_but_never_answers_is_given_up_on_and_tried_again() {
    capture_logs();
    // Accepts connections and keeps them open without a word (a broker
    // starting up, or wedged).
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });

    let mut amqp = AmqpConfig::new(format!("amqp://guest:guest@127.0.0.1:{port}/silent"));
    amqp.retry_initial = Duration::from_millis(100);
    amqp.retry_max = Duration::from_millis(200);
    amqp.open_timeout = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), amqp, |_| {}).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the consumer waits on its first connection: {} accepted",
            accepted.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running.amqp.stats().sessions, 0);
    let lines = logged(&format!("127.0.0.1:{port}"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("did not open a consuming session within 500ms")),
        "the reason is logged: {lines:#?}"
    );
    running.stop().await;
    holder.abort();
}
