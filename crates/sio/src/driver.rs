//! Connection plumbing: the handshake, then one writer task that owns the websocket sink and
//! one reader task that answers pings, dispatches packets and notices dead connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};
use tracing::{debug, trace, warn};

use crate::client::{AckHandle, ConnectOptions, DisconnectReason, EventStream, Incoming, Inner};
use crate::endpoint::websocket_url;
use crate::error::ConnectError;
use crate::packet::{
    EnginePacket, OpenPayload, PONG, SioKind, decode_args, decode_connect_error, decode_event,
    encode_sio, parse_engine, parse_sio,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Work for the writer task, the only place that writes to the socket.
#[derive(Debug)]
pub(crate) enum Command {
    Send(String),
    /// Send `farewell` (a namespace DISCONNECT), close the websocket, then stop.
    Close {
        farewell: String,
        done: Option<oneshot::Sender<()>>,
    },
}

/// State shared between the [`Client`](crate::Client) handles and the reader task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) connected: AtomicBool,
    /// Set when the client asked to disconnect, so the ensuing close is reported as ours.
    pub(crate) closing: AtomicBool,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>,
}

impl Shared {
    /// Outstanding `emit_with_ack` waiters by packet id.
    pub(crate) fn pending(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<Vec<Value>>>> {
        // The map stays consistent even if a holder panicked, so poisoning is not fatal.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the whole handshake and starts the connection tasks.
pub(crate) async fn connect(
    url: &str,
    opts: ConnectOptions,
) -> Result<(Inner, EventStream), ConnectError> {
    let endpoint = websocket_url(url, &opts.path)?;
    let limit = opts.handshake_timeout;
    let ws_error = |e| ConnectError::WebSocket {
        url: endpoint.to_string(),
        source: Box::new(e),
    };

    let connector = if endpoint.scheme() == "wss" {
        let tls = match opts.tls.clone() {
            Some(tls) => tls,
            None => crate::tls::client_config(None)
                .map_err(|e| ConnectError::Protocol(e.to_string()))?,
        };
        Some(Connector::Rustls(tls))
    } else {
        None
    };
    let (mut ws, _response) = timeout(
        limit,
        connect_async_tls_with_config(endpoint.as_str(), None, true, connector),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        step: "the websocket upgrade",
        after: limit,
    })?
    .map_err(ws_error)?;

    let open = read_open(&mut ws, limit).await?;
    debug!(engine_sid = %open.sid, ping_interval = open.ping_interval,
        ping_timeout = open.ping_timeout, "engine.io session open");

    let namespace: Arc<str> = opts.namespace.into();
    let auth = opts.auth.as_ref().map(Value::to_string).unwrap_or_default();
    let connect = encode_sio(SioKind::Connect, &namespace, None, &auth);
    ws.send(Message::text(connect)).await.map_err(ws_error)?;
    let sid = join_namespace(&mut ws, &namespace, limit).await?;
    debug!(%sid, %namespace, "joined namespace");

    let (sink, stream) = ws.split();
    let (cmd_tx, cmd_rx) = mpsc::channel(opts.buffer);
    let (event_tx, event_rx) = mpsc::channel(opts.buffer);
    let shared = Arc::new(Shared {
        connected: AtomicBool::new(true),
        closing: AtomicBool::new(false),
        pending: Mutex::new(HashMap::new()),
    });
    let writer = tokio::spawn(write_loop(sink, cmd_rx));
    let reader = Reader {
        stream,
        cmd_tx: cmd_tx.clone(),
        events: event_tx,
        shared: shared.clone(),
        namespace: namespace.clone(),
        // The v4 rule: the server pings every pingInterval and allows pingTimeout for the
        // answer, so silence for longer than their sum means the server is gone.
        idle_limit: Duration::from_millis(open.ping_interval.saturating_add(open.ping_timeout)),
        writer: writer.abort_handle(),
    };
    let reader = tokio::spawn(reader.run());

    let inner = Inner {
        tx: cmd_tx,
        shared,
        namespace,
        sid,
        next_ack_id: AtomicU64::new(0),
        tasks: [reader.abort_handle(), writer.abort_handle()],
        disconnect_requested: AtomicBool::new(false),
    };
    Ok((inner, EventStream { rx: event_rx }))
}

/// Waits for the Engine.IO OPEN packet, which the server sends first.
async fn read_open(ws: &mut Ws, limit: Duration) -> Result<OpenPayload, ConnectError> {
    let deadline = Instant::now() + limit;
    let text = next_text(ws, deadline, limit, "the engine.io open packet").await?;
    match parse_engine(&text) {
        Some(EnginePacket::Open(json)) => serde_json::from_str(json)
            .map_err(|e| ConnectError::Protocol(format!("bad open packet {json:?}: {e}"))),
        _ => Err(ConnectError::Protocol(format!(
            "expected an engine.io v4 open packet, got {:?}",
            preview(&text)
        ))),
    }
}

/// After our CONNECT, waits for the namespace CONNECT (accepted) or CONNECT_ERROR (rejected).
async fn join_namespace(
    ws: &mut Ws,
    namespace: &str,
    limit: Duration,
) -> Result<String, ConnectError> {
    #[derive(Deserialize)]
    struct Accepted {
        #[serde(default)]
        sid: String,
    }

    let deadline = Instant::now() + limit;
    loop {
        let text = next_text(ws, deadline, limit, "the namespace connect reply").await?;
        let message = match parse_engine(&text) {
            Some(EnginePacket::Message(message)) => message,
            // A slow auth check on the server may span a heartbeat.
            Some(EnginePacket::Ping) => {
                ws.send(Message::text(PONG))
                    .await
                    .map_err(|_| ConnectError::Closed)?;
                continue;
            }
            Some(EnginePacket::Close) => return Err(ConnectError::Closed),
            _ => {
                debug!(frame = %preview(&text), "ignoring frame during namespace handshake");
                continue;
            }
        };
        let packet = match parse_sio(message) {
            Ok(packet) if packet.namespace == namespace => packet,
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, "skipping malformed packet during handshake");
                continue;
            }
        };
        match packet.kind {
            SioKind::Connect => {
                // python-socketio and socketioxide both send `{"sid": ...}`; stay lenient.
                let accepted = serde_json::from_str::<Accepted>(packet.payload)
                    .map_or_else(|_| String::new(), |a| a.sid);
                return Ok(accepted);
            }
            SioKind::ConnectError => {
                let (message, data) = decode_connect_error(packet.payload);
                return Err(ConnectError::Rejected { message, data });
            }
            SioKind::Disconnect => return Err(ConnectError::Closed),
            kind => debug!(?kind, "ignoring packet before namespace connect"),
        }
    }
}

/// Next text frame before `deadline`, skipping control and binary frames.
async fn next_text(
    ws: &mut Ws,
    deadline: Instant,
    limit: Duration,
    step: &'static str,
) -> Result<String, ConnectError> {
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(ConnectError::Timeout { step, after: limit }),
            Ok(None | Some(Ok(Message::Close(_)))) => return Err(ConnectError::Closed),
            Ok(Some(Err(e))) => {
                return Err(ConnectError::Protocol(format!("websocket error: {e}")));
            }
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.as_str().to_owned()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Owns the write half; stops after a close command, a write error, or when all senders drop.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::Receiver<Command>) {
    while let Some(command) = rx.recv().await {
        match command {
            Command::Send(frame) => {
                if let Err(e) = sink.send(Message::text(frame)).await {
                    debug!(error = %e, "websocket write failed, writer stopping");
                    return;
                }
            }
            Command::Close { farewell, done } => {
                // DISCONNECT before the close frame so the server records a namespace
                // disconnect by the client, not a transport failure.
                if sink.send(Message::text(farewell)).await.is_ok() {
                    let _ = sink.close().await;
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
    let _ = sink.close().await;
}

/// Owns the read half and everything that reacts to incoming frames.
struct Reader {
    stream: SplitStream<Ws>,
    cmd_tx: mpsc::Sender<Command>,
    events: mpsc::Sender<Incoming>,
    shared: Arc<Shared>,
    namespace: Arc<str>,
    idle_limit: Duration,
    writer: tokio::task::AbortHandle,
}

impl Reader {
    async fn run(mut self) {
        let reason = self.read_until_disconnect().await;
        let reason = if self.shared.closing.load(Ordering::SeqCst) {
            DisconnectReason::ClientDisconnect
        } else {
            reason
        };
        // Nothing useful can be written anymore. After a client close the writer is normally
        // done already; if it is stuck on a dead socket this also releases `disconnect()`.
        self.writer.abort();
        self.shared.connected.store(false, Ordering::SeqCst);
        // Dropping the reply senders fails every waiting emit_with_ack with Disconnected.
        self.shared.pending().clear();
        debug!(%reason, "socket.io connection ended");
        let _ = self.events.send(Incoming::Disconnected { reason }).await;
    }

    async fn read_until_disconnect(&mut self) -> DisconnectReason {
        loop {
            let message = match timeout(self.idle_limit, self.stream.next()).await {
                Err(_) => return DisconnectReason::PingTimeout(self.idle_limit),
                Ok(None) => return DisconnectReason::ConnectionClosed(None),
                Ok(Some(Err(e))) => return DisconnectReason::TransportError(e.to_string()),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    if let Some(reason) = self.on_text(text.as_str()).await {
                        return reason;
                    }
                }
                Message::Binary(data) => {
                    debug!(
                        len = data.len(),
                        "skipping binary frame (attachments unsupported)"
                    );
                }
                Message::Close(frame) => {
                    let frame = frame.map(|f| format!("{} {}", f.code, f.reason));
                    return DisconnectReason::ConnectionClosed(frame);
                }
                // Websocket-level pings are answered by tungstenite itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<DisconnectReason> {
        match parse_engine(text) {
            Some(EnginePacket::Ping) => {
                // If the writer is gone the next read fails too, so the error is not lost.
                let _ = self.cmd_tx.send(Command::Send(PONG.to_owned())).await;
            }
            Some(EnginePacket::Message(message)) => return self.on_packet(message).await,
            Some(EnginePacket::Close) => return Some(DisconnectReason::EngineClose),
            Some(EnginePacket::Pong | EnginePacket::Open(_) | EnginePacket::Other) => {
                trace!(frame = %preview(text), "ignoring engine.io frame");
            }
            None => warn!(frame = %preview(text), "skipping malformed engine.io frame"),
        }
        None
    }

    async fn on_packet(&mut self, message: &str) -> Option<DisconnectReason> {
        let packet = match parse_sio(message) {
            Ok(packet) => packet,
            Err(e) => {
                warn!(error = %e, "skipping malformed socket.io packet");
                return None;
            }
        };
        if packet.namespace != &*self.namespace {
            debug!(
                namespace = packet.namespace,
                "skipping packet for another namespace"
            );
            return None;
        }
        match packet.kind {
            SioKind::Event => match decode_event(packet.payload) {
                Ok((name, args)) => {
                    let ack = packet.id.map(|id| AckHandle {
                        tx: self.cmd_tx.clone(),
                        namespace: self.namespace.clone(),
                        id,
                    });
                    // A dropped EventStream just means nobody listens; keep the connection.
                    let _ = self.events.send(Incoming::Event { name, args, ack }).await;
                }
                Err(e) => warn!(error = %e, "skipping malformed event"),
            },
            SioKind::Ack => {
                let Some(id) = packet.id else {
                    warn!("skipping ack without id");
                    return None;
                };
                match decode_args(packet.payload) {
                    Ok(args) => {
                        let waiter = self.shared.pending().remove(&id);
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.send(args);
                            }
                            None => debug!(id, "ack for unknown or timed-out id"),
                        }
                    }
                    Err(e) => warn!(id, error = %e, "skipping malformed ack"),
                }
            }
            SioKind::Disconnect => return Some(DisconnectReason::ServerDisconnect),
            SioKind::BinaryEvent | SioKind::BinaryAck => {
                warn!(kind = ?packet.kind, "skipping binary packet (attachments unsupported)");
            }
            SioKind::Connect | SioKind::ConnectError => {
                debug!(kind = ?packet.kind, "ignoring handshake packet after connect");
            }
        }
        None
    }
}

/// A log-safe prefix of an untrusted frame (peers may send huge or odd payloads).
fn preview(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(120)
        .map_or(text.len(), |(index, _)| index);
    &text[..end]
}
