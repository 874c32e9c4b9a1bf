//! A plain socket.io agent (the test plays the agent, event by event)
//! against a coordinator.

use std::time::Duration;

use serde_json::{Value, json};
use testfleet_sio::{Client, ConnectOptions, EventStream, Incoming};

/// The handshake `auth` of an agent `hostname` with `secret`.
pub fn agent_auth(hostname: &str, secret: &str) -> Value {
    json!({"clientType": "agent", "hostname": hostname, "secret": secret})
}

/// Connects with `auth`, reports `idle` and asks for work, as an agent does
/// after connecting.
pub async fn idle_agent(url: &str, auth: Value) -> (Client, EventStream) {
    let (client, events) = Client::connect(url, ConnectOptions::default().with_auth(auth))
        .await
        .unwrap_or_else(|e| panic!("the agent failed to connect to {url}: {e}"));
    client
        .emit("statusUpdate", json!({"status": "idle"}))
        .await
        .unwrap_or_else(|e| panic!("failed to send statusUpdate: {e}"));
    client
        .emit_no_args("fetchWork")
        .await
        .unwrap_or_else(|e| panic!("failed to send fetchWork: {e}"));
    (client, events)
}

/// The first argument of the next event `name` (10 s at most), skipping
/// other events.
pub async fn next_event(events: &mut EventStream, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event within 10 s"))
            .unwrap_or_else(|| panic!("the event stream ended before `{name}`"));
        if let Incoming::Event { name: n, args, .. } = event
            && n == name
        {
            return args.into_iter().next().unwrap_or(Value::Null);
        }
    }
}
