//! Agents: a revoked secret, and malformed or oversized input.

use std::time::Duration;

use serde_json::json;
use testfleet_server::auth::hash_secret;
use testfleet_sio::{Client, ConnectError, ConnectOptions, Incoming};

use crate::callers::{Caller, request};
use crate::{JOB, start};

async fn connect(
    url: &str,
    host: &str,
    secret: &str,
) -> Result<(Client, testfleet_sio::EventStream), ConnectError> {
    let auth = json!({"clientType": "agent", "hostname": host, "secret": secret});
    Client::connect(url, ConnectOptions::default().with_auth(auth)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_revoked_secret_is_disconnected_and_cannot_fetch_work() {
    let h = start(|_| {}).await;
    let store = &h.store;
    store
        .put_agent_secret("bench1", &hash_secret("own-secret").unwrap(), 0)
        .await
        .unwrap();
    // Its own secret wins over the shared one.
    let err = connect(&h.url, "bench1", "shared")
        .await
        .err()
        .unwrap_or_else(|| panic!("shared secret refused for bench1"));
    assert!(
        matches!(&err, ConnectError::Rejected { message, .. } if message.contains("wrong secret")),
        "{err}"
    );
    let (client, mut events) = connect(&h.url, "bench1", "own-secret").await.unwrap();
    client
        .emit("statusUpdate", json!({"status": "idle"}))
        .await
        .unwrap();
    // The agent HTTP routes (inputs, artifacts) take the same secret; a blob
    // that is not there is a 404 once the agent is recognised.
    let http = reqwest::Client::new();
    let blob_status = || {
        let http = http.clone();
        let url = format!("{}/api/v1/agent/blobs/{}", h.url, "0".repeat(64));
        async move {
            http.get(url)
                .header("x-testfleet-host", "bench1")
                .header("x-testfleet-secret", "own-secret")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(blob_status().await, 404);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store.revoke_agent_secret("bench1", now + 1).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("not disconnected in time")
        {
            Some(Incoming::Disconnected { .. }) | None => break,
            Some(_) => continue,
        }
    }
    let err = connect(&h.url, "bench1", "own-secret")
        .await
        .err()
        .unwrap_or_else(|| panic!("a revoked secret is refused"));
    assert!(
        matches!(&err, ConnectError::Rejected { message, .. } if message.contains("revoked")),
        "{err}"
    );
    // The HTTP routes stop trusting their cached check as soon as the
    // revocation is noticed, not when the cache entry would have expired.
    assert_eq!(blob_status().await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_gets_clear_errors_and_the_server_keeps_serving() {
    let h = start(|c| {
        c.max_body_bytes = 64 * 1024;
        c.max_socket_payload = 64 * 1024;
    })
    .await;
    let http = reqwest::Client::new();
    // An oversized HTTP body.
    let big = "x".repeat(200 * 1024);
    let resp = request(
        &h,
        &http,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Caller::ValidToken,
    )
    .await
    .body(big)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // Malformed socket.io events get an `error` event.
    let (client, mut events) = connect(&h.url, "fuzz", "shared").await.unwrap();
    client
        .emit("statusUpdate", json!({"status": 42}))
        .await
        .unwrap();
    client
        .emit("tf:log", json!({"nonsense": true}))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut errors = 0;
    while errors < 1 {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap();
        if let Some(Incoming::Event { name, .. }) = event
            && name == "error"
        {
            errors += 1;
        }
    }
    // An oversized socket.io packet drops that connection only.
    let (big_client, _big_events) = connect(&h.url, "big", "shared").await.unwrap();
    let _ = big_client
        .emit(
            "statusUpdate",
            json!({"status": "idle", "detailMessage": "y".repeat(200 * 1024)}),
        )
        .await;
    // Others are still served.
    let resp = request(
        &h,
        &http,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Caller::ValidToken,
    )
    .await
    .body(JOB)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (_again, _) = connect(&h.url, "after", "shared").await.unwrap();
}
