//! `testfleet bench`: the load test's report as a table, or as JSON with
//! `--json` (as every read command does).

use anyhow::{Context, Result, bail};
use testfleet_loadgen::{BenchReport, CompareReport, RunReport, SizesReport};

use crate::cli::BenchArgs;
use crate::exit;

/// `server` is the global `--server`: one URL or a comma-separated list.
pub async fn run(args: BenchArgs, server: Option<String>) -> Result<u8> {
    let servers: Vec<String> = server
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !servers.is_empty() && !args.coordinators.is_empty() {
        bail!("give either --server or --coordinators, not both");
    }
    let server_program = if args.coordinators.iter().any(|&n| n > 0) {
        Some(std::env::current_exe().context("failed to find the testfleet binary to spawn")?)
    } else {
        None
    };
    let config = testfleet_loadgen::BenchConfig {
        server: servers,
        coordinators: args.coordinators.first().copied().unwrap_or(0),
        server_program,
        storm: args.storm,
        agents: args.agents.first().copied().unwrap_or(0),
        tasks: args.tasks,
        workload: args.workload,
        seed: args.seed,
        policy_compare: args.policy_compare,
        secret: args.secret,
        timeout: args.timeout.into(),
        batch: args.batch,
        progress: true,
        status_requests: true,
        database: args
            .database
            .as_deref()
            .map(str::parse::<testfleet_store::DatabaseUrl>)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--database: {e}"))?,
        report_every: args.report_every,
        report_cases: args.report_cases,
    };
    let several = args.agents.len() > 1 || args.coordinators.len() > 1;
    let bench = async {
        if several {
            testfleet_loadgen::run_sizes(&config, &args.agents, &args.coordinators)
                .await
                .map(BenchReport::Sizes)
        } else {
            testfleet_loadgen::run(config).await
        }
    };
    // Ctrl-C drops the bench, which kills the coordinators it spawned.
    let report = tokio::select! {
        report = bench => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out!("{}", render(&report))?;
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::JOB_FAILED
    })
}

/// The report as text: one block per run, then the verdict.
pub fn render(report: &BenchReport) -> String {
    match report {
        BenchReport::Single(r) => {
            let mut out = render_run(r);
            out.push_str(&verdict(r.is_clean()));
            out
        }
        BenchReport::Compare(c) => render_compare(c),
        BenchReport::Sizes(s) => render_sizes(s),
    }
}

fn render_sizes(s: &SizesReport) -> String {
    let mut out = format!(
        "fleet sizes, {} tasks each
\n",
        s.tasks
    );
    out.push_str(&format!(
        "{:>12} {:>7} {:>12} {:>9}  {}\n",
        "coordinators", "agents", "tasks/s", "vs first", "clean"
    ));
    for r in &s.runs {
        let coordinators = match r.coordinators {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        let tps = r
            .tasks_per_second
            .map_or_else(|| "failed".to_owned(), |t| format!("{t:.1}"));
        let ratio = r
            .ratio_to_first
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let clean = match &r.report {
            Some(report) if report.is_clean() => "yes",
            _ => "NO",
        };
        out.push_str(&format!(
            "{coordinators:>12} {:>7} {tps:>12} {ratio:>9}  {clean}\n",
            r.agents
        ));
    }
    for r in &s.runs {
        out.push_str(&format!(
            "\n== {} agents, {}\n",
            r.agents,
            match r.coordinators {
                0 => "coordinator in process or given".to_owned(),
                n => format!("{n} spawned coordinator(s)"),
            }
        ));
        if let Some(report) = &r.report {
            out.push_str(&render_run(report));
        }
        if let Some(error) = &r.error {
            out.push_str(&format!("{:<22} {error}\n", "failed"));
        }
    }
    out.push('\n');
    out.push_str(&verdict(s.is_clean()));
    out
}

fn render_compare(c: &CompareReport) -> String {
    let d = &c.distribution;
    let mut out = format!(
        "policy comparison: {} agents, {} tasks, {} workload (seed {}; Pareto alpha {}, {}–{} ms); lower bound {:.1} s\n",
        c.agents, c.tasks, c.workload, c.seed, d.alpha, d.min_ms, d.max_ms, c.lower_bound_s
    );
    out.push_str("\n== random submission order\n");
    out.push_str(&render_run(&c.fifo));
    out.push_str("\n== longest first\n");
    out.push_str(&render_run(&c.longest_first_submit_order));
    out.push_str(&format!(
        "\nlost {}, duplicated {} (both runs)\n",
        c.lost, c.duplicated
    ));
    out.push_str(&verdict(
        c.fifo.is_clean() && c.longest_first_submit_order.is_clean(),
    ));
    out
}

fn render_run(r: &RunReport) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| out.push_str(&format!("{label:<22} {value}\n"));
    row(
        "run",
        format!(
            "{} agents, {} tasks, {} workload, seed {}, server {}",
            r.agents, r.tasks, r.workload, r.seed, r.server
        ),
    );
    row("throughput", format!("{:.1} tasks/s", r.tasks_per_second));
    let pct = |p: &testfleet_loadgen::Percentiles| {
        format!(
            "p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
            p.p50, p.p99, p.max
        )
    };
    row("submit to start", pct(&r.submit_to_start_ms));
    row("fetch to work", pct(&r.fetch_to_work_ms));
    if r.big_reports > 0 {
        row("large reports", format!("{} finished", r.big_reports));
    }
    row("finish overhead", pct(&r.start_to_finish_overhead_ms));
    row(
        "makespan",
        format!(
            "{:.2} s (lower bound {:.2} s{})",
            r.makespan_s,
            r.lower_bound_s,
            r.makespan_ratio
                .map(|x| format!(", ratio {x:.2}"))
                .unwrap_or_default()
        ),
    );
    row(
        "work",
        format!(
            "{:.1} s in all, longest task {:.2} s, submitted in {:.2} s",
            r.total_work_s, r.longest_task_s, r.submit_s
        ),
    );
    row(
        "tasks",
        format!(
            "{} finished, {} lost, {} not submitted, {} duplicated ({} extra deliveries, {} foreign)",
            r.finished,
            r.lost,
            r.not_submitted,
            r.duplicated,
            r.duplicate_deliveries,
            r.foreign_deliveries
        ),
    );
    row(
        "errors",
        format!(
            "{} report errors, {} disconnects ({} reconnected), {} retried connections, {} protocol violations{}",
            r.report_errors,
            r.disconnects,
            r.reconnections,
            r.connect_retries,
            r.protocol_violations,
            if r.timed_out {
                "; the run timed out"
            } else {
                ""
            }
        ),
    );
    let known = |v: Option<String>| v.unwrap_or_else(|| "unknown".to_owned());
    row(
        "coordinator",
        format!(
            "{} not passed, {} extra attempts",
            known(r.server_not_passed.map(|n| n.to_string())),
            known(r.server_extra_attempts.map(|n| n.to_string()))
        ),
    );
    if let Some(f) = &r.fleet {
        row(
            "coordinators",
            format!(
                "{} on {}{}; memory per agent {}",
                f.coordinators.len(),
                f.store,
                if f.cluster { ", cluster" } else { "" },
                f.memory_per_agent_kib
                    .map_or_else(|| "unknown".to_owned(), |k| format!("{k:.1} KiB"))
            ),
        );
        for c in &f.coordinators {
            let kib = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |k| format!("{k} KiB"));
            row(
                "  coordinator",
                format!(
                    "{} (pid {}): {} agents, RSS {} idle → {} connected, {} ERROR / {} WARN lines",
                    c.url,
                    c.pid,
                    c.agents,
                    kib(c.rss_idle_kib),
                    kib(c.rss_connected_kib),
                    c.error_lines,
                    c.warn_lines
                ),
            );
        }
        row(
            "log lines",
            format!("{} ERROR, {} WARN", f.error_lines, f.warn_lines),
        );
        for line in &f.log_examples {
            row("  e.g.", line.clone());
        }
    }
    if let Some(s) = &r.storm {
        let secs = |v: Option<f64>| {
            v.map_or_else(|| "not within the run".to_owned(), |s| format!("{s:.2} s"))
        };
        row(
            "storm",
            format!(
                "{} agents left in {} ({} retired), reconnected in {} ({} online, {} retried connections): {}",
                s.agents,
                secs(s.leave_s),
                s.retired,
                secs(s.rejoin_s),
                s.online,
                s.connect_retries,
                if s.complete {
                    "all recorded"
                } else {
                    "NOT all recorded"
                }
            ),
        );
    }
    for (reason, n) in &r.server_retry_reasons {
        row("  retried because", format!("{reason} ({n})"));
    }
    for example in r.violation_examples.iter().chain(&r.server_retry_examples) {
        row("  e.g.", example.clone());
    }
    out
}

fn verdict(clean: bool) -> String {
    if clean {
        "verdict: clean (no task lost or duplicated, no errors)\n".to_owned()
    } else {
        "verdict: NOT clean (see lost, duplicated and errors above)\n".to_owned()
    }
}
