//! The fuzzer's inputs: frames and events drawn from the kit's seeded RNG.

use serde_json::{Value, json};
use testfleet_testkit::Rng;
use tokio_tungstenite::tungstenite::Message;

use crate::SECRET;

/// Fuzz inputs drawn from the kit's seeded RNG.
pub(crate) trait FuzzInput {
    fn len(&mut self) -> usize;
    fn string(&mut self) -> String;
    fn value(&mut self, depth: u32) -> Value;
}

impl FuzzInput for Rng {
    /// A length, usually small, sometimes large.
    fn len(&mut self) -> usize {
        match self.below(10) {
            0 => self.below(64 * 1024) as usize,
            1..=3 => self.below(1024) as usize,
            _ => self.below(32) as usize,
        }
    }

    fn string(&mut self) -> String {
        let len = self.len();
        match self.below(4) {
            0 => String::from_utf8_lossy(&self.bytes(len)).into_owned(),
            1 => (0..len)
                .map(|_| char::from_u32(self.below(0x11_0000) as u32).unwrap_or('\u{fffd}'))
                .collect(),
            2 => (0..len).map(|_| (self.below(32) as u8) as char).collect(),
            _ => (0..len)
                .map(|_| (b' ' + self.below(95) as u8) as char)
                .collect(),
        }
    }

    /// Any JSON value, of the wrong shape more often than not.
    fn value(&mut self, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "status",
            "attemptId",
            "integrationId",
            "taskId",
            "detailMessage",
            "updateTimestamp",
            "outcome",
            "reason",
            "results",
            "duration_ms",
            "offset",
            "data",
            "stage",
            "clientType",
            "hostname",
            "secret",
            "labels",
            "_placeholder",
            "num",
        ];
        let leaf = depth > 4;
        match self.below(if leaf { 6 } else { 9 }) {
            0 => Value::Null,
            1 => json!(self.chance(2)),
            2 => {
                let any = (self.next_u64() >> 1) as i64;
                json!(*self.pick(&[0i64, -1, 1, i64::MAX, i64::MIN, any]))
            }
            3 => json!(*self.pick(&[0.5f64, -1e308, 1e308, f64::MIN_POSITIVE])),
            4 => json!(self.string()),
            5 => json!(*self.pick(&[
                "idle",
                "new",
                "test",
                "done",
                "passed",
                "failed",
                "",
                "infra_error"
            ])),
            6 => Value::Array((0..self.below(5)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.below(6) {
                    let key = if self.chance(4) {
                        self.string()
                    } else {
                        (*self.pick(KEYS)).to_owned()
                    };
                    map.insert(key, self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

pub(crate) const EVENTS: &[&str] = &[
    "statusUpdate",
    "fetchWork",
    "tf:report",
    "tf:log",
    "queryWork",
    "mockItem",
    "getAgents",
    "getWorkLog",
    "requestStatus",
    "sendWork",
    "error",
    "noSuchEvent",
];

/// A malformed (or merely odd) event of an agent: `42[name, args…]`, with
/// an ack id now and then.
pub(crate) fn agent_event(rng: &mut Rng) -> String {
    let name = match rng.below(12) {
        0 => json!(rng.string()),
        1 => json!("x".repeat(rng.below(20_000) as usize)),
        2 => rng.value(3),
        _ => json!(rng.pick(EVENTS)),
    };
    let mut array = vec![name];
    for _ in 0..rng.below(4) {
        array.push(rng.value(0));
    }
    let ack = if rng.chance(3) {
        rng.below(1_000_000).to_string()
    } else {
        String::new()
    };
    format!("42{ack}{}", Value::Array(array))
}

/// An event about the sender's own attempt, with wild values: log offsets
/// far away, odd outcomes and results, unknown statuses.
pub(crate) fn own_attempt_event(rng: &mut Rng, attempt: i64) -> String {
    let name = *rng.pick(&["statusUpdate", "tf:log", "tf:report"]);
    let mut v = rng.value(1);
    if !v.is_object() {
        v = json!({});
    }
    v["attemptId"] = json!(attempt);
    if rng.chance(2) {
        let offset = *rng.pick(&[0i64, -1, 7, 1 << 40, i64::MAX, i64::MIN]);
        v["offset"] = json!(offset);
        v["data"] = json!(rng.string());
    }
    if rng.chance(2) {
        let outcome = *rng.pick(&["passed", "failed", "infra_error", "bogus", ""]);
        v["outcome"] = json!(outcome);
        v["results"] = rng.value(2);
        v["duration_ms"] = rng.value(4);
    }
    if rng.chance(2) {
        let status = *rng.pick(&["new", "test", "done", "idle", "weird", ""]);
        v["status"] = json!(status);
        v["updateTimestamp"] = rng.value(4);
        v["integrationId"] = rng.value(4);
    }
    let ack = if rng.chance(2) { "9" } else { "" };
    format!("42{ack}{}", json!([name, v]))
}

pub(crate) fn nested(rng: &mut Rng) -> String {
    let depth = *rng.pick(&[100usize, 129, 1_000, 20_000, 100_000]);
    let (open, close) = if rng.chance(2) {
        ("[", "]")
    } else {
        ("{\"a\":", "}")
    };
    let inner = format!("{}1{}", open.repeat(depth), close.repeat(depth));
    format!("42[\"{}\",{inner}]", rng.pick(EVENTS))
}

pub(crate) fn valid_packet(rng: &mut Rng) -> String {
    let packets = [
        format!(r#"40{{"clientType":"agent","hostname":"fuzz-x","secret":"{SECRET}"}}"#),
        r#"40{"clientType":"browser"}"#.to_owned(),
        r#"42["statusUpdate",{"status":"idle","updateTimestamp":"2024-01-01T00:00:00.000Z"}]"#
            .to_owned(),
        r#"42["fetchWork"]"#.to_owned(),
        r#"421["tf:report",{"attemptId":1,"outcome":"passed","results":[]}]"#.to_owned(),
        r#"42["tf:log",{"attemptId":1,"offset":0,"data":"hello"}]"#.to_owned(),
        r#"451-["tf:log",{"_placeholder":true,"num":0}]"#.to_owned(),
        "41".to_owned(),
        "431[{\"ok\":true}]".to_owned(),
    ];
    rng.pick(&packets).clone()
}

/// One frame of any kind, mostly broken.
pub(crate) fn frame(rng: &mut Rng) -> Message {
    match rng.below(16) {
        0 => {
            let len = rng.len();
            Message::Binary(rng.bytes(len).into())
        }
        1 => Message::Text(rng.string().into()),
        2 => {
            let p = valid_packet(rng);
            let cut = rng.below(p.len() as u64) as usize;
            let cut = (0..=cut)
                .rev()
                .find(|i| p.is_char_boundary(*i))
                .unwrap_or(0);
            Message::Text(p[..cut].to_owned().into())
        }
        // Wrong engine.io or socket.io packet types.
        3 => Message::Text(format!("{}{}", rng.below(10), rng.value(1)).into()),
        4 => Message::Text(format!("4{}{}", rng.below(10), rng.value(1)).into()),
        // Bad JSON.
        5 => Message::Text(
            rng.pick(&[
                "42[\"statusUpdate\",{\"status\":",
                "42[\"tf:report\",{]",
                "42[,]",
                "42{\"a\":1}",
                "42\"statusUpdate\"",
                "42[\"tf:log\",{\"data\":\"\\ud800\"}]",
                "42[\"tf:log\",NaN]",
                "40{\"clientType\":\"agent\",",
                "40[1,2]",
                "42[]",
                "42[null]",
                "42-1[\"fetchWork\"]",
                "4299999999999999999999999[\"fetchWork\"]",
                "40/nope,{}",
                "42/other,[\"fetchWork\"]",
            ])
            .to_string()
            .into(),
        ),
        6 => Message::Text(nested(rng).into()),
        // Long strings, under the limit.
        7 => Message::Text(
            format!(
                "42[\"{}\",{}]",
                rng.pick(EVENTS),
                json!({"detailMessage": "y".repeat(200 * 1024), "status": "test"})
            )
            .into(),
        ),
        // Engine.io control packets from the client side.
        8 => Message::Text(
            rng.pick(&[
                "1", "2", "3", "5", "6", "2probe", "3probe", "", "4", "0", "0{}",
            ])
            .to_string()
            .into(),
        ),
        // Binary events: placeholders without, with extra or with odd attachments.
        9 => Message::Text(
            format!(
                "45{}-[\"{}\",{{\"_placeholder\":true,\"num\":{}}}]",
                rng.pick(&["1", "0", "2", "999999", "18446744073709551616"]),
                rng.pick(EVENTS),
                rng.pick(&["0", "1", "-1", "\"x\"", "1e9"])
            )
            .into(),
        ),
        10 => {
            let len = rng.below(4096) as usize;
            Message::Binary(rng.bytes(len).into())
        }
        // Acks the server never asked for.
        11 => Message::Text(
            format!(
                "43{}{}",
                rng.pick(&["", "0", "1", "77", "-3", "x"]),
                rng.value(1)
            )
            .into(),
        ),
        12 => {
            let len = rng.below(125) as usize;
            Message::Ping(rng.bytes(len).into())
        }
        _ => Message::Text(agent_event(rng).into()),
    }
}
