//! A small socket.io v5 (Engine.IO v4) client over the websocket transport only.
//!
//! Built for the testfleet agent: it reports namespace rejections (`connect_error`) as a
//! typed [`ConnectError::Rejected`] at connect time, never reconnects on its own (the caller
//! owns backoff; [`Client::connect`] can simply be called again), and needs no OpenSSL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use testfleet_sio::{Client, ConnectOptions, Incoming};
//! let opts = ConnectOptions::default().with_auth(serde_json::json!({"secret": "s3cr3t"}));
//! let (client, mut events) = Client::connect("http://127.0.0.1:8080", opts).await?;
//! client.emit_no_args("fetchWork").await?;
//! while let Some(incoming) = events.recv().await {
//!     match incoming {
//!         Incoming::Event { name, args, ack } => {
//!             println!("{name}: {args:?}");
//!             if let Some(ack) = ack {
//!                 ack.send(vec![serde_json::json!("ok")]).await?;
//!             }
//!         }
//!         Incoming::Disconnected { reason } => println!("disconnected: {reason}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod driver;
mod endpoint;
mod error;
mod packet;
pub mod tls;

pub use client::{AckHandle, Client, ConnectOptions, DisconnectReason, EventStream, Incoming};
pub use error::{AckError, ConnectError, EmitError};
