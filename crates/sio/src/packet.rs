//! Encoding and decoding of Engine.IO v4 and Socket.IO v5 text packets.
//!
//! Pure functions only, so the wire format can be unit-tested without a socket. Decoding never
//! panics: anything a peer sends is untrusted, and malformed input becomes an `Err`/`None`.

use serde::Deserialize;
use serde_json::Value;

/// One Engine.IO packet, as carried by a websocket text frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EnginePacket<'a> {
    Open(&'a str),
    Close,
    Ping,
    Pong,
    Message(&'a str),
    /// Upgrade and noop only matter for the polling transport; we accept and ignore them.
    Other,
}

/// Splits an Engine.IO text frame into its type and payload.
pub(crate) fn parse_engine(text: &str) -> Option<EnginePacket<'_>> {
    let mut chars = text.chars();
    let kind = chars.next()?;
    let rest = chars.as_str();
    Some(match kind {
        '0' => EnginePacket::Open(rest),
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping,
        '3' => EnginePacket::Pong,
        '4' => EnginePacket::Message(rest),
        '5' | '6' => EnginePacket::Other,
        _ => return None,
    })
}

/// Engine.IO PONG frame, the answer to a server PING.
pub(crate) const PONG: &str = "3";

/// The JSON body of the Engine.IO OPEN packet.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenPayload {
    pub sid: String,
    pub ping_interval: u64,
    pub ping_timeout: u64,
    /// Only meaningful for polling; parsed so it shows up in debug logs.
    #[serde(default)]
    #[allow(dead_code)]
    pub max_payload: Option<u64>,
}

/// Socket.IO packet types (the digit after the Engine.IO `4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SioKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl SioKind {
    fn from_char(c: char) -> Option<Self> {
        Some(match c {
            '0' => Self::Connect,
            '1' => Self::Disconnect,
            '2' => Self::Event,
            '3' => Self::Ack,
            '4' => Self::ConnectError,
            '5' => Self::BinaryEvent,
            '6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn as_char(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }
}

/// A decoded Socket.IO packet; `payload` is the still-unparsed JSON tail (may be empty).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SioPacket<'a> {
    pub kind: SioKind,
    pub namespace: &'a str,
    pub id: Option<u64>,
    pub payload: &'a str,
}

/// Decodes `<type>[<attachments>-][<namespace>,][<id>][<json>]` (the part after the Engine `4`).
pub(crate) fn parse_sio(text: &str) -> Result<SioPacket<'_>, String> {
    let mut chars = text.chars();
    let kind = chars
        .next()
        .and_then(SioKind::from_char)
        .ok_or_else(|| format!("unknown socket.io packet type in {text:?}"))?;
    let mut rest = chars.as_str();

    // Binary packets announce their attachment count as `<n>-`; we only need to skip it.
    if matches!(kind, SioKind::BinaryEvent | SioKind::BinaryAck) {
        let (count, tail) = rest
            .split_once('-')
            .ok_or_else(|| "binary packet without attachment count".to_string())?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad attachment count {count:?}"));
        }
        rest = tail;
    }

    // A namespace other than "/" is written as `/name,` (the comma may be missing at the end).
    let mut namespace = "/";
    if rest.starts_with('/') {
        match rest.split_once(',') {
            Some((ns, tail)) => {
                namespace = ns;
                rest = tail;
            }
            None => {
                namespace = rest;
                rest = "";
            }
        }
    }

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits == 0 {
        None
    } else {
        let id = rest[..digits]
            .parse()
            .map_err(|_| format!("ack id out of range in {text:?}"))?;
        Some(id)
    };
    Ok(SioPacket {
        kind,
        namespace,
        id,
        payload: &rest[digits..],
    })
}

/// Encodes a Socket.IO packet as an Engine.IO message frame (`4<type>[/ns,][id][json]`).
pub(crate) fn encode_sio(kind: SioKind, namespace: &str, id: Option<u64>, payload: &str) -> String {
    let mut out = String::with_capacity(payload.len() + namespace.len() + 24);
    out.push('4');
    out.push(kind.as_char());
    if namespace != "/" {
        out.push_str(namespace);
        out.push(',');
    }
    if let Some(id) = id {
        out.push_str(&id.to_string());
    }
    out.push_str(payload);
    out
}

/// Builds the JSON array `[event, ...args]` of an EVENT packet.
pub(crate) fn event_payload(event: &str, args: Vec<Value>) -> String {
    let mut items = Vec::with_capacity(args.len() + 1);
    items.push(Value::String(event.to_owned()));
    items.extend(args);
    Value::Array(items).to_string()
}

/// Splits an EVENT payload into event name and arguments.
pub(crate) fn decode_event(payload: &str) -> Result<(String, Vec<Value>), String> {
    let mut items = decode_args(payload)?;
    if items.is_empty() {
        return Err("event without a name".into());
    }
    match items.remove(0) {
        Value::String(name) => Ok((name, items)),
        other => Err(format!("event name is not a string: {other}")),
    }
}

/// Decodes an EVENT/ACK payload, which must be a JSON array.
pub(crate) fn decode_args(payload: &str) -> Result<Vec<Value>, String> {
    serde_json::from_str(payload).map_err(|e| format!("payload is not a json array: {e}"))
}

/// Extracts message and data from a CONNECT_ERROR payload.
///
/// v5 servers send `{"message": ..., "data": ...}`; older ones sent a bare string, which some
/// third-party servers still do, so both are accepted.
pub(crate) fn decode_connect_error(payload: &str) -> (String, Option<Value>) {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::String(message)) => (message, None),
        Ok(Value::Object(mut obj)) => {
            let message = match obj.remove("message") {
                Some(Value::String(m)) => m,
                Some(other) => other.to_string(),
                None => Value::Object(obj.clone()).to_string(),
            };
            (message, obj.remove("data"))
        }
        Ok(other) => (other.to_string(), None),
        Err(_) if payload.is_empty() => ("no reason given".into(), None),
        Err(_) => (payload.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn engine_frames() {
        assert_eq!(parse_engine("2"), Some(EnginePacket::Ping));
        assert_eq!(parse_engine("1"), Some(EnginePacket::Close));
        assert_eq!(parse_engine("0{}"), Some(EnginePacket::Open("{}")));
        assert_eq!(
            parse_engine("42[\"a\"]"),
            Some(EnginePacket::Message("2[\"a\"]"))
        );
        assert_eq!(parse_engine(""), None);
        assert_eq!(parse_engine("x"), None);
    }

    #[test]
    fn sio_with_namespace_and_id() {
        let p = parse_sio("2/admin,12[\"ev\",1]").unwrap();
        assert_eq!(p.kind, SioKind::Event);
        assert_eq!(p.namespace, "/admin");
        assert_eq!(p.id, Some(12));
        assert_eq!(p.payload, "[\"ev\",1]");

        let p = parse_sio("1/admin,").unwrap();
        assert_eq!(
            (p.kind, p.namespace, p.id, p.payload),
            (SioKind::Disconnect, "/admin", None, "")
        );
        let p = parse_sio("1/admin").unwrap();
        assert_eq!(p.namespace, "/admin");
        let p = parse_sio("0{\"sid\":\"x\"}").unwrap();
        assert_eq!((p.namespace, p.payload), ("/", "{\"sid\":\"x\"}"));
    }

    #[test]
    fn sio_binary_and_garbage() {
        let p = parse_sio("51-[\"up\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!(p.kind, SioKind::BinaryEvent);
        assert!(parse_sio("5[]").is_err());
        assert!(parse_sio("9").is_err());
        assert!(parse_sio("").is_err());
        assert!(parse_sio("399999999999999999999999[]").is_err());
        assert!(decode_event("{}").is_err());
        assert!(decode_event("[]").is_err());
        assert!(decode_event("[1]").is_err());
    }

    #[test]
    fn encode_round_trip() {
        let frame = encode_sio(
            SioKind::Event,
            "/",
            None,
            &event_payload("fetchWork", vec![]),
        );
        assert_eq!(frame, "42[\"fetchWork\"]");
        let frame = encode_sio(SioKind::Ack, "/ns", Some(7), "[1]");
        assert_eq!(frame, "43/ns,7[1]");
        let EnginePacket::Message(inner) = parse_engine(&frame).unwrap() else {
            panic!("not a message")
        };
        let p = parse_sio(inner).unwrap();
        assert_eq!((p.kind, p.namespace, p.id), (SioKind::Ack, "/ns", Some(7)));
    }

    #[test]
    fn connect_error_shapes() {
        let (m, d) = decode_connect_error(r#"{"message":"wrong secret","data":{"code":1}}"#);
        assert_eq!((m.as_str(), d), ("wrong secret", Some(json!({"code": 1}))));
        assert_eq!(decode_connect_error("\"legacy\"").0, "legacy");
        assert_eq!(decode_connect_error("").0, "no reason given");
    }
}
