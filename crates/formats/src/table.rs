//! The human-readable table that `testfleet parse` prints without `--json`.

use testfleet_wire::results::{Metric, Results};

/// Widest a column may get; longer text is cut with an ellipsis so one odd data tag
/// does not push every other column off the screen.
const MAX_COL: usize = 48;

/// Renders suite, case, data tag, outcome, duration and metrics as an aligned table,
/// followed by the counts, crashes and warnings.
pub fn render_table(results: &Results) -> String {
    let header = [
        "SUITE", "CASE", "DATA TAG", "OUTCOME", "DURATION", "METRICS",
    ];
    let mut rows: Vec<[String; 6]> = Vec::new();
    for suite in &results.suites {
        for case in &suite.cases {
            let mut outcome = case.outcome.to_string();
            for (flag, label) in [
                (case.flags.blacklisted, "blacklisted"),
                (case.flags.todo, "todo"),
                (case.flags.flaky, "flaky"),
            ] {
                if flag {
                    outcome.push_str(&format!(" ({label})"));
                }
            }
            rows.push([
                clip(&suite.name),
                clip(&case.name),
                clip(case.data_tag.as_deref().unwrap_or("")),
                outcome,
                case.duration_ms
                    .map(|d| format!("{d:.3} ms"))
                    .unwrap_or_default(),
                case.metrics
                    .iter()
                    .map(metric_text)
                    .collect::<Vec<_>>()
                    .join("; "),
            ]);
        }
    }
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()).take(5) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i < 5 {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header.map(str::to_string));
    for row in &rows {
        push_row(row);
    }
    let c = results.counts();
    out.push_str(&format!(
        "\n{} cases: {} passed, {} failed, {} errors, {} skipped, {} xfail, {} xpass, {} crashed",
        c.total(),
        c.pass,
        c.fail,
        c.error,
        c.skip,
        c.xfail,
        c.xpass,
        c.crash
    ));
    if c.blacklisted > 0 {
        out.push_str(&format!(", {} blacklisted", c.blacklisted));
    }
    if c.flaky > 0 {
        out.push_str(&format!(", {} flaky", c.flaky));
    }
    out.push('\n');
    for crash in &results.crashed {
        out.push_str(&format!(
            "crashed: {}{}\n",
            crash.test_name,
            crash
                .function
                .as_deref()
                .map(|f| format!("::{f}"))
                .unwrap_or_default()
        ));
    }
    if !results.complete {
        out.push_str("incomplete: the input stops before its end\n");
    }
    for w in &results.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

fn metric_text(m: &Metric) -> String {
    let mut s = format!("{} {} ({})", trim_float(m.value), m.unit, m.name);
    if let Some(i) = m.iterations {
        s.push_str(&format!(" x{i}"));
    }
    if let Some(v) = m.variance {
        s.push_str(&format!(" var {}", trim_float(v)));
    }
    s
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn clip(s: &str) -> String {
    // One line per row: control characters would break the layout.
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= MAX_COL {
        s
    } else {
        let mut t: String = s.chars().take(MAX_COL - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_wire::results::{Case, Suite};

    #[test]
    fn renders_rows_and_counts() {
        let mut r = Results::new("qtest-xml");
        let mut s = Suite::new("tst_X");
        let mut c = Case::new("bench", Some("10".into()));
        c.metrics.push(Metric {
            name: "Events".into(),
            unit: "events".into(),
            value: 3.0,
            total: None,
            iterations: Some(15),
            variance: None,
        });
        s.cases.push(c);
        r.suites.push(s);
        let t = render_table(&r);
        assert!(t.contains("tst_X"), "{t}");
        assert!(t.contains("3 events (Events) x15"), "{t}");
        assert!(t.contains("1 cases: 1 passed"), "{t}");
    }
}
