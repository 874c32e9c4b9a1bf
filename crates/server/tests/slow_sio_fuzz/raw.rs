//! A raw engine.io websocket and what it saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What one raw connection saw.
#[derive(Default, Debug)]
pub(crate) struct Seen {
    pub(crate) opened: bool,
    pub(crate) connected: bool,
    pub(crate) connect_error: Option<String>,
    pub(crate) errors: Vec<String>,
    pub(crate) acks: Vec<String>,
    /// The attempt of a `sendWork` received.
    pub(crate) work: Option<i64>,
    pub(crate) closed: bool,
}

/// A raw engine.io websocket: a writer fed through a channel (the reader
/// answers pings through it too) and a reader recording what arrives.
pub(crate) struct Raw {
    pub(crate) out: mpsc::UnboundedSender<Message>,
    pub(crate) seen: Arc<Mutex<Seen>>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Raw {
    pub(crate) async fn open(ws_url: &str) -> Option<Raw> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(ws_url),
        )
        .await
        .ok()?
        .ok()?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let sent = tokio::time::timeout(Duration::from_secs(5), sink.send(m)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        });
        let (pong, s) = (out.clone(), seen.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let t = t.as_str();
                let mut seen = s.lock().unwrap();
                if t == "2" {
                    let _ = pong.send(Message::Text("3".into()));
                } else if t.starts_with('0') {
                    seen.opened = true;
                } else if t.starts_with("40") {
                    seen.connected = true;
                } else if t.starts_with("44") {
                    seen.connect_error = Some(t.to_owned());
                } else if t.starts_with("42[\"error\"") {
                    seen.errors.push(t.to_owned());
                } else if t.starts_with("43") {
                    seen.acks.push(t.to_owned());
                } else if t.starts_with("42[\"sendWork\"") {
                    seen.work = serde_json::from_str::<Value>(&t[2..])
                        .ok()
                        .and_then(|v| v[1]["attemptId"].as_i64());
                }
            }
            s.lock().unwrap().closed = true;
        });
        let raw = Raw {
            out,
            seen,
            tasks: vec![writer, reader],
        };
        raw.wait(Duration::from_secs(5), |s| s.opened || s.closed)
            .await;
        Some(raw)
    }

    pub(crate) fn send(&self, m: Message) {
        let _ = self.out.send(m);
    }

    /// Waits until `done` holds (true) or `limit` passes (false).
    pub(crate) async fn wait(&self, limit: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.seen.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn close(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

pub(crate) fn connect_packet(auth: &Value) -> Message {
    Message::Text(format!("40{auth}").into())
}
