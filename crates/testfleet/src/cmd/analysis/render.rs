//! The analytics commands' text output: aligned tables and readable numbers
//! (values with their unit, changes as `+12.3 %`).

use testfleet_core::analysis::changes::Step;
use testfleet_core::analysis::{Better, Verdict};
use testfleet_wire::analysis::{
    AckView, ChangeView, CompareRow, CompareStatus, CompareView, RegressionsView, SeriesChanges,
    SeriesPage, SeriesPoints, SeriesView,
};

/// Widest a cell may get; longer text is cut with an ellipsis.
const MAX_CELL: usize = 60;

/// An aligned text table: a header and rows, columns padded to their widest
/// cell, numbers right-aligned; the last column is not padded.
pub struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named `header`; a name ending in `>` is right-aligned (the
    /// `>` is not printed).
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.iter().map(|h| h.trim_end_matches('>')).collect(),
            right: header.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; every cell but the last is cut at 60 characters.
    pub fn push(&mut self, row: Vec<String>) {
        let last = row.len().saturating_sub(1);
        self.rows.push(
            row.into_iter()
                .enumerate()
                .map(|(i, c)| if i == last { c } else { clip(&c) })
                .collect(),
        );
    }

    /// The table, each line starting with `indent`.
    pub fn render(&self, indent: &str) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = indent.to_owned();
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let right = self.right.get(i).copied().unwrap_or(false);
                match (right, i == last) {
                    (true, _) => line.push_str(&format!("{cell:>width$}")),
                    (false, false) => line.push_str(&format!("{cell:<width$}")),
                    (false, true) => line.push_str(cell),
                }
                if i != last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn clip(cell: &str) -> String {
    if cell.chars().count() <= MAX_CELL {
        cell.to_owned()
    } else {
        format!("{}…", cell.chars().take(MAX_CELL - 1).collect::<String>())
    }
}

/// A benchmark as `program::function(data tag)`.
pub fn benchmark(program: &str, function: &str, data_tag: Option<&str>) -> String {
    let mut name = if program.is_empty() {
        function.to_owned()
    } else {
        format!("{program}::{function}")
    };
    if let Some(tag) = data_tag.filter(|t| !t.is_empty()) {
        name.push_str(&format!("({tag})"));
    }
    name
}

/// The short unit names of QtTest's long ones.
fn short_unit(unit: &str) -> &str {
    match unit {
        "msecs" | "msec" => "ms",
        "usecs" | "usec" => "µs",
        "nsecs" | "nsec" => "ns",
        "secs" | "sec" | "seconds" => "s",
        other => other,
    }
}

/// A value to four significant digits (thousands and above without
/// decimals), with its unit.
pub fn value(v: f64, unit: &str) -> String {
    let a = v.abs();
    let number = if !v.is_finite() {
        v.to_string()
    } else if a >= 1000.0 || v == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{v:.3e}")
    };
    let unit = short_unit(unit);
    if unit.is_empty() {
        number
    } else {
        format!("{number} {unit}")
    }
}

/// A percentage with its sign: `+12.3 %`, `-0.4 %`.
pub fn pct(percent: f64) -> String {
    format!("{percent:+.1} %")
}

/// A p-value: three decimals, in scientific notation below 0.001 (change
/// points are reported at p ≤ 1e-6 by default, so the exponent matters).
pub fn p_value(p: f64) -> String {
    if p == 0.0 {
        "0".to_owned()
    } else if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// A sha cut to 10 characters, `-` when unknown.
pub fn sha(sha: Option<&str>) -> String {
    sha.map_or_else(|| "-".to_owned(), |s| s.chars().take(10).collect())
}

fn better(b: Better) -> &'static str {
    match b {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    }
}

/// `up (regression)`, `down (improvement)`.
pub fn direction(step: Step, regression: bool) -> String {
    let step = match step {
        Step::Up => "up",
        Step::Down => "down",
    };
    let meaning = if regression {
        "regression"
    } else {
        "improvement"
    };
    format!("{step} ({meaning})")
}

fn ack_text(ack: Option<&AckView>) -> String {
    match ack {
        None => "-".to_owned(),
        Some(a) => match &a.bug_url {
            Some(url) => format!("{} ({url})", a.note),
            None => a.note.clone(),
        },
    }
}

/// One line naming a series.
pub fn series_title(s: &SeriesView) -> String {
    format!(
        "series {}: {} {} [{}] on {}, {}",
        s.id,
        benchmark(&s.program, &s.function, s.data_tag.as_deref()),
        s.metric,
        short_unit(&s.unit),
        s.host,
        better(s.better)
    )
}

/// `testfleet changes`: the change points as a table. `key` names the first
/// column (`INDEX>`, `POINT>`: right-aligned; `TIME`); `keys` gives its cell
/// per change.
pub fn changes(view: &SeriesChanges, key: &'static str, keys: &[String]) -> String {
    let mut out = String::new();
    if let Some(series) = &view.series {
        out.push_str(&series_title(series));
        out.push('\n');
    }
    if view.changes.is_empty() {
        out.push_str(&format!("no change points in {} points\n", view.points));
        return out;
    }
    out.push_str(&format!(
        "{} change point(s) in {} points\n",
        view.changes.len(),
        view.points
    ));
    let server = view.series.is_some();
    let mut header = vec![key];
    if server {
        header.extend(["AT", "SHA"]);
    }
    header.extend(["BEFORE>", "AFTER>", "CHANGE>", "P>", "DIRECTION"]);
    if server {
        header.push("ACK");
    }
    let mut table = Table::new(&header);
    for (c, k) in view.changes.iter().zip(keys) {
        let mut row = vec![k.clone()];
        if server {
            row.extend([c.at.clone(), sha(c.sha.as_deref())]);
        }
        row.extend([
            value(c.mean_before, &c.unit),
            value(c.mean_after, &c.unit),
            pct(c.change_pct),
            p_value(c.p_value),
            direction(c.step, c.regression),
        ]);
        if server {
            row.push(ack_text(c.ack.as_ref()));
        }
        table.push(row);
    }
    out.push_str(&table.render(""));
    out
}

/// `testfleet series`: a page of series.
pub fn series_page(page: &SeriesPage) -> String {
    if page.series.is_empty() {
        return "no series\n".to_owned();
    }
    let mut table = Table::new(&[
        "ID>",
        "HOST",
        "BENCHMARK",
        "METRIC",
        "POINTS>",
        "LAST>",
        "LAST AT",
    ]);
    for s in &page.series {
        table.push(vec![
            s.id.to_string(),
            s.host.clone(),
            benchmark(&s.program, &s.function, s.data_tag.as_deref()),
            s.metric.clone(),
            s.points.to_string(),
            value(s.last_value, &s.unit),
            s.last_at.clone(),
        ]);
    }
    let mut out = table.render("");
    if let Some(after) = page.next_after {
        out.push_str(&format!("more: testfleet series --after {after}\n"));
    }
    out
}

/// `testfleet series ID`: what the series is, its noise model, the machines
/// it was measured on and its last points.
pub fn series_points(view: &SeriesPoints) -> String {
    let s = &view.series;
    let mut out = series_title(s);
    out.push_str(&format!(
        "\n{} points from {} to {}\n",
        s.points, s.first_at, s.last_at
    ));
    match &view.noise {
        None => out.push_str("noise: too few points for a model\n"),
        Some(n) => out.push_str(&format!(
            "noise: median {}, spread {} (cv {:.1} %), {} outlier(s) of {}{}; smallest detectable change {:.1} % with {} repetitions per side\n",
            value(n.median, &s.unit),
            value(n.spread, &s.unit),
            n.cv * 100.0,
            n.outliers,
            n.n,
            if n.bimodal { ", two modes" } else { "" },
            n.min_detectable_effect * 100.0,
            n.reference_repetitions
        )),
    }
    if !view.fingerprints.is_empty() {
        out.push_str("machines:\n");
        let mut table = Table::new(&["FROM POINT>", "FINGERPRINT", "MACHINE"]);
        for f in &view.fingerprints {
            let m = &f.machine;
            let parts = [
                m.platform.as_str(),
                m.kernel.as_str(),
                m.arch.as_str(),
                m.cpu_model.as_str(),
                m.compiler.as_str(),
            ];
            let mut machine: Vec<String> = parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| (*p).to_owned())
                .collect();
            if m.cores > 0 {
                machine.push(format!("{} cores", m.cores));
            }
            table.push(vec![
                f.first_index.to_string(),
                f.hash.chars().take(12).collect(),
                machine.join(", "),
            ]);
        }
        out.push_str(&table.render("  "));
    }
    if view.points.is_empty() {
        out.push_str("no points\n");
        return out;
    }
    out.push_str(&format!("last {} point(s):\n", view.points.len()));
    let mut table = Table::new(&["INDEX>", "AT", "VALUE>", "REP>", "SHA", "JOB>", "NOTE"]);
    for p in &view.points {
        table.push(vec![
            p.index.to_string(),
            p.at.clone(),
            value(p.value, &s.unit),
            p.repetition.to_string(),
            sha(p.sha.as_deref()),
            p.job_id.to_string(),
            if p.fingerprint_changed {
                "new machine fingerprint".to_owned()
            } else {
                String::new()
            },
        ]);
    }
    out.push_str(&table.render("  "));
    out
}

/// Job ids as `1,2,3`; a long list as `1,2,3,…,20 (20 jobs)`.
fn ids(ids: &[i64]) -> String {
    let list = |ids: &[i64]| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    match ids {
        [.., last] if ids.len() > 5 => {
            format!("{},…,{last} ({} jobs)", list(&ids[..3]), ids.len())
        }
        _ => list(ids),
    }
}

/// The verdict cell of a comparison row.
fn verdict(row: &CompareRow) -> String {
    match (row.status, &row.comparison) {
        (CompareStatus::New, _) => "new".to_owned(),
        (CompareStatus::Missing, _) => "missing".to_owned(),
        (CompareStatus::Compared, None) => "-".to_owned(),
        (CompareStatus::Compared, Some(c)) => match (c.verdict, c.more_repetitions) {
            (Verdict::Unknown, Some(n)) => format!("UNKNOWN (+{n} reps)"),
            (v, _) => v.as_str().to_ascii_uppercase(),
        },
    }
}

/// `testfleet compare`: the headline counts, then one row per benchmark
/// metric and host, in the server's order.
pub fn compare(view: &CompareView) -> String {
    let c = &view.counts;
    let mut out = format!(
        "job(s) {} against baseline {}: {} slower, {} faster, {} same, {} unknown, {} new, {} missing\n",
        ids(&view.contender_jobs),
        ids(&view.baseline_jobs),
        c.slower,
        c.faster,
        c.same,
        c.unknown,
        c.new,
        c.missing
    );
    if view.rounds > 0 {
        out.push_str(&format!(
            "{} confirmation round(s) re-ran both sides (jobs {})\n",
            view.rounds,
            ids(&view.confirm_jobs)
        ));
    }
    if view.rows.is_empty() {
        out.push_str("no benchmark values in these jobs\n");
        return out;
    }
    let mut table = Table::new(&[
        "BENCHMARK",
        "METRIC",
        "HOST",
        "BASELINE>",
        "CONTENDER>",
        "CHANGE>",
        "95 % CI>",
        "P>",
        "VERDICT",
    ]);
    for row in &view.rows {
        let (base, cont, change, ci, p) = match &row.comparison {
            Some(cmp) => (
                format!(
                    "{} (n={})",
                    value(cmp.baseline.median, &row.unit),
                    cmp.baseline.n
                ),
                format!(
                    "{} (n={})",
                    value(cmp.contender.median, &row.unit),
                    cmp.contender.n
                ),
                pct(cmp.change * 100.0),
                format!(
                    "[{:+.1}, {:+.1}] %",
                    cmp.ci_low * 100.0,
                    cmp.ci_high * 100.0
                ),
                p_value(cmp.p_value),
            ),
            None => Default::default(),
        };
        let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
        table.push(vec![
            benchmark(&row.program, &row.function, row.data_tag.as_deref()),
            row.metric.clone(),
            row.host.clone(),
            dash(base),
            dash(cont),
            dash(change),
            dash(ci),
            dash(p),
            verdict(row),
        ]);
    }
    out.push_str(&table.render(""));
    out
}

/// `testfleet regressions`: one block per test and place in history.
pub fn regressions(view: &RegressionsView) -> String {
    let since = view
        .since
        .as_deref()
        .map(|s| format!(" since {s}"))
        .unwrap_or_default();
    let mut out = format!(
        "{} regression(s){since} across {} series\n",
        view.groups.len(),
        view.series_scanned
    );
    for g in &view.groups {
        out.push_str(&format!(
            "\n{} on {} at {} ({}){}\n",
            benchmark(&g.program, &g.function, g.data_tag.as_deref()),
            g.host,
            sha(g.sha.as_deref()),
            g.at,
            if g.acknowledged { ", acknowledged" } else { "" }
        ));
        out.push_str(&group_changes(&g.changes));
    }
    out
}

fn group_changes(changes: &[ChangeView]) -> String {
    let mut table = Table::new(&[
        "SERIES>", "METRIC", "BEFORE>", "AFTER>", "CHANGE>", "P>", "ACK",
    ]);
    for c in changes {
        table.push(vec![
            c.series_id.to_string(),
            c.metric.clone(),
            value(c.mean_before, &c.unit),
            value(c.mean_after, &c.unit),
            pct(c.change_pct),
            p_value(c.p_value),
            ack_text(c.ack.as_ref()),
        ]);
    }
    table.render("  ")
}

/// `testfleet ack`: what was recorded.
pub fn ack(view: &AckView) -> String {
    let bug = view
        .bug_url
        .as_deref()
        .map(|u| format!("\nbug: {u}"))
        .unwrap_or_default();
    format!(
        "acknowledged the change at {} in series {} (ack {} by {}): {}{bug}\n",
        sha(Some(&view.sha)),
        view.series_id,
        view.id,
        view.by,
        view.note
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_four_significant_digits_and_their_unit() {
        assert_eq!(value(16.3521, "ns"), "16.35 ns");
        assert_eq!(value(0.25, "msecs"), "0.250 ms");
        assert_eq!(value(123_456.7, "instr."), "123457 instr.");
        assert_eq!(value(1.5e-6, ""), "1.500e-6");
        assert_eq!(value(0.0, "ns"), "0 ns");
    }

    #[test]
    fn changes_are_signed_percentages() {
        assert_eq!(pct(12.34), "+12.3 %");
        assert_eq!(pct(-0.44), "-0.4 %");
        assert_eq!(p_value(0.0001), "1.0e-4");
        assert_eq!(p_value(7.086e-7), "7.1e-7");
        assert_eq!(p_value(0.0421), "0.042");
    }

    #[test]
    fn benchmarks_are_named_program_function_tag() {
        assert_eq!(
            benchmark("tst_QString", "concat", Some("64")),
            "tst_QString::concat(64)"
        );
        assert_eq!(benchmark("", "BM_Concat/64", None), "BM_Concat/64");
        assert_eq!(benchmark("p", "f", Some("")), "p::f");
    }

    #[test]
    fn long_job_lists_are_shortened() {
        assert_eq!(ids(&[4, 5]), "4,5");
        assert_eq!(ids(&(1..=20).collect::<Vec<_>>()), "1,2,3,…,20 (20 jobs)");
    }

    #[test]
    fn a_table_aligns_its_columns_and_right_aligns_numbers() {
        let mut t = Table::new(&["NAME", "N>", "NOTE"]);
        t.push(vec!["a".into(), "1".into(), "x".into()]);
        t.push(vec!["longer".into(), "100".into(), String::new()]);
        assert_eq!(
            t.render(""),
            "NAME      N  NOTE\na         1  x\nlonger  100\n"
        );
    }
}
