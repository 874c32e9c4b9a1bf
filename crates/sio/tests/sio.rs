//! End-to-end tests of the client against a real socketioxide server, plus a scripted fake
//! server for conditions socketioxide will not produce (silence, binary and malformed frames).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason as ServerReason;
use socketioxide::{SocketIo, SocketIoBuilder};
use testfleet_sio::{
    AckError, Client, ConnectError, ConnectOptions, DisconnectReason, EventStream, Incoming,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test instead of hanging.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut).await.expect("timed out")
}

/// What the server-side handlers observed, for assertions.
type Seen = mpsc::UnboundedReceiver<(String, Value)>;

#[derive(Debug, Deserialize)]
struct Auth {
    secret: String,
}

/// Starts socketioxide with a realistic app on 127.0.0.1:0.
async fn start_server(
    configure: impl FnOnce(SocketIoBuilder) -> SocketIoBuilder,
) -> (String, Seen) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("testfleet_sio=debug")
        .with_test_writer()
        .try_init();
    let (layer, io) = configure(SocketIo::builder()).build_layer();
    let (seen_tx, seen) = mpsc::unbounded_channel::<(String, Value)>();
    install_handlers(&io, seen_tx);
    let app = axum::Router::new().layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn install_handlers(io: &SocketIo, seen: mpsc::UnboundedSender<(String, Value)>) {
    // Rejections come from a middleware, the way the testfleet server checks the secret.
    async fn check_secret(Data(auth): Data<Auth>) -> Result<(), String> {
        if auth.secret == "right" {
            Ok(())
        } else {
            Err("wrong secret".to_owned())
        }
    }

    let on_connect = move |s: SocketRef, Data(auth): Data<Value>| {
        let seen = seen.clone();
        async move {
            let _ = seen.send(("auth".into(), auth));
            let disconnect_seen = seen.clone();
            s.on_disconnect(async move |reason: ServerReason| {
                let _ = disconnect_seen.send(("disconnect".into(), json!(reason.to_string())));
            });
            let event_seen = seen.clone();
            s.on("report", async move |Data(value): Data<Value>| {
                let _ = event_seen.send(("report".into(), value));
            });
            let bare_seen = seen.clone();
            s.on("fetchWork", async move |s: SocketRef| {
                let _ = bare_seen.send(("fetchWork".into(), Value::Null));
                let _ = s.emit("noWork", &());
            });
            s.on("echo", async |s: SocketRef, Data(value): Data<Value>| {
                let _ = s.emit("echoed", &value);
            });
            s.on(
                "add",
                async |Data((a, b)): Data<(i64, i64)>, ack: AckSender| {
                    let _ = ack.send(&(a + b));
                },
            );
            s.on("kickMe", async |s: SocketRef| {
                let _ = s.disconnect();
            });
            let ask_seen = seen.clone();
            s.on("askMe", async move |s: SocketRef| {
                let answer = match s.emit_with_ack::<_, Value>("question", &json!({"q": 42})) {
                    Ok(pending) => pending.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = ask_seen.send(("answer".into(), json!(answer)));
            });
        }
    };
    io.ns("/", on_connect.clone().with(check_secret));
    io.ns("/custom", on_connect);
}

fn authed() -> ConnectOptions {
    ConnectOptions::default().with_auth(json!({"secret": "right"}))
}

async fn next_seen(seen: &mut Seen, key: &str) -> Value {
    loop {
        let (k, v) = within(seen.recv()).await.expect("server handlers gone");
        if k == key {
            return v;
        }
    }
}

async fn next_event(
    events: &mut EventStream,
) -> (String, Vec<Value>, Option<testfleet_sio::AckHandle>) {
    match within(events.recv()).await {
        Some(Incoming::Event { name, args, ack }) => (name, args, ack),
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn next_disconnect(events: &mut EventStream) -> DisconnectReason {
    loop {
        match within(events.recv()).await {
            Some(Incoming::Disconnected { reason }) => return reason,
            Some(Incoming::Event { name, .. }) => eprintln!("skipping event {name}"),
            None => panic!("stream ended without Disconnected"),
        }
    }
}

#[tokio::test]
async fn connects_with_auth_and_exchanges_events() {
    let (url, mut seen) = start_server(|b| b).await;
    let (client, mut events) = within(Client::connect(&url, authed())).await.unwrap();
    assert!(client.is_connected());
    assert!(!client.sid().is_empty());
    assert_eq!(
        next_seen(&mut seen, "auth").await,
        json!({"secret": "right"})
    );

    // No-argument emit both ways: `42["fetchWork"]` in, `noWork` out.
    client.emit_no_args("fetchWork").await.unwrap();
    assert_eq!(next_seen(&mut seen, "fetchWork").await, Value::Null);
    let (name, args, ack) = next_event(&mut events).await;
    assert_eq!(name, "noWork");
    // socketioxide encodes `emit(.., &())` as a single null argument.
    assert_eq!(args, [Value::Null]);
    assert!(ack.is_none());

    // JSON argument both ways.
    client.emit("report", json!({"passed": 3})).await.unwrap();
    assert_eq!(next_seen(&mut seen, "report").await, json!({"passed": 3}));
    client.emit("echo", vec![1, 2, 3]).await.unwrap();
    let (name, args, _) = next_event(&mut events).await;
    assert_eq!((name.as_str(), args), ("echoed", vec![json!([1, 2, 3])]));

    // Our ack request answered by the server.
    let sum = within(client.emit_with_ack_args("add", vec![json!(2), json!(40)], LIMIT))
        .await
        .unwrap();
    assert_eq!(sum, vec![json!(42)]);

    // The server's ack request answered by us.
    client.emit_no_args("askMe").await.unwrap();
    let (name, args, ack) = next_event(&mut events).await;
    assert_eq!((name.as_str(), args), ("question", vec![json!({"q": 42})]));
    ack.expect("server asked for an ack")
        .send(vec![json!("yes")])
        .await
        .unwrap();
    assert_eq!(next_seen(&mut seen, "answer").await, json!({"Ok": "yes"}));

    // A clean disconnect is seen by the server as a namespace disconnect by the client.
    within(client.disconnect()).await;
    assert_eq!(
        next_disconnect(&mut events).await,
        DisconnectReason::ClientDisconnect
    );
    assert!(within(events.recv()).await.is_none());
    assert_eq!(
        next_seen(&mut seen, "disconnect").await,
        json!(ServerReason::ClientNSDisconnect.to_string())
    );
    assert!(!client.is_connected());
    assert!(client.emit_no_args("late").await.is_err());
}

#[tokio::test]
async fn rejected_connect_reports_server_message() {
    let (url, _seen) = start_server(|b| b).await;
    let opts = ConnectOptions::default().with_auth(json!({"secret": "wrong"}));
    match within(Client::connect(&url, opts)).await {
        Err(ConnectError::Rejected { message, .. }) => assert_eq!(message, "wrong secret"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The connect can simply be retried with the right credentials.
    let (client, _events) = within(Client::connect(&url, authed())).await.unwrap();
    assert!(client.is_connected());
}

#[tokio::test]
async fn custom_namespace() {
    let (url, mut seen) = start_server(|b| b).await;
    let opts = ConnectOptions::default()
        .with_namespace("custom")
        .with_auth(json!({"any": "thing"}));
    let (client, mut events) = within(Client::connect(&url, opts)).await.unwrap();
    assert_eq!(client.namespace(), "/custom");
    assert_eq!(next_seen(&mut seen, "auth").await, json!({"any": "thing"}));
    client.emit("echo", "hi").await.unwrap();
    let (name, args, _) = next_event(&mut events).await;
    assert_eq!((name.as_str(), args), ("echoed", vec![json!("hi")]));
    let sum = within(client.emit_with_ack_args("add", vec![json!(1), json!(1)], LIMIT))
        .await
        .unwrap();
    assert_eq!(sum, vec![json!(2)]);
}

#[tokio::test]
async fn server_side_disconnect_is_reported() {
    let (url, _seen) = start_server(|b| b).await;
    let (client, mut events) = within(Client::connect(&url, authed())).await.unwrap();
    client.emit_no_args("kickMe").await.unwrap();
    assert_eq!(
        next_disconnect(&mut events).await,
        DisconnectReason::ServerDisconnect
    );
    assert!(!client.is_connected());
    let err = client
        .emit_with_ack("echo", 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AckError::Disconnected | AckError::Emit(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn heartbeat_keeps_connection_alive() {
    let (url, _seen) = start_server(|b| {
        b.ping_interval(Duration::from_millis(300))
            .ping_timeout(Duration::from_millis(200))
    })
    .await;
    let (client, mut events) = within(Client::connect(&url, authed())).await.unwrap();
    // Several ping intervals; a missing PONG or a too-eager dead check would end the session.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(client.is_connected());
    let quiet = tokio::time::timeout(Duration::from_millis(10), events.recv()).await;
    assert!(quiet.is_err(), "unexpected item: {quiet:?}");
    let sum = within(client.emit_with_ack_args("add", vec![json!(1), json!(2)], LIMIT))
        .await
        .unwrap();
    assert_eq!(sum, vec![json!(3)]);
}

#[tokio::test]
async fn killed_server_is_detected() {
    // The server lives in its own runtime so it can die whole, connections included, the way
    // a crashed process would (aborting only axum's accept loop keeps live sockets running).
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let (url, _seen) = start_server(|b| {
                b.ping_interval(Duration::from_millis(300))
                    .ping_timeout(Duration::from_millis(200))
            })
            .await;
            url_tx.send(url).unwrap();
            let _ = kill_rx.await;
        });
        runtime.shutdown_background();
    });
    let url = url_rx.recv().unwrap();
    let (client, mut events) = within(Client::connect(&url, authed())).await.unwrap();
    let started = tokio::time::Instant::now();
    kill_tx.send(()).unwrap();
    let reason = next_disconnect(&mut events).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            reason,
            DisconnectReason::ConnectionClosed(_)
                | DisconnectReason::TransportError(_)
                | DisconnectReason::PingTimeout(_)
        ),
        "{reason:?}"
    );
    assert!(!client.is_connected());
    server.join().unwrap();
}

#[tokio::test]
async fn dropping_last_client_disconnects() {
    let (url, mut seen) = start_server(|b| b).await;
    let (client, mut events) = within(Client::connect(&url, authed())).await.unwrap();
    let clone = client.clone();
    drop(client);
    clone.emit("report", 1).await.unwrap();
    assert_eq!(next_seen(&mut seen, "report").await, json!(1));
    drop(clone);
    assert_eq!(
        next_disconnect(&mut events).await,
        DisconnectReason::ClientDisconnect
    );
    assert_eq!(
        next_seen(&mut seen, "disconnect").await,
        json!(ServerReason::ClientNSDisconnect.to_string())
    );
}

#[tokio::test]
async fn ack_timeout() {
    let (url, _seen) = start_server(|b| b).await;
    let (client, _events) = within(Client::connect(&url, authed())).await.unwrap();
    // `report` never acks.
    let err = client
        .emit_with_ack("report", 1, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, AckError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn unreachable_server_and_bad_urls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = within(Client::connect(&format!("http://{addr}"), authed()))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::WebSocket { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("open websocket to ws://"),
        "{err}"
    );

    // wss is supported: a TLS URL to a closed port fails to connect, clearly.
    let err = within(Client::connect(&format!("https://{addr}"), authed()))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::WebSocket { .. }), "{err:?}");
    assert!(err.to_string().contains("wss://"), "{err}");
}

// ---- scripted fake server -------------------------------------------------------------------

const OPEN: &str =
    r#"0{"sid":"e1","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#;

/// Accepts one websocket connection and hands it to `script` after the Engine.IO OPEN.
async fn fake_server<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.send(Message::text(OPEN)).await.unwrap();
        script(ws).await;
    });
    addr
}

/// Reads the client's namespace CONNECT and accepts it.
async fn accept_namespace(ws: &mut WebSocketStream<TcpStream>) -> String {
    let connect = read_text(ws).await;
    ws.send(Message::text(r#"40{"sid":"s1"}"#)).await.unwrap();
    connect
}

async fn read_text(ws: &mut WebSocketStream<TcpStream>) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(_)) => {}
            other => panic!("fake server read failed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn silent_server_is_detected_by_heartbeat() {
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = fake_server(move |mut ws| async move {
        accept_namespace(&mut ws).await;
        // Keep the socket open but never ping: a hung server or a black-holed network.
        let _ = hold_rx.await;
        drop(ws);
    })
    .await;
    let (_client, mut events) = within(Client::connect(&format!("ws://{addr}"), authed()))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let reason = next_disconnect(&mut events).await;
    let elapsed = started.elapsed();
    assert_eq!(
        reason,
        DisconnectReason::PingTimeout(Duration::from_millis(500))
    );
    assert!(elapsed < Duration::from_millis(900), "took {elapsed:?}");
    drop(hold_tx);
}

#[tokio::test]
async fn odd_frames_are_skipped_and_engine_close_reported() {
    let addr = fake_server(|mut ws| async move {
        let connect = accept_namespace(&mut ws).await;
        assert_eq!(connect, r#"40{"secret":"right"}"#);
        for frame in [
            "",
            "x",
            "4",
            "49",
            r#"42"not an array""#,
            "42[1]",
            r#"451-["upload",{"_placeholder":true,"num":0}]"#,
            r#"42/other,["elsewhere"]"#,
            "4399[1]",
            "2",
        ] {
            ws.send(Message::text(frame)).await.unwrap();
        }
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(
            read_text(&mut ws).await,
            "3",
            "ping must be answered with pong"
        );
        ws.send(Message::text(r#"425["hello",{"n":1},"two"]"#))
            .await
            .unwrap();
        assert_eq!(read_text(&mut ws).await, r#"435["ok"]"#);
        ws.send(Message::text("1")).await.unwrap();
        let _ = ws.next().await;
    })
    .await;
    let (client, mut events) = within(Client::connect(&format!("http://{addr}/"), authed()))
        .await
        .unwrap();
    assert_eq!(client.sid(), "s1");
    let (name, args, ack) = next_event(&mut events).await;
    assert_eq!(
        (name.as_str(), args),
        ("hello", vec![json!({"n": 1}), json!("two")])
    );
    let ack = ack.expect("ack id 5");
    assert_eq!(ack.id(), 5);
    ack.send(vec![json!("ok")]).await.unwrap();
    assert_eq!(
        next_disconnect(&mut events).await,
        DisconnectReason::EngineClose
    );
}

#[tokio::test]
async fn legacy_string_connect_error_and_handshake_timeout() {
    let addr = fake_server(|mut ws| async move {
        let _ = read_text(&mut ws).await;
        ws.send(Message::text(r#"44"not allowed""#)).await.unwrap();
        let _ = ws.next().await;
    })
    .await;
    match within(Client::connect(&format!("ws://{addr}"), authed())).await {
        Err(ConnectError::Rejected { message, data }) => {
            assert_eq!((message.as_str(), data), ("not allowed", None));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    // A server that opens the session but never answers CONNECT.
    let addr = fake_server(|mut ws| async move {
        let _ = read_text(&mut ws).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    let opts = authed().with_handshake_timeout(Duration::from_millis(300));
    match within(Client::connect(&format!("ws://{addr}"), opts)).await {
        Err(ConnectError::Timeout { step, .. }) => assert_eq!(step, "the namespace connect reply"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
