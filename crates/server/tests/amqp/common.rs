//! Scaffolding shared by the AMQP tests: a RabbitMQ vhost of the test's
//! own, the real `fedora-messaging` library as publisher and consumer
//! (driven through a small Python script), trigger rules, and an
//! in-process coordinator whose AMQP handle the test keeps.

#![allow(dead_code, reason = "each test binary uses a part of it")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testfleet_server::triggers::amqp::{AmqpConfig, AmqpHandle};
use testfleet_server::triggers::load_rules;
use testfleet_server::{Coordinator, Server, ServerConfig};
use testfleet_testkit::peers::{Peer, peer_python, require_peer};
use testfleet_testkit::process::{CommandError, output_of};
use tokio::sync::watch;

/// RabbitMQ on loopback with `rabbitmqctl` (we run as root).
pub const RABBITMQ: Peer = Peer {
    name: "RabbitMQ on 127.0.0.1:5672 (guest/guest) and rabbitmqctl",
    install: "`apt-get install rabbitmq-server` and start it (`rabbitmq-server -detached`); `cargo xtask setup` starts an installed one",
};

/// The topic the rules below turn into a job.
pub const BUILD_TOPIC: &str = "org.fedoraproject.prod.buildsys.build.state.change";

pub const RULES: &str = r#"
[[rule]]
name = "rpmlint"
when = { source = "amqp", topic = "org.fedoraproject.*.buildsys.build.state.change" }
[[rule.do]]
template = "rpmlint.toml"
vars = { item = "{{body.name}}" }
"#;

pub const TEMPLATE: &str = r#"name = "rpmlint-{{item}}"
[[task]]
name = "rpmlint"
steps = [{ stage = "test", run = "rpmlint {{item}}" }]
"#;

/// The fedora-messaging side: `publish` through `fedora_messaging.api`,
/// `raw` (a misbehaving publisher: a body that is not JSON, through pika),
/// `declare` (a durable queue bound to a topic) and `get` (one message
/// read back with `fedora_messaging.message.get_message`).
const PEER: &str = r#"
import json, sys, time
from fedora_messaging import config

mode = sys.argv[1]

def channel():
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(config.conf["amqp_url"]))
    return conn, conn.channel()

if mode == "publish":
    from fedora_messaging import api, message
    n = 0
    for line in sys.stdin:
        item = json.loads(line)
        m = message.Message(topic=item["topic"], body=item["body"])
        if item.get("id"):
            m.id = item["id"]
        api.publish(m)
        n += 1
    print(n)
elif mode == "raw":
    import pika
    conn, ch = channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange="amq.topic", routing_key=sys.argv[2], body=sys.argv[3].encode(),
                     properties=pika.BasicProperties(message_id=sys.argv[4], delivery_mode=2))
    conn.close()
elif mode == "declare":
    conn, ch = channel()
    ch.queue_declare(queue=sys.argv[2], durable=True)
    ch.queue_bind(queue=sys.argv[2], exchange="amq.topic", routing_key=sys.argv[3])
    conn.close()
elif mode == "get":
    from fedora_messaging import message
    conn, ch = channel()
    deadline = time.time() + float(sys.argv[3])
    while time.time() < deadline:
        method, props, body = ch.basic_get(queue=sys.argv[2], auto_ack=True)
        if method is not None:
            msg = message.get_message(method.routing_key, props, body)
            msg.validate()
            print(json.dumps({"topic": msg.topic, "id": msg.id, "severity": msg.severity,
                              "schema": props.headers.get("fedora_messaging_schema"),
                              "content_type": props.content_type,
                              "delivery_mode": props.delivery_mode, "body": msg.body}))
            break
        time.sleep(0.1)
    conn.close()
"#;

/// A vhost of the test's own, deleted on drop.
pub struct Vhost {
    pub name: String,
}

fn rabbitmqctl(args: &[&str]) -> Result<String, CommandError> {
    output_of(Command::new("rabbitmqctl").args(args))
}

impl Vhost {
    /// A fresh vhost `tf-<tag>-<pid>-<time>` where guest may do anything;
    /// `None` (the peer rule) without RabbitMQ.
    pub fn create(tag: &str) -> Option<Vhost> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("tf-{tag}-{}-{nanos}", std::process::id());
        let made = rabbitmqctl(&["add_vhost", &name]).and_then(|_| {
            rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])
        });
        require_peer(&RABBITMQ, made)?;
        Some(Vhost { name })
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// `queue`'s messages ready, unacknowledged and its consumers, as
    /// `rabbitmqctl list_queues` prints them (for a failing test's message).
    pub fn describe(&self, queue: &str) -> String {
        rabbitmqctl(&[
            "list_queues",
            "-p",
            &self.name,
            "-q",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ])
        .map_or_else(
            |e| format!("rabbitmqctl list_queues failed: {e}"),
            |out| {
                out.lines()
                    .find(|l| l.split_whitespace().next() == Some(queue))
                    .map_or_else(
                        || format!("no queue {queue}"),
                        |l| format!("name ready unacked consumers: {l}"),
                    )
            },
        )
    }

    /// Messages ready in `queue` (`rabbitmqctl list_queues`).
    pub fn ready(&self, queue: &str) -> Option<u64> {
        let out = rabbitmqctl(&["list_queues", "-p", &self.name, "-q", "name", "messages"]).ok()?;
        out.lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next()? == queue).then(|| parts.next()?.parse().ok())?
        })
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// How long one call of the fedora-messaging peer may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// The fedora-messaging peer: its config file points at the vhost.
pub struct Fm {
    python: PathBuf,
    script: PathBuf,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fm {
    /// `None` (the peer rule) without the Python peers.
    pub fn new(vhost: &Vhost) -> Option<Fm> {
        let python = peer_python()?;
        let check = Command::new(&python)
            .args(["-c", "import fedora_messaging"])
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err("fedora-messaging is not installed in the peers' venv".to_owned())
                }
            });
        require_peer(&testfleet_testkit::peers::PYTHON_PEERS, check)?;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fm_peer.py");
        std::fs::write(&script, PEER).unwrap();
        let conf = dir.path().join("fedora-messaging.toml");
        std::fs::write(
            &conf,
            format!(
                "amqp_url = \"{}\"\npublish_exchange = \"amq.topic\"\n",
                vhost.url()
            ),
        )
        .unwrap();
        Some(Fm {
            python,
            script,
            conf,
            _dir: dir,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(args)
            .env("FEDORA_MESSAGING_CONF", &self.conf);
        cmd
    }

    fn try_run(&self, args: &[&str], input: &str) -> Result<String, String> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let input = input.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        // A peer stuck on a broker that went away (or blocked it) is
        // killed and its call fails, as a publisher's timeout would.
        let pid = child.id().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(PEER_TIMEOUT) {
            Ok(out) => out.map_err(|e| e.to_string())?,
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid]).status();
                let _ = writer.join();
                return Err(format!(
                    "fedora-messaging peer {args:?} did not finish in {PEER_TIMEOUT:?}"
                ));
            }
        };
        let _ = writer.join();
        if !out.status.success() {
            return Err(format!(
                "fedora-messaging peer {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&self, args: &[&str], input: &str) -> String {
        self.try_run(args, input).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Publishes through `fedora_messaging.api.publish`, one message per
    /// `(topic, body, message id)`; blocking (run it off the runtime).
    pub fn publish(&self, messages: &[(String, serde_json::Value, Option<String>)]) {
        if let Err(e) = self.try_publish(messages) {
            panic!("{e}");
        }
    }

    /// As [`Fm::publish`], saying why it failed (a broker restarting).
    pub fn try_publish(
        &self,
        messages: &[(String, serde_json::Value, Option<String>)],
    ) -> Result<(), String> {
        let lines: String = messages
            .iter()
            .map(|(topic, body, id)| {
                serde_json::json!({"topic": topic, "body": body, "id": id}).to_string() + "\n"
            })
            .collect();
        let out = self.try_run(&["publish"], &lines)?;
        if out.trim() != messages.len().to_string() {
            return Err(format!("published {} of {}", out.trim(), messages.len()));
        }
        Ok(())
    }

    /// Publishes `body` as is (not JSON) with pika.
    pub fn publish_raw(&self, topic: &str, body: &str, id: &str) {
        self.run(&["raw", topic, body, id], "");
    }

    /// A durable queue bound to `topic` on `amq.topic`.
    pub fn declare(&self, queue: &str, topic: &str) {
        self.run(&["declare", queue, topic], "");
    }

    /// One message of `queue` as fedora-messaging reads it.
    pub fn get(&self, queue: &str, timeout: Duration) -> Option<serde_json::Value> {
        let out = self.run(&["get", queue, &timeout.as_secs_f64().to_string()], "");
        let line = out.lines().next()?;
        Some(serde_json::from_str(line).unwrap())
    }
}

/// Writes the rules and their template into `dir`; returns the rules file.
pub fn write_rules(dir: &Path) -> PathBuf {
    let rules = dir.join("fedora.toml");
    std::fs::write(&rules, RULES).unwrap();
    std::fs::write(dir.join("rpmlint.toml"), TEMPLATE).unwrap();
    rules
}

/// An in-process coordinator with its AMQP handle.
pub struct Running {
    pub coordinator: Arc<Coordinator>,
    pub amqp: AmqpHandle,
    pub url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a coordinator on `data_dir` consuming from `amqp`.
    pub async fn start(
        data_dir: &Path,
        amqp: AmqpConfig,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ServerConfig::new(addr, data_dir.to_owned());
        config.allow_any_agent = true;
        let rules = load_rules(&write_rules(data_dir)).unwrap();
        config.trigger_rules = Some(Arc::new(rules));
        config.amqp = Some(amqp);
        configure(&mut config);
        let mut server = Server::build(config).await.unwrap();
        let amqp = server.amqp.take().expect("the AMQP consumer started");
        let coordinator = server.coordinator.clone();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = server
                .serve(listener, async move {
                    let _ = stopped.wait_for(|v| *v).await;
                })
                .await;
        });
        Running {
            coordinator,
            amqp,
            url: format!("http://{addr}"),
            stop,
            task,
        }
    }

    /// Until the consumer is connected (queue declared and bound).
    pub async fn connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.amqp.stats().sessions == 0 {
            assert!(Instant::now() < deadline, "the consumer did not connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Until `done` answers true of the stats (at most `timeout`).
    pub async fn until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&testfleet_server::triggers::amqp::StatsSnapshot) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.amqp.stats();
            if done(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out until {what}: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.amqp.abort();
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
