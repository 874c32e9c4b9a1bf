//! The public handle types: options, the cloneable [`Client`], incoming events and acks.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::driver::{self, Command, Shared};
use crate::error::{AckError, ConnectError, EmitError};
use crate::packet::{SioKind, encode_sio, event_payload};

/// How to connect. Built with [`Default`] plus the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Socket.IO namespace to join, `/` by default.
    pub namespace: String,
    /// Engine.IO endpoint path on the server, `/socket.io/` by default.
    pub path: String,
    /// Sent as the auth payload of the namespace CONNECT packet.
    pub auth: Option<Value>,
    /// Limit for each handshake step (websocket upgrade, OPEN, namespace CONNECT).
    pub handshake_timeout: Duration,
    /// Capacity of the outgoing queue and of the [`EventStream`].
    pub buffer: usize,
    /// TLS settings for `https`/`wss` URLs; the system's roots when `None`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            namespace: "/".into(),
            path: "/socket.io/".into(),
            auth: None,
            handshake_timeout: Duration::from_secs(10),
            buffer: 256,
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// Uses this TLS configuration (e.g. [`crate::tls::client_config`] with a private CA).
    pub fn with_tls(mut self, tls: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Joins `namespace` instead of `/` (a missing leading `/` is added).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        let ns = namespace.into();
        self.namespace = if ns.starts_with('/') {
            ns
        } else {
            format!("/{ns}")
        };
        self
    }

    /// Uses another Engine.IO path than `/socket.io/`.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sends `auth` in the CONNECT packet (read by the server's connect handler/middleware).
    pub fn with_auth(mut self, auth: Value) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Sets the per-step handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the queue capacity (at least 1).
    pub fn with_buffer(mut self, buffer: usize) -> Self {
        self.buffer = buffer.max(1);
        self
    }
}

/// Something the server sent, in arrival order.
#[derive(Debug)]
pub enum Incoming {
    /// A server emit; `ack` is set when the server waits for an acknowledgement.
    Event {
        name: String,
        args: Vec<Value>,
        ack: Option<AckHandle>,
    },
    /// The connection ended. Always the last item; the stream ends right after it.
    Disconnected { reason: DisconnectReason },
}

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server left our namespace (socket.io DISCONNECT packet).
    ServerDisconnect,
    /// The server closed the Engine.IO session (CLOSE packet).
    EngineClose,
    /// The websocket was closed by the peer or hit end of stream; holds the close frame if any.
    ConnectionClosed(Option<String>),
    /// Nothing arrived within pingInterval + pingTimeout: the server or network is dead.
    PingTimeout(Duration),
    /// Reading from the websocket failed.
    TransportError(String),
    /// [`Client::disconnect`] was called or the last [`Client`] was dropped.
    ClientDisconnect,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServerDisconnect => f.write_str("server disconnected the client"),
            Self::EngineClose => f.write_str("server closed the session"),
            Self::ConnectionClosed(None) => f.write_str("connection closed by server"),
            Self::ConnectionClosed(Some(frame)) => {
                write!(f, "connection closed by server ({frame})")
            }
            Self::PingTimeout(after) => write!(f, "no heartbeat from server for {after:?}"),
            Self::TransportError(e) => write!(f, "transport error: {e}"),
            Self::ClientDisconnect => f.write_str("client disconnected"),
        }
    }
}

/// Answers one server `emit_with_ack`. Dropping it without [`send`](Self::send) sends nothing.
#[derive(Debug)]
pub struct AckHandle {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) namespace: Arc<str>,
    pub(crate) id: u64,
}

impl AckHandle {
    /// The packet id the server is waiting on.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends `43<id>[...args]`.
    pub async fn send(self, args: Vec<Value>) -> Result<(), EmitError> {
        let payload = Value::Array(args).to_string();
        let frame = encode_sio(SioKind::Ack, &self.namespace, Some(self.id), &payload);
        self.tx
            .send(Command::Send(frame))
            .await
            .map_err(|_| EmitError::Closed)
    }
}

/// Incoming events; use [`recv`](Self::recv) or it as a [`futures_util::Stream`].
///
/// The reader task waits when this is full, so drain it promptly: a stalled consumer also
/// stalls heartbeat answers and the server will eventually drop the connection.
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: mpsc::Receiver<Incoming>,
}

impl EventStream {
    /// Next item, or `None` after [`Incoming::Disconnected`] has been delivered.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for EventStream {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.rx.poll_recv(cx)
    }
}

/// A connected socket.io client. Cheap to clone; all clones share one connection.
///
/// Dropping the last clone disconnects, as [`disconnect`](Self::disconnect) would.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) namespace: Arc<str>,
    pub(crate) sid: String,
    pub(crate) next_ack_id: AtomicU64,
    pub(crate) tasks: [AbortHandle; 2],
    pub(crate) disconnect_requested: AtomicBool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.inner.namespace)
            .field("sid", &self.inner.sid)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Client {
    /// Connects to `url` (`http`, `https`, `ws` or `wss`; no path) and joins the namespace.
    ///
    /// Returns once the server accepted the namespace CONNECT; a `connect_error` from the
    /// server becomes [`ConnectError::Rejected`]. There is no automatic reconnect: call this
    /// again (with your own backoff) after [`Incoming::Disconnected`].
    pub async fn connect(
        url: &str,
        opts: ConnectOptions,
    ) -> Result<(Client, EventStream), ConnectError> {
        let (inner, events) = driver::connect(url, opts).await?;
        Ok((
            Client {
                inner: Arc::new(inner),
            },
            events,
        ))
    }

    /// The socket.io session id the server assigned in this namespace.
    pub fn sid(&self) -> &str {
        &self.inner.sid
    }

    /// The namespace this client joined.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// False once the connection has ended for any reason.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::SeqCst)
    }

    /// Emits `event` with one argument; data serializing to JSON `null` (e.g. `()` or `None`)
    /// sends no argument at all, like python-socketio does for `data=None`.
    pub async fn emit(&self, event: &str, data: impl Serialize) -> Result<(), EmitError> {
        let args = single_arg(data)?;
        self.emit_args(event, args).await
    }

    /// Emits `event` without arguments (`42["event"]`).
    pub async fn emit_no_args(&self, event: &str) -> Result<(), EmitError> {
        self.emit_args(event, Vec::new()).await
    }

    /// Emits `event` with exactly these arguments (for handlers taking several).
    pub async fn emit_args(&self, event: &str, args: Vec<Value>) -> Result<(), EmitError> {
        let frame = encode_sio(
            SioKind::Event,
            &self.inner.namespace,
            None,
            &event_payload(event, args),
        );
        self.send(frame).await
    }

    /// Emits `event` (argument rules as [`emit`](Self::emit)) and waits for the server's ack.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: impl Serialize,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        let args = single_arg(data)?;
        self.emit_with_ack_args(event, args, timeout).await
    }

    /// Emits `event` with exactly these arguments and waits for the server's ack.
    pub async fn emit_with_ack_args(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        let id = self.inner.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_sio(
            SioKind::Event,
            &self.inner.namespace,
            Some(id),
            &event_payload(event, args),
        );
        let shared = &self.inner.shared;
        let (reply_tx, reply_rx) = oneshot::channel();
        shared.pending().insert(id, reply_tx);
        // The reader clears `pending` after marking the connection dead; checking afterwards
        // closes the race where our entry would be inserted after that sweep and never answered.
        if !self.is_connected() {
            shared.pending().remove(&id);
            return Err(AckError::Disconnected);
        }
        if let Err(e) = self.send(frame).await {
            shared.pending().remove(&id);
            return Err(e.into());
        }
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                shared.pending().remove(&id);
                Err(AckError::Timeout(timeout))
            }
        }
    }

    /// Leaves the namespace (`41`) and closes the websocket, so the server sees a clean
    /// client-side disconnect. The event stream then ends with [`DisconnectReason::ClientDisconnect`].
    pub async fn disconnect(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        let Some(cmd) = self.inner.farewell(Some(done_tx)) else {
            return;
        };
        if self.inner.tx.send(cmd).await.is_ok() {
            // Only waits for our frames to be flushed; on a dead socket the write fails fast
            // or the reader's heartbeat check ends the connection and the writer with it.
            let _ = done_rx.await;
        }
    }

    async fn send(&self, frame: String) -> Result<(), EmitError> {
        if !self.is_connected() {
            return Err(EmitError::Closed);
        }
        self.inner
            .tx
            .send(Command::Send(frame))
            .await
            .map_err(|_| EmitError::Closed)
    }
}

impl Inner {
    /// The close command, or `None` if a disconnect already happened or was requested.
    fn farewell(&self, done: Option<oneshot::Sender<()>>) -> Option<Command> {
        if self.disconnect_requested.swap(true, Ordering::SeqCst)
            || !self.shared.connected.load(Ordering::SeqCst)
        {
            return None;
        }
        // Lets the reader report the coming close as ours rather than as a server close.
        self.shared.closing.store(true, Ordering::SeqCst);
        let farewell = encode_sio(SioKind::Disconnect, &self.namespace, None, "");
        Some(Command::Close { farewell, done })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without this the reader (which answers pings) would keep an unused connection alive.
        let Some(cmd) = self.farewell(None) else {
            return;
        };
        if self.tx.try_send(cmd).is_err() {
            // Queue full and we cannot wait in drop: tear the tasks down instead (the event
            // stream then ends without a Disconnected item).
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

/// Turns one payload into the argument list, mapping JSON `null` to "no argument".
fn single_arg(data: impl Serialize) -> Result<Vec<Value>, EmitError> {
    Ok(match serde_json::to_value(data)? {
        Value::Null => Vec::new(),
        value => vec![value],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_payload_means_no_argument() {
        assert!(single_arg(()).unwrap().is_empty());
        assert!(single_arg(None::<u8>).unwrap().is_empty());
        assert_eq!(single_arg(json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(single_arg([1, 2]).unwrap(), vec![json!([1, 2])]);
    }

    #[test]
    fn namespace_gets_leading_slash() {
        assert_eq!(
            ConnectOptions::default().with_namespace("x").namespace,
            "/x"
        );
        assert_eq!(
            ConnectOptions::default().with_namespace("/y").namespace,
            "/y"
        );
    }
}
