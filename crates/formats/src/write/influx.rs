//! InfluxDB line protocol in the seed-000 (Qt benchmark lab) schema: measurement
//! `benchmark`; tags `platform, host, branch, gcc, cpu_model, case_name, test_name,
//! data_row`; fields `crashed, value, iterations, integration_id, sha1`; the timestamp
//! is the integration's, in nanoseconds, so reruns of one integration overwrite rather
//! than duplicate its points.

use testfleet_wire::results::{Metric, Results};

/// The run-wide values every point carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InfluxContext {
    pub platform: String,
    pub host: String,
    pub branch: String,
    pub gcc: String,
    pub cpu_model: String,
    pub integration_id: String,
    pub sha1: String,
    /// The integration's timestamp, Unix nanoseconds.
    pub timestamp_ns: i64,
    /// Add a `metric` tag to every point. The seed schema has none, so without it a
    /// case that reports several metrics would write colliding points; those extra
    /// metrics get the tag even when this is off.
    pub metric_tag: bool,
}

/// One line per benchmark metric, plus one `crashed=true` point per crashed test.
/// Tags with empty values are left out (line protocol does not allow them); metrics
/// whose value is not finite are skipped.
pub fn influx_lines(results: &Results, ctx: &InfluxContext) -> String {
    let mut out = String::new();
    for suite in &results.suites {
        for case in &suite.cases {
            for (i, m) in case.metrics.iter().enumerate() {
                if !m.value.is_finite() {
                    continue;
                }
                let metric = (ctx.metric_tag || i > 0).then_some(m.name.as_str());
                point(
                    &mut out,
                    ctx,
                    &case.name,
                    &suite.name,
                    case.data_tag.as_deref(),
                    metric,
                    false,
                    Some(m),
                );
            }
        }
    }
    for crash in &results.crashed {
        let case = crash.function.as_deref().unwrap_or("");
        point(
            &mut out,
            ctx,
            case,
            &crash.test_name,
            None,
            None,
            true,
            None,
        );
    }
    out
}

#[expect(clippy::too_many_arguments, reason = "one point's parts, all required")]
fn point(
    out: &mut String,
    ctx: &InfluxContext,
    case_name: &str,
    test_name: &str,
    data_row: Option<&str>,
    metric: Option<&str>,
    crashed: bool,
    m: Option<&Metric>,
) {
    out.push_str(&escape_measurement("benchmark"));
    let tags = [
        ("platform", ctx.platform.as_str()),
        ("host", ctx.host.as_str()),
        ("branch", ctx.branch.as_str()),
        ("gcc", ctx.gcc.as_str()),
        ("cpu_model", ctx.cpu_model.as_str()),
        ("case_name", case_name),
        ("test_name", test_name),
        ("data_row", data_row.unwrap_or("")),
        ("metric", metric.unwrap_or("")),
    ];
    // Line protocol wants tags sorted by key for best write performance.
    let mut tags: Vec<_> = tags.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    tags.sort_by_key(|(k, _)| *k);
    for (k, v) in tags {
        out.push(',');
        out.push_str(&escape_key(k));
        out.push('=');
        out.push_str(&escape_key(v));
    }
    let value = m.map_or(0.0, |m| m.value);
    let iterations = m.and_then(|m| m.iterations).unwrap_or(0);
    out.push_str(&format!(
        " crashed={crashed},value={},iterations={iterations}i,integration_id={},sha1={} {}\n",
        float(value),
        quote(&ctx.integration_id),
        quote(&ctx.sha1),
        ctx.timestamp_ns
    ));
}

/// Floats always carry a decimal point or exponent so InfluxDB never reads an integer.
fn float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// Measurement names: escape commas and spaces.
pub(crate) fn escape_measurement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ',' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Tag keys, tag values and field keys: escape commas, equals signs and spaces. Line
/// protocol has no newline escape, so newlines become spaces. A trailing backslash
/// would escape the separator after it, so it is doubled.
pub(crate) fn escape_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    if out.ends_with('\\') && !out.ends_with("\\\\") {
        out.push('\\');
    }
    out
}

/// Field string values: double quotes around, `"` and `\` escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_wire::results::{Case, CrashedTest, Suite};

    #[test]
    fn escapes_per_line_protocol() {
        assert_eq!(escape_key("a b,c=d"), "a\\ b\\,c\\=d");
        assert_eq!(escape_measurement("my bench,x"), "my\\ bench\\,x");
        assert_eq!(quote("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"");
    }

    #[test]
    fn seed_schema_point() {
        let mut r = Results::new("qtest-xml");
        let mut s = Suite::new("tst_QString");
        let mut c = Case::new("concatenation", Some("12876363564".into()));
        c.metrics.push(Metric {
            name: "WalltimeMilliseconds".into(),
            unit: "msecs".into(),
            value: 188423.0,
            total: None,
            iterations: Some(200),
            variance: None,
        });
        s.cases.push(c);
        r.suites.push(s);
        r.crashed.push(CrashedTest {
            test_name: "tst_Other".into(),
            function: None,
            log: String::new(),
        });
        let ctx = InfluxContext {
            platform: "Ubuntu 20.04".into(),
            host: "myhostname1".into(),
            branch: "dev".into(),
            gcc: "10.0.3".into(),
            cpu_model: "Intel Core i7-7700K".into(),
            integration_id: "189470895".into(),
            sha1: "69609f0b3575c571fff4564f6f16cbca9c7d81f6".into(),
            timestamp_ns: 1_434_055_562_000_000_000,
            metric_tag: false,
        };
        let lines = influx_lines(&r, &ctx);
        let mut it = lines.lines();
        assert_eq!(
            it.next(),
            Some(
                "benchmark,branch=dev,case_name=concatenation,cpu_model=Intel\\ Core\\ i7-7700K,data_row=12876363564,gcc=10.0.3,host=myhostname1,platform=Ubuntu\\ 20.04,test_name=tst_QString crashed=false,value=188423.0,iterations=200i,integration_id=\"189470895\",sha1=\"69609f0b3575c571fff4564f6f16cbca9c7d81f6\" 1434055562000000000"
            )
        );
        assert!(
            it.next()
                .expect("crash line")
                .contains("test_name=tst_Other crashed=true,value=0.0,iterations=0i")
        );
    }
}
