//! The bot's note: its hidden marker, the start note and the result note
//! (verdict headline, SHAs, counts, a table sorted by severity, errors,
//! unstable benchmarks, links), rendered as Markdown that GitLab and GitHub
//! both render. Pure: no IO.

use std::fmt::Write as _;

use testfleet_core::analysis::Verdict;
use testfleet_wire::analysis::{CompareRow, CompareStatus, CompareView};

/// A side's robust coefficient of variation above which a benchmark is
/// listed as unstable.
const UNSTABLE_CV: f64 = 0.10;

/// What every note of one request says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteContext {
    /// The project as configured (id or path).
    pub project: String,
    pub iid: u64,
    /// What the host calls a request (`merge request`, `pull request`).
    pub noun: &'static str,
    pub head_sha: String,
    /// The baseline commit, once known.
    pub base_sha: Option<String>,
    /// The coordinator's dashboard URL as users reach it (no trailing `/`).
    pub dashboard_url: String,
    /// The request's jobs (none before they are submitted).
    pub jobs: Vec<NoteJob>,
}

/// One job of a request, as a note links it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteJob {
    /// The head's (else the baseline's).
    pub head: bool,
    pub id: i64,
    /// Its stored results are reused (an earlier run of the same sha).
    pub reused: bool,
}

/// The hidden marker that says which request and head sha the bot's note
/// is about: `<!-- testfleet-bot:<project>!<iid>@<sha> -->`.
pub fn marker(project: &str, iid: u64, sha: &str) -> String {
    format!("{}{sha} -->", marker_prefix(project, iid))
}

/// What every note of the bot on one request starts with, whatever the
/// sha: the bot keeps one note per request and edits it, across pushes.
pub fn marker_prefix(project: &str, iid: u64) -> String {
    format!("<!-- testfleet-bot:{project}!{iid}@")
}

impl NoteContext {
    fn marker(&self) -> String {
        marker(&self.project, self.iid, &self.head_sha)
    }

    fn job_link(&self, id: i64) -> String {
        format!("[job {id}]({}/jobs/{id})", self.dashboard_url)
    }

    fn shas(&self, out: &mut String) {
        let _ = writeln!(out, "- head: `{}`", self.head_sha);
        if let Some(base) = &self.base_sha {
            let _ = writeln!(
                out,
                "- baseline: `{base}` (the merge base of the head with the target branch)"
            );
        }
    }

    fn jobs(&self, out: &mut String) {
        let links: Vec<String> = self
            .jobs
            .iter()
            .map(|j| {
                let side = if j.head { "head" } else { "baseline" };
                let reused = if j.reused {
                    " (stored results of this sha, reused)"
                } else {
                    ""
                };
                format!("{side}: {}{reused}", self.job_link(j.id))
            })
            .collect();
        if !links.is_empty() {
            let _ = writeln!(out, "- jobs: {}", links.join(", "));
        }
    }

    fn side_ids(&self, head: bool) -> String {
        let ids: Vec<String> = self
            .jobs
            .iter()
            .filter(|j| j.head == head)
            .map(|j| j.id.to_string())
            .collect();
        ids.join(",")
    }
}

/// The note posted when the run starts.
pub fn start_note(ctx: &NoteContext) -> String {
    let title = if ctx.jobs.is_empty() {
        "Benchmarks starting"
    } else {
        "Benchmarks running"
    };
    let mut out = format!("{}\n### {title}\n\n", ctx.marker());
    ctx.shas(&mut out);
    ctx.jobs(&mut out);
    let _ = writeln!(
        out,
        "\nThis note is updated with the verdicts when the run ends; the label is then removed from the {}.",
        ctx.noun
    );
    out
}

/// The note of a run that could not be compared.
pub fn failed_note(ctx: &NoteContext, reason: &str) -> String {
    let mut out = format!("{}\n### Benchmarks failed\n\n", ctx.marker());
    let _ = writeln!(out, "**Reason:** {}\n", one_line(reason));
    ctx.shas(&mut out);
    ctx.jobs(&mut out);
    out
}

/// The headline of a comparison's verdicts.
/// Undecided benchmarks are said: with none decided, the run is
/// inconclusive rather than unchanged.
pub fn headline(view: &CompareView) -> String {
    let c = &view.counts;
    let changed = match (c.slower, c.faster) {
        (0, 0) if c.same == 0 && c.unknown == 0 => return "no benchmark compared".to_owned(),
        (0, 0) if c.same == 0 => return format!("inconclusive: {} unknown", c.unknown),
        (0, 0) => "no significant change".to_owned(),
        (s, 0) => format!("{s} slower"),
        (0, f) => format!("{f} faster"),
        (s, f) => format!("{s} slower, {f} faster"),
    };
    if c.unknown > 0 {
        format!("{changed} ({} unknown)", c.unknown)
    } else {
        changed
    }
}

/// The note that replaces the start note when the run ends. `errors` are
/// the jobs' failures (a task that did not pass), one line each.
pub fn result_note(ctx: &NoteContext, view: &CompareView, errors: &[String]) -> String {
    let mut out = format!("{}\n### Benchmarks: {}\n\n", ctx.marker(), headline(view));
    ctx.shas(&mut out);
    ctx.jobs(&mut out);
    if view.rounds > 0 {
        let _ = writeln!(
            out,
            "- confirmation: {} round{} (the tasks of undecided benchmarks ran again on both sides)",
            view.rounds,
            if view.rounds == 1 { "" } else { "s" }
        );
    }
    let c = &view.counts;
    let _ = writeln!(
        out,
        "\n**{}** faster · **{}** slower · **{}** same · **{}** unknown · **{}** new · **{}** missing\n",
        c.faster, c.slower, c.same, c.unknown, c.new, c.missing
    );
    if !view.rows.is_empty() {
        out.push_str("| benchmark | host | baseline | head | change % | 95 % CI | verdict |\n");
        out.push_str("|---|---|---:|---:|---:|---|---|\n");
        // The analytics service sorts rows by severity already.
        for row in &view.rows {
            table_row(&mut out, row);
        }
    }
    out.push_str("\n#### Errors\n\n");
    if errors.is_empty() {
        out.push_str("None.\n");
    } else {
        for e in errors {
            let _ = writeln!(out, "- {}", one_line(e));
        }
    }
    out.push_str("\n#### Unstable benchmarks\n\n");
    let unstable: Vec<&CompareRow> = view.rows.iter().filter(|r| is_unstable(r)).collect();
    if unstable.is_empty() {
        out.push_str("None.\n");
    } else {
        for row in unstable {
            let reason = match &row.comparison {
                Some(c) if c.verdict == Verdict::Unknown => one_line(&c.reason),
                Some(c) => format!(
                    "run-to-run variation {:.1} % (baseline) / {:.1} % (head)",
                    c.baseline.cv * 100.0,
                    c.contender.cv * 100.0
                ),
                None => String::new(),
            };
            let _ = writeln!(out, "- `{}` on {}: {reason}", name(row), row.host);
        }
    }
    let (base, head) = (ctx.side_ids(false), ctx.side_ids(true));
    if !base.is_empty() && !head.is_empty() {
        let _ = writeln!(
            out,
            "\n[Plots and details]({}/compare?baseline={base}&contender={head})",
            ctx.dashboard_url
        );
    }
    out
}

fn is_unstable(row: &CompareRow) -> bool {
    row.comparison.as_ref().is_some_and(|c| {
        c.verdict == Verdict::Unknown || c.baseline.cv > UNSTABLE_CV || c.contender.cv > UNSTABLE_CV
    })
}

fn name(row: &CompareRow) -> String {
    let mut n = format!("{}::{}", row.program, row.function);
    if let Some(tag) = &row.data_tag {
        let _ = write!(n, "({tag})");
    }
    if !row.metric.is_empty() {
        let _ = write!(n, " [{}]", row.metric);
    }
    n
}

fn table_row(out: &mut String, row: &CompareRow) {
    let unit = &row.unit;
    let (base, head, change, ci, verdict) = match (&row.comparison, row.status) {
        (Some(c), _) => (
            format!("{} {unit}", number(c.baseline.median)),
            format!("{} {unit}", number(c.contender.median)),
            format!("{:+.2}", c.change * 100.0),
            format!("[{:+.2}, {:+.2}]", c.ci_low * 100.0, c.ci_high * 100.0),
            verdict_word(c.verdict).to_owned(),
        ),
        (None, CompareStatus::New) => (dash(), dash(), dash(), dash(), "new".to_owned()),
        (None, CompareStatus::Missing) => (dash(), dash(), dash(), dash(), "missing".to_owned()),
        (None, CompareStatus::Compared) => (dash(), dash(), dash(), dash(), "unknown".to_owned()),
    };
    let _ = writeln!(
        out,
        "| `{}` | {} | {base} | {head} | {change} | {ci} | {verdict} |",
        cell(&name(row)),
        cell(&row.host)
    );
}

fn dash() -> String {
    "–".to_owned()
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Faster => "**faster**",
        Verdict::Slower => "**slower**",
        Verdict::Same => "same",
        Verdict::Unknown => "unknown",
    }
}

fn number(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// A table cell: no pipe or newline breaks the table.
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_core::analysis::Better;
    use testfleet_core::analysis::compare::{Comparison, SampleSummary};
    use testfleet_wire::analysis::VerdictCounts;

    fn ctx() -> NoteContext {
        NoteContext {
            project: "group/project".into(),
            iid: 3,
            noun: "merge request",
            head_sha: "hhh".into(),
            base_sha: Some("bbb".into()),
            dashboard_url: "http://tf".into(),
            jobs: vec![
                NoteJob {
                    head: true,
                    id: 8,
                    reused: false,
                },
                NoteJob {
                    head: false,
                    id: 7,
                    reused: true,
                },
            ],
        }
    }

    fn sample(median: f64, cv: f64) -> SampleSummary {
        SampleSummary {
            n: 5,
            median,
            mean: median,
            min: median,
            max: median,
            cv,
        }
    }

    fn row(function: &str, verdict: Option<Verdict>, cv: f64) -> CompareRow {
        CompareRow {
            host: "h1".into(),
            program: "tst_bench".into(),
            function: function.into(),
            data_tag: None,
            metric: "WalltimeMilliseconds".into(),
            unit: "ms".into(),
            better: Better::Lower,
            status: if verdict.is_some() {
                CompareStatus::Compared
            } else {
                CompareStatus::New
            },
            comparison: verdict.map(|v| Comparison {
                baseline: sample(10.0, cv),
                contender: sample(12.0, cv),
                change: 0.2,
                ci_low: 0.1,
                ci_high: 0.3,
                p_value: 0.0001,
                verdict: v,
                more_repetitions: None,
                reason: "a reason\nover lines".into(),
            }),
            series_id: Some(1),
        }
    }

    fn view(rows: Vec<CompareRow>, counts: VerdictCounts) -> CompareView {
        CompareView {
            baseline_jobs: vec![7],
            contender_jobs: vec![8],
            counts,
            rows,
            rounds: 0,
            confirm_jobs: Vec::new(),
        }
    }

    #[test]
    fn every_note_starts_with_its_marker() {
        let m = marker("group/project", 3, "hhh");
        assert_eq!(m, "<!-- testfleet-bot:group/project!3@hhh -->");
        assert!(m.starts_with(&marker_prefix("group/project", 3)));
        assert!(!m.starts_with(&marker_prefix("group/project", 33)));
        assert!(start_note(&ctx()).starts_with(&m));
        assert!(failed_note(&ctx(), "x").starts_with(&m));
        let v = view(Vec::new(), VerdictCounts::default());
        assert!(result_note(&ctx(), &v, &[]).starts_with(&m));
    }

    #[test]
    fn the_start_note_links_the_jobs() {
        let n = start_note(&ctx());
        assert!(n.contains("head: [job 8](http://tf/jobs/8)"), "{n}");
        assert!(
            n.contains("baseline: [job 7](http://tf/jobs/7) (stored results of this sha, reused)"),
            "{n}"
        );
        assert!(n.contains("`bbb` (the merge base"), "{n}");
        let mut queued = ctx();
        queued.jobs.clear();
        let n = start_note(&queued);
        assert!(n.contains("### Benchmarks starting"), "{n}");
        assert!(!n.contains("jobs:"), "{n}");
    }

    #[test]
    fn nothing_slower_or_faster_is_no_significant_change() {
        let counts = VerdictCounts {
            same: 2,
            ..VerdictCounts::default()
        };
        let v = view(
            vec![
                row("a", Some(Verdict::Same), 0.01),
                row("b", Some(Verdict::Same), 0.01),
            ],
            counts,
        );
        assert_eq!(headline(&v), "no significant change");
        let mut some_unknown = v.clone();
        some_unknown.counts.unknown = 1;
        assert_eq!(headline(&some_unknown), "no significant change (1 unknown)");
        some_unknown.counts.same = 0;
        assert_eq!(headline(&some_unknown), "inconclusive: 1 unknown");
        some_unknown.counts.slower = 2;
        assert_eq!(headline(&some_unknown), "2 slower (1 unknown)");
        let n = result_note(&ctx(), &v, &[]);
        assert!(n.contains("### Benchmarks: no significant change"), "{n}");
        assert!(
            n.contains("**0** faster · **0** slower · **2** same"),
            "{n}"
        );
        assert!(n.contains("#### Unstable benchmarks\n\nNone."), "{n}");
    }

    #[test]
    fn the_result_note_has_the_table_errors_and_unstable_sections() {
        let counts = VerdictCounts {
            slower: 1,
            unknown: 1,
            new: 1,
            ..VerdictCounts::default()
        };
        let v = view(
            vec![
                row("slow", Some(Verdict::Slower), 0.01),
                row("noisy", Some(Verdict::Unknown), 0.3),
                row("fresh", None, 0.0),
            ],
            counts,
        );
        let n = result_note(&ctx(), &v, &["task bench on h2: failed | build".into()]);
        assert!(n.contains("### Benchmarks: 1 slower"), "{n}");
        assert!(
            n.contains("| `tst_bench::slow [WalltimeMilliseconds]` | h1 | 10.000 ms | 12.000 ms | +20.00 | [+10.00, +30.00] | **slower** |"),
            "{n}"
        );
        assert!(n.contains("| new |"), "{n}");
        assert!(n.contains("- task bench on h2: failed | build"), "{n}");
        assert!(
            n.contains("- `tst_bench::noisy [WalltimeMilliseconds]` on h1: a reason over lines"),
            "{n}"
        );
        assert!(
            n.contains("(http://tf/compare?baseline=7&contender=8)"),
            "{n}"
        );
        let slow = n.find("::slow").unwrap_or(usize::MAX);
        let noisy = n.find("::noisy").unwrap_or(0);
        assert!(slow < noisy, "rows keep the severity order");
    }
}
