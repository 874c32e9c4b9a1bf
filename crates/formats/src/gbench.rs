//! Google Benchmark JSON (`--benchmark_format=json` / `--benchmark_out_format=json`).
//!
//! One case per benchmark run: the case name is the `run_name`; repetitions get the data
//! tag `repN` and aggregates (`run_type: aggregate`) the aggregate's name (`mean`,
//! `median`, `stddev`, `cv`), so a series (name, tag, metric) stays stable over time.
//! Metrics are `real_time` and `cpu_time` in the run's `time_unit`, the rates
//! (`bytes_per_second`, `items_per_second`) and every user counter.
//!
//! The file is read whole (it is small by nature). A truncated file still yields the
//! benchmarks written before the cut, read one object at a time.

use serde_json::{Map, Value};
use testfleet_wire::results::{Case, CaseOutcome, Metric, Property, Results, Suite};

use crate::util::set_capped;
use crate::{Format, ParseError};

/// Fields that describe a run rather than measure it.
const NOT_COUNTERS: &[&str] = &[
    "name",
    "family_index",
    "per_family_instance_index",
    "run_name",
    "run_type",
    "repetitions",
    "repetition_index",
    "threads",
    "iterations",
    "real_time",
    "cpu_time",
    "time_unit",
    "aggregate_name",
    "aggregate_unit",
    "label",
    "error_occurred",
    "error_message",
    "skipped",
    "skip_message",
    "big_o",
    "rms",
    "complexity_n",
];

pub(crate) fn parse(bytes: &[u8]) -> Result<Results, ParseError> {
    let mut results = Results::new(Format::GoogleBenchmark.name());
    let trimmed = bytes.trim_ascii_start();
    if trimmed.is_empty() {
        results.complete = false;
        results.warnings.push("empty input".into());
        return Ok(results);
    }
    if trimmed[0] != b'{' {
        return Err(ParseError::NotThisFormat {
            format: Format::GoogleBenchmark,
            reason: "it is not a JSON object",
        });
    }
    let (context, benchmarks) = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut root)) => {
            let context = match root.remove("context") {
                Some(Value::Object(c)) => c,
                _ => Map::new(),
            };
            let benchmarks = match root.remove("benchmarks") {
                Some(Value::Array(b)) => b,
                _ => {
                    results.complete = false;
                    results.warnings.push("no `benchmarks` array".into());
                    Vec::new()
                }
            };
            (context, benchmarks)
        }
        Ok(_) => {
            return Err(ParseError::NotThisFormat {
                format: Format::GoogleBenchmark,
                reason: "it is not a JSON object",
            });
        }
        Err(e) if e.is_eof() || e.is_syntax() => {
            results.complete = false;
            results.warnings.push(format!(
                "JSON is truncated or malformed ({e}); kept the benchmarks before that point"
            ));
            salvage(bytes)
        }
        Err(e) => return Err(ParseError::Json(e)),
    };

    let mut suite = Suite::new(
        context
            .get("executable")
            .and_then(Value::as_str)
            .unwrap_or("benchmarks"),
    );
    for (k, v) in &context {
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            // Caches and load averages: keep them, as JSON.
            other => other.to_string(),
        };
        suite.properties.push(Property {
            name: k.clone(),
            value,
        });
    }
    for b in benchmarks {
        if let Value::Object(b) = b {
            suite.cases.push(case_from(&b));
        }
    }
    results.suites.push(suite);
    Ok(results)
}

/// Reads the `context` object and every complete benchmark object of a cut-off file.
fn salvage(bytes: &[u8]) -> (Map<String, Value>, Vec<Value>) {
    let mut context = Map::new();
    if let Some(pos) = find(bytes, b"\"context\"")
        && let Some(open) = bytes[pos..].iter().position(|&c| c == b'{')
    {
        let mut it =
            serde_json::Deserializer::from_slice(&bytes[pos + open..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(c))) = it.next() {
            context = c;
        }
    }
    let mut out = Vec::new();
    let Some(pos) = find(bytes, b"\"benchmarks\"") else {
        return (context, out);
    };
    let Some(open) = bytes[pos..].iter().position(|&c| c == b'[') else {
        return (context, out);
    };
    let mut rest = &bytes[pos + open + 1..];
    loop {
        let skip = rest
            .iter()
            .position(|c| !c.is_ascii_whitespace() && *c != b',')
            .unwrap_or(rest.len());
        rest = &rest[skip..];
        if rest.first() != Some(&b'{') {
            break;
        }
        let mut it = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                let used = it.byte_offset();
                out.push(v);
                rest = &rest[used..];
            }
            _ => break,
        }
    }
    (context, out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn case_from(b: &Map<String, Value>) -> Case {
    let s = |k: &str| b.get(k).and_then(Value::as_str);
    let name = s("run_name").or(s("name")).unwrap_or("").to_string();
    let aggregate = s("run_type") == Some("aggregate");
    let tag = if aggregate {
        s("aggregate_name").map(str::to_string)
    } else {
        match (
            b.get("repetitions").and_then(Value::as_u64),
            b.get("repetition_index").and_then(Value::as_u64),
        ) {
            (Some(n), Some(i)) if n > 1 => Some(format!("rep{i}")),
            _ => None,
        }
    };
    let mut case = Case::new(name, tag);
    let iterations = b.get("iterations").and_then(Value::as_u64);
    // Aggregates of kind `percentage` (cv) are ratios, not times.
    let time_unit = match s("aggregate_unit") {
        Some("percentage") => "ratio".to_string(),
        _ => s("time_unit").unwrap_or("ns").to_string(),
    };
    for key in ["real_time", "cpu_time"] {
        if let Some(v) = b.get(key).and_then(Value::as_f64) {
            case.metrics.push(Metric {
                name: key.to_string(),
                unit: time_unit.clone(),
                value: v,
                total: None,
                iterations,
                variance: None,
            });
        }
    }
    for (k, v) in b {
        if NOT_COUNTERS.contains(&k.as_str()) {
            continue;
        }
        if let Some(value) = v.as_f64() {
            let unit = match k.as_str() {
                "bytes_per_second" => "bytes/s",
                "items_per_second" => "items/s",
                _ => "",
            };
            case.metrics.push(Metric {
                name: k.clone(),
                unit: unit.to_string(),
                value,
                total: None,
                iterations,
                variance: None,
            });
        }
    }
    if b.get("error_occurred").and_then(Value::as_bool) == Some(true) {
        case.outcome = CaseOutcome::Error;
        if let Some(m) = s("error_message") {
            set_capped(&mut case.message, m, &mut case.flags);
        }
    }
    match b.get("skipped") {
        // Newer versions: 0 = not skipped, 1 = skipped with an error, 2 = skipped.
        Some(Value::Number(n)) if n.as_u64() == Some(1) => case.outcome = CaseOutcome::Error,
        Some(Value::Number(n)) if n.as_u64() == Some(2) => case.outcome = CaseOutcome::Skip,
        Some(Value::Bool(true)) => case.outcome = CaseOutcome::Skip,
        _ => {}
    }
    if case.message.is_none()
        && let Some(m) = s("skip_message")
    {
        set_capped(&mut case.message, m, &mut case.flags);
    }
    if let Some(label) = s("label").filter(|l| !l.is_empty()) {
        let mut log = case.log.take();
        crate::util::append_capped(&mut log, &format!("label: {label}"), &mut case.flags);
        case.log = log;
    }
    case
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_keeps_complete_objects() {
        let json = br#"{"context": {"executable": "./b"}, "benchmarks": [
            {"name": "BM_A", "run_name": "BM_A", "run_type": "iteration", "iterations": 10, "real_time": 1.5, "cpu_time": 1.4, "time_unit": "ns"},
            {"name": "BM_B", "run_name": "BM_B", "run_ty"#;
        let r = parse(json).expect("parse");
        assert!(!r.complete);
        assert_eq!(r.suites[0].name, "./b");
        assert_eq!(r.suites[0].cases.len(), 1);
        assert_eq!(r.suites[0].cases[0].metrics[0].value, 1.5);
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(parse(b"<xml/>").is_err());
    }
}
