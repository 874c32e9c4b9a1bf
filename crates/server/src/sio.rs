//! The socket.io endpoint: handshake checks, then one ordered event queue per
//! agent connection.
//!
//! socketioxide runs every handler as its own task, so two events of one agent
//! could be handled out of order (`done` after the next `fetchWork`). Each
//! handler therefore only pushes the event, synchronously and in arrival
//! order, into the connection's channel; one task per connection applies them
//! in order.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use testfleet_core::labels::LabelSet;
use testfleet_wire::protocol::{
    AttemptReport, HandshakeAuth, LogChunk, MachineInfo, StatusUpdate, events,
};
use tokio::sync::mpsc;

use crate::coordinator::Coordinator;

/// Browsers join this room to receive `agentData` pushes.
pub const BROWSERS_ROOM: &str = "browsers";

/// How many events of one agent may wait to be applied.
const AGENT_QUEUE: usize = 1024;

/// socket.io keeps each connection's request head (headers, URI and
/// extensions) for the connection's life. hyper's header values and URI are
/// slices of the connection's read buffer, so keeping them kept that whole
/// buffer: 16 KB per connected agent. Copies of the values and of the URI
/// (axum's `OriginalUri` extension included), made before socket.io sees the
/// request, let the buffer go.
pub async fn own_request_head(mut req: axum::extract::Request) -> axum::extract::Request {
    if req.uri().path().starts_with("/socket.io") {
        for value in req.headers_mut().values_mut() {
            if let Ok(mut own) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
                own.set_sensitive(value.is_sensitive());
                *value = own;
            }
        }
        if let Ok(uri) = req.uri().to_string().parse::<axum::http::Uri>() {
            // The router keeps a copy of the URI too, for `OriginalUri`.
            if let Some(original) = req.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
                original.0 = uri.clone();
            }
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Who is on the other end of a socket, decided at the handshake.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per connection, built once at the handshake"
)]
enum Client {
    Agent {
        hostname: String,
        labels: LabelSet,
        machine: Option<MachineInfo>,
    },
    Browser,
}

/// A refused handshake; the message reaches the client as `connect_error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Why a handshake's `auth` payload is refused.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("missing auth payload: expected {{clientType, hostname, secret}}")]
    MissingAuth,
    #[error("malformed auth payload: {0}")]
    MalformedAuth(#[source] serde_json::Error),
    #[error("missing hostname in auth payload")]
    MissingHostname,
    #[error("invalid hostname in auth payload")]
    InvalidHostname,
    #[error("unsupported clientType `{0}` (expected `agent` or `browser`)")]
    UnsupportedClientType(String),
    #[error("missing clientType in auth payload (expected `agent` or `browser`)")]
    MissingClientType,
}

/// Why a browser may not read (its handshake is refused).
#[derive(Debug, thiserror::Error)]
enum BrowserRefused {
    #[error(
        "reads are closed: a browser needs a login, a token (`token` in its auth payload) or an allowed address"
    )]
    ReadsClosed,
    #[error("a browser's credentials were refused")]
    Credentials(#[source] crate::auth::AuthError),
}

/// Why an agent's event was not applied (the agent gets it as an `error` event).
#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("missing event payload")]
    Missing,
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Decoded straight from the packet's text (no intermediate JSON tree:
    /// a report may carry 10,000 test cases).
    #[error("malformed {what}: {source}")]
    Undecodable {
        what: &'static str,
        #[source]
        source: socketioxide::ParserError,
    },
}

/// One event of an agent, queued for its connection's task. The payloads
/// are boxed: the queue allocates its slots in blocks of 32 per connection,
/// and inline payloads made that block 12 KB of every connected agent.
enum AgentEvent {
    Status(Box<Result<StatusUpdate, EventError>>),
    Fetch,
    Query,
    Mock,
    Log(Box<Result<LogChunk, EventError>>),
    Report(Box<Result<AttemptReport, EventError>>, AckSender),
}

pub fn register(io: &SocketIo, coordinator: Arc<Coordinator>) {
    let c = coordinator.clone();
    io.ns(
        "/",
        (move |socket: SocketRef, Extension(client): Extension<Client>| {
            on_connect(socket, client, c.clone())
        })
        .with(move |socket: SocketRef, auth: TryData<Value>| {
            check_handshake(socket, auth, coordinator.clone())
        }),
    );
}

async fn check_handshake(
    socket: SocketRef,
    auth: TryData<Value>,
    coordinator: Arc<Coordinator>,
) -> Result<(), Refused> {
    let peer = socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let refuse = |reason: String| {
        tracing::warn!(?peer, "refused socket.io handshake: {reason}");
        Refused(reason)
    };
    let auth = auth.0.ok();
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (client, secret) = classify(auth).map_err(|e| refuse(e.to_string()))?;
    if matches!(client, Client::Browser)
        && !coordinator.config.auth.read_open
        && let Err(e) = browser_may_read(&socket, &coordinator, token, peer).await
    {
        let mut reason = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            reason.push_str(&format!(": {source}"));
        }
        return Err(refuse(reason));
    }
    if let Client::Agent { hostname, .. } = &client
        && let Err(reason) = crate::auth::check_agent_secret(&coordinator, hostname, secret).await
    {
        if let Some(ip) = peer {
            // Guessing secrets is slowed down like guessing passwords.
            tokio::time::sleep(coordinator.auth.failed(ip.ip())).await;
        }
        return Err(refuse(reason.to_string()));
    }
    // Handlers go on before the CONNECT answer, for agents and browsers
    // alike: a client may send its first event as soon as it sees that
    // answer, and socketioxide drops events that have no handler yet.
    match client {
        Client::Agent { .. } => {
            let rx = register_agent_handlers(&socket);
            socket
                .extensions
                .insert(PendingEvents(Arc::new(std::sync::Mutex::new(Some(rx)))));
        }
        Client::Browser => register_browser_handlers(&socket, coordinator.clone()),
    }
    socket.extensions.insert(client);
    Ok(())
}

/// With reads closed, a browser client follows the REST API's read
/// policy: its WebSocket upgrade's `Authorization` header (HTTP
/// authentication the browser holds for the page), a `token` in its
/// handshake payload, or an allowed address.
async fn browser_may_read(
    socket: &SocketRef,
    coordinator: &Coordinator,
    token: Option<String>,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), BrowserRefused> {
    let parts = socket.req_parts();
    let mut headers = parts.headers.clone();
    if let Some(token) = token
        && let Ok(value) = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(axum::http::header::AUTHORIZATION, value);
    }
    match crate::auth::identify(
        coordinator,
        &parts.method,
        &parts.uri,
        &headers,
        peer.map(|p| p.ip()),
    )
    .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(BrowserRefused::ReadsClosed),
        Err(e) => {
            if let Some(ip) = peer {
                tokio::time::sleep(coordinator.auth.failed(ip.ip())).await;
            }
            Err(BrowserRefused::Credentials(e))
        }
    }
}

/// Decides who connects (and the secret to check), or why not.
fn classify(auth: Option<Value>) -> Result<(Client, Option<String>), HandshakeError> {
    let auth: HandshakeAuth = match auth {
        None | Some(Value::Null) => return Err(HandshakeError::MissingAuth),
        Some(v) => serde_json::from_value(v).map_err(HandshakeError::MalformedAuth)?,
    };
    match auth.client_type.as_deref() {
        Some("agent") => {
            let hostname = auth.hostname.as_deref().map(str::trim).unwrap_or_default();
            if hostname.is_empty() {
                return Err(HandshakeError::MissingHostname);
            }
            if hostname.len() > 255 || hostname.chars().any(|c| c.is_control() || c == '/') {
                return Err(HandshakeError::InvalidHostname);
            }
            let client = Client::Agent {
                hostname: hostname.to_owned(),
                labels: auth.labels.unwrap_or_default(),
                machine: auth.machine,
            };
            Ok((client, auth.secret))
        }
        Some("browser") => Ok((Client::Browser, None)),
        Some(other) => Err(HandshakeError::UnsupportedClientType(other.to_owned())),
        None => Err(HandshakeError::MissingClientType),
    }
}

async fn on_connect(socket: SocketRef, client: Client, coordinator: Arc<Coordinator>) {
    match client {
        Client::Agent {
            hostname,
            labels,
            machine,
        } => on_agent(socket, hostname, labels, machine, coordinator).await,
        Client::Browser => on_browser(socket, coordinator),
    }
}

fn on_browser(socket: SocketRef, coordinator: Arc<Coordinator>) {
    socket.join(BROWSERS_ROOM);
    coordinator
        .browsers
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let c = coordinator.clone();
    socket.on_disconnect(move || {
        c.browsers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        async {}
    });
}

/// Registers a browser's request handlers (during the handshake; see
/// [`check_handshake`]).
fn register_browser_handlers(socket: &SocketRef, coordinator: Arc<Coordinator>) {
    let c = coordinator.clone();
    socket.on(events::GET_AGENTS, move |socket: SocketRef| {
        let c = c.clone();
        async move {
            let data = c.agent_data().await;
            let _ = socket.emit(events::AGENT_DATA, &data);
        }
    });
    socket.on(events::GET_WORK_LOG, move |socket: SocketRef| {
        let c = coordinator.clone();
        async move {
            match c.views().work_log(500).await {
                Ok(log) => {
                    let _ = socket.emit(events::WORK_LOG_DATA, &log);
                }
                Err(e) => {
                    let _ =
                        socket.emit(events::ERROR, &format!("failed to read the work log: {e}"));
                }
            }
        }
    });
}

/// The receiving end of an agent connection's event queue, handed from the
/// handshake (where the handlers are registered) to the connect handler.
#[derive(Clone)]
struct PendingEvents(Arc<std::sync::Mutex<Option<mpsc::Receiver<AgentEvent>>>>);

/// Registers the agent's event handlers during the handshake: the client may
/// send events as soon as it sees the CONNECT answer, before the connect
/// handler runs, and socketioxide drops events that have no handler yet.
fn register_agent_handlers(socket: &SocketRef) -> mpsc::Receiver<AgentEvent> {
    let (tx, rx) = mpsc::channel::<AgentEvent>(AGENT_QUEUE);

    // Each handler only enqueues, synchronously, so order is kept.
    fn push(tx: &mpsc::Sender<AgentEvent>, socket: &SocketRef, event: AgentEvent) {
        if tx.try_send(event).is_err() {
            let _ = socket.emit(events::ERROR, "too many unprocessed events; slow down");
        }
    }
    let t = tx.clone();
    socket.on(
        events::STATUS_UPDATE,
        move |socket: SocketRef, data: TryData<Value>| {
            let event = AgentEvent::Status(Box::new(decode_optional(data.0.ok())));
            push(&t, &socket, event);
            async {}
        },
    );
    let t = tx.clone();
    socket.on(events::FETCH_WORK, move |socket: SocketRef| {
        push(&t, &socket, AgentEvent::Fetch);
        async {}
    });
    let t = tx.clone();
    socket.on(events::QUERY_WORK, move |socket: SocketRef| {
        push(&t, &socket, AgentEvent::Query);
        async {}
    });
    let t = tx.clone();
    socket.on(events::MOCK_ITEM, move |socket: SocketRef| {
        push(&t, &socket, AgentEvent::Mock);
        async {}
    });
    let t = tx.clone();
    socket.on(
        events::LOG_CHUNK,
        move |socket: SocketRef, data: TryData<Value>| {
            push(&t, &socket, AgentEvent::Log(Box::new(decode(data.0.ok()))));
            async {}
        },
    );
    let t = tx.clone();
    socket.on(
        events::ATTEMPT_REPORT,
        move |socket: SocketRef, data: TryData<AttemptReport>, ack: AckSender| {
            let report = data.0.map_err(|source| EventError::Undecodable {
                what: "AttemptReport",
                source,
            });
            push(&t, &socket, AgentEvent::Report(Box::new(report), ack));
            async {}
        },
    );
    socket.on_fallback(
        |socket: SocketRef, socketioxide::extract::Event(name): socketioxide::extract::Event| {
            tracing::debug!("unknown event `{name}`");
            let _ = socket.emit(events::ERROR, &format!("unknown event `{name}`"));
            async {}
        },
    );

    rx
}

async fn on_agent(
    socket: SocketRef,
    hostname: String,
    labels: LabelSet,
    machine: Option<MachineInfo>,
    coordinator: Arc<Coordinator>,
) {
    let pending = socket
        .extensions
        .get::<PendingEvents>()
        .and_then(|p| p.0.lock().ok()?.take());
    let Some(rx) = pending else {
        tracing::error!(agent = %hostname, "agent connected without its event queue");
        let _ = socket.disconnect();
        return;
    };
    let connection = coordinator
        .agent_connected(&hostname, labels, machine, socket.clone())
        .await;
    let c = coordinator.clone();
    let host = hostname.clone();
    // The socket's handlers hold the queue's senders and the event task
    // holds the socket, so the queue never closes by itself: the end of
    // the connection tells the task to finish what was queued and stop.
    let gone = Arc::new(tokio::sync::Notify::new());
    let ended = gone.clone();
    socket.on_disconnect(move |reason: DisconnectReason| {
        let c = c.clone();
        let host = host.clone();
        ended.notify_one();
        async move {
            // A client that closes its namespace on purpose is shutting down;
            // anything else is a lost connection, covered by the lease.
            let shutdown = matches!(reason, DisconnectReason::ClientNSDisconnect);
            c.agent_disconnected(&host, connection, shutdown).await;
        }
    });
    tokio::spawn(run_agent_events(
        coordinator,
        socket,
        hostname,
        connection,
        rx,
        gone,
    ));
}

async fn run_agent_events(
    coordinator: Arc<Coordinator>,
    socket: SocketRef,
    hostname: String,
    connection: u64,
    mut rx: mpsc::Receiver<AgentEvent>,
    gone: Arc<tokio::sync::Notify>,
) {
    let dev = coordinator.config.dev;
    let _alive = coordinator.metrics.event_queue_opened();
    let mut closed = false;
    loop {
        let event = if closed {
            rx.recv().await
        } else {
            tokio::select! {
                biased;
                event = rx.recv() => event,
                () = gone.notified() => {
                    // What the agent sent before it left is still applied.
                    rx.close();
                    closed = true;
                    continue;
                }
            }
        };
        let Some(event) = event else { break };
        // Boxed: applying an event is a large future, and the loop waits
        // idle most of its life; unboxed, every connected agent's task
        // kept room for the largest of them (11.5 KB, heaptrack).
        Box::pin(apply_event(
            &coordinator,
            &socket,
            &hostname,
            connection,
            dev,
            event,
        ))
        .await;
    }
}

/// Applies one event of an agent.
async fn apply_event(
    coordinator: &Coordinator,
    socket: &SocketRef,
    hostname: &str,
    connection: u64,
    dev: bool,
    event: AgentEvent,
) {
    match event {
        AgentEvent::Status(update) => match *update {
            Ok(update) => {
                coordinator
                    .status_update(hostname, connection, update)
                    .await
            }
            Err(e) => malformed(socket, hostname, &e),
        },
        AgentEvent::Fetch => coordinator.fetch_work(hostname, connection).await,
        AgentEvent::Query | AgentEvent::Mock if !dev => {
            let _ = socket.emit(
                events::ERROR,
                "queryWork and mockItem are only available in dev mode (start the server with --dev)",
            );
        }
        AgentEvent::Query => {
            let item = coordinator.query_work(hostname).await;
            let _ = socket.emit(events::SEND_WORK, &item);
        }
        AgentEvent::Mock => {
            if let Err(e) = coordinator.mock_item(hostname).await {
                let _ = socket.emit(events::ERROR, &format!("failed to queue a mock item: {e}"));
            }
        }
        AgentEvent::Log(chunk) => match *chunk {
            Ok(chunk) => coordinator.log_chunk(hostname, chunk).await,
            Err(e) => malformed(socket, hostname, &e),
        },
        AgentEvent::Report(report, ack) => {
            let answer = match *report {
                Ok(report) => match coordinator.attempt_report(hostname, report).await {
                    Ok(()) => serde_json::json!({"ok": true}),
                    Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
                },
                Err(e) => {
                    // Answered both ways: the ack if one was asked for,
                    // and the `error` event every malformed event gets.
                    malformed(socket, hostname, &e);
                    serde_json::json!({"ok": false, "error": e.to_string()})
                }
            };
            let _ = ack.send(&answer);
        }
    }
}

/// Tells the agent its event was malformed.
fn malformed(socket: &SocketRef, hostname: &str, e: &EventError) {
    tracing::warn!(agent = %hostname, "malformed event: {e}");
    let _ = socket.emit(events::ERROR, &e.to_string());
}

/// A status update may be `{}`, missing or `null` (idle).
fn decode_optional(v: Option<Value>) -> Result<StatusUpdate, EventError> {
    match v {
        None | Some(Value::Null) => Ok(StatusUpdate::default()),
        Some(v) => serde_json::from_value(v).map_err(|source| EventError::Malformed {
            what: "statusUpdate",
            source,
        }),
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Option<Value>) -> Result<T, EventError> {
    let v = v.ok_or(EventError::Missing)?;
    serde_json::from_value(v).map_err(|source| EventError::Malformed {
        what: std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("payload"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::extract::{OriginalUri, Request};
    use axum::http::{HeaderValue, Uri};

    /// A connection's read buffer, which hyper's request head shares.
    struct ReadBuffer {
        bytes: Vec<u8>,
        freed: Arc<AtomicBool>,
    }

    impl AsRef<[u8]> for ReadBuffer {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl Drop for ReadBuffer {
        fn drop(&mut self) {
            self.freed.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_socketio_request_head_lets_the_read_buffer_go() {
        let path = "/socket.io/?EIO=4&transport=websocket";
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let freed = Arc::new(AtomicBool::new(false));
        let buffer = bytes::Bytes::from_owner(ReadBuffer {
            bytes: format!("{path}{key}").into_bytes(),
            freed: freed.clone(),
        });
        // As hyper and axum's router hand the request on: slices of the buffer.
        let uri = Uri::from_maybe_shared(buffer.slice(..path.len())).expect("uri");
        let value = HeaderValue::from_maybe_shared(buffer.slice(path.len()..)).expect("value");
        let mut req = Request::new(axum::body::Body::empty());
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert("sec-websocket-key", value);
        req.extensions_mut().insert(OriginalUri(uri));
        drop(buffer);
        assert!(!freed.load(Ordering::SeqCst));

        let kept = super::own_request_head(req).await;
        assert!(
            freed.load(Ordering::SeqCst),
            "the request socket.io keeps still holds the read buffer"
        );
        assert_eq!(kept.uri(), path);
        assert_eq!(kept.headers()["sec-websocket-key"], key);
        let original = kept
            .extensions()
            .get::<OriginalUri>()
            .expect("original uri");
        assert_eq!(original.0, path);
    }

    #[tokio::test]
    async fn other_requests_are_left_as_they_are() {
        let freed = Arc::new(AtomicBool::new(false));
        let buffer = bytes::Bytes::from_owner(ReadBuffer {
            bytes: b"/api/v1/jobs".to_vec(),
            freed: freed.clone(),
        });
        let mut req = Request::new(axum::body::Body::empty());
        *req.uri_mut() = Uri::from_maybe_shared(buffer.clone()).expect("uri");
        drop(buffer);
        let kept = super::own_request_head(req).await;
        assert!(
            !freed.load(Ordering::SeqCst),
            "a REST request is not copied"
        );
        assert_eq!(kept.uri(), "/api/v1/jobs");
    }
}
