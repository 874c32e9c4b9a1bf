//! Error types of the client. Messages are lowercase fragments meant to follow "failed to".

use std::time::Duration;

use serde_json::Value;

/// Why [`Client::connect`](crate::Client::connect) did not produce a connected client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server URL could not be turned into a socket.io websocket endpoint.
    #[error("parse server url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The TCP connection or the websocket upgrade failed.
    #[error("open websocket to {url}: {source}")]
    WebSocket {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },

    /// A handshake step did not complete in time.
    #[error("complete handshake: timed out after {after:?} waiting for {step}")]
    Timeout { step: &'static str, after: Duration },

    /// The server refused the namespace connection (socket.io `connect_error`), e.g. bad auth.
    #[error("join namespace: rejected by server: {message}")]
    Rejected {
        message: String,
        data: Option<Value>,
    },

    /// The server spoke something that is not Engine.IO v4 / Socket.IO v5.
    #[error("complete handshake: {0}")]
    Protocol(String),

    /// The connection went away before the handshake finished.
    #[error("complete handshake: connection closed by server")]
    Closed,
}

/// Why an event could not be queued for sending.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The payload could not be serialized to JSON.
    #[error("encode event payload: {0}")]
    Encode(#[from] serde_json::Error),

    /// The connection is gone (disconnected, or the writer task stopped).
    #[error("send on a closed connection")]
    Closed,
}

/// Why [`Client::emit_with_ack`](crate::Client::emit_with_ack) got no acknowledgement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The event itself could not be sent.
    #[error(transparent)]
    Emit(#[from] EmitError),

    /// The server did not acknowledge within the given time.
    #[error("receive ack: timed out after {0:?}")]
    Timeout(Duration),

    /// The connection closed while waiting for the acknowledgement.
    #[error("receive ack: connection closed")]
    Disconnected,
}
