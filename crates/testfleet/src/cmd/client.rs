//! Client commands: submit, watch, jobs, show, cancel, logs, agents.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use testfleet_client::ApiClient;
use testfleet_core::{JobState, TaskState};
use testfleet_wire::api::{
    ExportersView, JobSummary, JobView, RetryView, StatsView, TaskView, WhyView,
};

use crate::cli::Command;
use crate::exit;

pub async fn run(api: &ApiClient, command: Command) -> Result<u8> {
    match command {
        Command::Submit {
            job,
            wait,
            json,
            inputs,
        } => {
            let text = std::fs::read_to_string(&job)
                .with_context(|| format!("failed to read {}", job.display()))?;
            let text = super::artifacts::prepare_inputs(api, &job, text, inputs.as_deref()).await?;
            let view = match api.submit(&text).await {
                Ok(v) => v,
                Err(testfleet_client::ClientError::Api {
                    status: 422,
                    message,
                    ..
                }) => {
                    // Name the file, so the line and field point somewhere.
                    return Err(anyhow::anyhow!("{}: {message}", job.display()));
                }
                Err(e) => return Err(e.into()),
            };
            if !wait {
                if json {
                    outln!("{}", serde_json::to_string_pretty(&view)?)?;
                } else {
                    outln!(
                        "submitted job {} ({} task(s)); follow it with: testfleet watch {}",
                        view.id,
                        view.tasks.len(),
                        view.id
                    )?;
                }
                return Ok(exit::OK);
            }
            if !json {
                outln!("submitted job {} ({} task(s))", view.id, view.tasks.len())?;
            }
            watch(api, view.id, json).await
        }
        Command::Watch { job, json } => watch(api, job, json).await,
        Command::Jobs { limit, state, json } => {
            let jobs = api.jobs(limit, state.as_deref()).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&jobs)?)?;
            } else if jobs.is_empty() {
                outln!("no jobs")?;
            } else {
                out!("{}", render_jobs(&jobs))?;
            }
            Ok(exit::OK)
        }
        Command::Show { job, json } => {
            let view = api.job(job).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                out!("{}", render_job(&view))?;
            }
            Ok(exit::OK)
        }
        Command::Cancel { job, json } => {
            let view = api.cancel(job).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                outln!("job {} is {}", view.id, view.state)?;
            }
            Ok(exit::OK)
        }
        Command::Logs { task, follow, json } => logs(api, task, follow, json).await,
        Command::Report { job, format } => {
            out!("{}", api.job_report(job, &format).await?)?;
            Ok(exit::OK)
        }
        Command::Exporters { json } => {
            let view = api.exporters().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                out!("{}", render_exporters(&view))?;
            }
            Ok(exit::OK)
        }
        Command::Why { task, json } => {
            let why = api.why(task).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&why)?)?;
            } else {
                out!("{}", render_why(&why))?;
            }
            Ok(exit::OK)
        }
        Command::Retry {
            job,
            task,
            wait,
            json,
        } => retry(api, job, task, wait, json).await,
        Command::Stats { json } => {
            let stats = api.stats().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                out!("{}", render_stats(&stats))?;
            }
            Ok(exit::OK)
        }
        Command::Summary { attempt } => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&api.attempt_summary(attempt).await?)?
            )?;
            Ok(exit::OK)
        }
        Command::Agents { json, .. } => {
            let agents = api.agents().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&agents)?)?;
            } else if agents.is_empty() {
                outln!("no agents have connected yet")?;
            } else {
                outln!("{:<24} {:<8} {:<10} LABELS", "HOST", "ONLINE", "STATUS")?;
                for a in agents {
                    let labels: Vec<String> =
                        a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    outln!(
                        "{:<24} {:<8} {:<10} {}",
                        a.hostname,
                        if a.online { "yes" } else { "no" },
                        a.status.as_deref().unwrap_or("-"),
                        labels.join(",")
                    )?;
                }
            }
            Ok(exit::OK)
        }
        // Services and local commands are dispatched in `cmd::run`.
        _ => unreachable_command(),
    }
}

fn unreachable_command() -> Result<u8> {
    Err(anyhow::anyhow!("this command is not a client command"))
}

/// The exit code a finished job maps to.
pub fn job_exit(job: &JobView) -> u8 {
    if job.state == JobState::Passed {
        exit::OK
    } else {
        exit::JOB_FAILED
    }
}

fn task_line(t: &TaskView) -> String {
    let stage = match t.state {
        TaskState::Running => t.stage.clone().unwrap_or_default(),
        _ => String::new(),
    };
    let tests = if t.counts.total() > 0 {
        format!("  {}/{} tests passed", t.counts.pass, t.counts.total())
    } else {
        String::new()
    };
    let detail = t
        .detail_message
        .as_deref()
        .map(|d| format!("  {}", truncate(d, 70)))
        .unwrap_or_default();
    format!(
        "{:<10} {:<10} {}{}{}",
        t.state,
        stage,
        t.agent
            .as_deref()
            .map(|a| format!("on {a}"))
            .unwrap_or_default(),
        tests,
        detail
    )
}

fn truncate(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(max).collect::<String>())
    }
}

/// Follows a job until it ends, with a live line per task on a terminal and
/// one line per change otherwise.
pub async fn watch(api: &ApiClient, job_id: i64, json: bool) -> Result<u8> {
    let tty = std::io::stderr().is_terminal() && !json;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:<28.bold} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<i64, ProgressBar> = HashMap::new();
    let mut last: HashMap<i64, String> = HashMap::new();
    let mut failures = 0;
    let job = loop {
        let job = match api.job(job_id).await {
            Ok(j) => {
                failures = 0;
                j
            }
            Err(e @ testfleet_client::ClientError::Api { .. }) => return Err(e.into()),
            Err(e) => {
                // The coordinator may be restarting; keep following.
                failures += 1;
                if failures == 1 && !json {
                    eprintln!("lost the coordinator ({e}); retrying…");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for t in &job.tasks {
            let line = task_line(t);
            if tty {
                let bar = bars.entry(t.id).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(t.name.clone());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                if t.state.is_terminal() && !bar.is_finished() {
                    bar.finish_with_message(line.clone());
                } else {
                    bar.set_message(line.clone());
                }
            } else if !json && last.get(&t.id) != Some(&line) {
                outln!("{:<28} {line}", t.name)?;
                let _ = std::io::stdout().flush();
            }
            last.insert(t.id, line);
        }
        if job.state.is_terminal() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for bar in bars.values() {
        if !bar.is_finished() {
            bar.finish();
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&job)?)?;
    } else {
        out!("\n{}", render_job(&job))?;
    }
    Ok(job_exit(&job))
}

/// A job as text: header, one line per task, then metrics.
pub fn render_job(job: &JobView) -> String {
    let mut out = format!(
        "job {} `{}`: {}  (queue {}, created {})\n",
        job.id, job.name, job.state, job.queue, job.created_at
    );
    if job.counts.total() > 0 {
        let c = &job.counts;
        out.push_str(&format!(
            "tests: {} passed, {} failed, {} errors, {} skipped, {} xfail, {} xpass, {} crashed\n",
            c.pass, c.fail, c.error, c.skip, c.xfail, c.xpass, c.crash
        ));
    }
    out.push_str(&format!(
        "{:>6}  {:<28} {:<10} {:<12} {:<16} DETAIL\n",
        "TASK", "NAME", "STATE", "OUTCOME", "AGENT"
    ));
    for t in &job.tasks {
        out.push_str(&format!(
            "{:>6}  {:<28} {:<10} {:<12} {:<16} {}\n",
            t.id,
            t.name,
            t.state,
            t.outcome
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into()),
            t.agent.as_deref().unwrap_or("-"),
            truncate(t.detail_message.as_deref().unwrap_or(""), 60)
        ));
    }
    let metrics: Vec<_> = job
        .tasks
        .iter()
        .flat_map(|t| t.metrics.iter().map(move |m| (t, m)))
        .collect();
    if !metrics.is_empty() {
        out.push_str("\nbenchmarks:\n");
        for (t, m) in metrics {
            let name = match &m.data_tag {
                Some(tag) => format!("{}({tag})", m.case),
                None => m.case.clone(),
            };
            out.push_str(&format!(
                "  {:<28} {:<32} {:<14} {:>12.3} {:<8} {}\n",
                t.name,
                name,
                m.name,
                m.value,
                m.unit,
                m.iterations
                    .map(|i| format!("({i} iterations)"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

async fn logs(api: &ApiClient, task: i64, follow: bool, json: bool) -> Result<u8> {
    let mut offset = 0;
    loop {
        let slice = api.task_log(task, offset).await?;
        if json {
            outln!("{}", serde_json::to_string(&slice)?)?;
        } else {
            crate::out::write_bytes(slice.data.as_bytes())?;
        }
        offset = slice.next_offset;
        if !follow || (slice.complete && slice.data.is_empty()) {
            return Ok(exit::OK);
        }
        if slice.data.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The `jobs` table: one line per job with its tasks counted (done of all,
/// failed, retried), from the list's summaries.
fn render_jobs(jobs: &[JobSummary]) -> String {
    let mut out = format!(
        "{:>6}  {:<10} {:>13}  {:>6}  {:>7}  {:<24} NAME\n",
        "ID", "STATE", "TASKS DONE", "FAILED", "RETRIED", "CREATED"
    );
    for j in jobs {
        let o = &j.outcomes;
        let failed = o.failed + o.timed_out + o.stalled + o.crashed + o.infra_error;
        out.push_str(&format!(
            "{:>6}  {:<10} {:>13}  {:>6}  {:>7}  {:<24} {}\n",
            j.id,
            j.state,
            format!("{}/{}", j.tasks.finished(), j.tasks.total),
            failed,
            j.retried,
            j.created_at,
            j.name
        ));
    }
    out
}

/// `testfleet retry JOB` or `testfleet retry --task TASK`.
async fn retry(
    api: &ApiClient,
    job: Option<i64>,
    task: Option<i64>,
    wait: bool,
    json: bool,
) -> Result<u8> {
    let view = match (job, task) {
        (_, Some(task)) => api.retry_task(task).await?,
        (Some(job), None) => api.retry_job(job).await?,
        (None, None) => anyhow::bail!("name a job, or a task with --task"),
    };
    if !wait {
        if json {
            outln!("{}", serde_json::to_string_pretty(&view)?)?;
        } else {
            out!("{}", render_retry(&view))?;
        }
        return Ok(exit::OK);
    }
    if !json {
        out!("{}", render_retry(&view))?;
    }
    watch(api, view.job.id, json).await
}

/// What a retry queued again, by task name.
fn render_retry(view: &RetryView) -> String {
    let names: Vec<String> = view
        .retried
        .iter()
        .map(|id| {
            view.job.tasks.iter().find(|t| t.id == *id).map_or_else(
                || format!("task {id}"),
                |t| format!("{} (task {id})", t.name),
            )
        })
        .collect();
    format!(
        "job {}: {} failed task(s) queued again: {}; follow it with: testfleet watch {}\n",
        view.job.id,
        view.retried.len(),
        names.join(", "),
        view.job.id
    )
}

fn render_why(why: &WhyView) -> String {
    let mut out = format!("task {}:\n", why.task_id);
    if why.reasons.is_empty() {
        out.push_str("  - nothing holds it back; it goes to the next free agent that matches\n");
    }
    for reason in &why.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    out
}

fn render_exporters(view: &ExportersView) -> String {
    if view.exporters.is_empty() {
        return "no exporters configured (see docs/exporters.md)\n".to_owned();
    }
    let mut out = format!(
        "{:<12} {:<10} {:>8} {:>10} {:>8} {:>8}  LAST ERROR\n",
        "NAME", "CONFIGURED", "PENDING", "DELIVERED", "DROPPED", "FAILURES"
    );
    for e in &view.exporters {
        let last_error = match (&e.last_error, &e.last_error_at) {
            (Some(msg), Some(at)) => format!("{at}: {}", truncate(msg, 60)),
            (Some(msg), None) => truncate(msg, 60),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<12} {:<10} {:>8} {:>10} {:>8} {:>8}  {}\n",
            e.name,
            if e.configured { "yes" } else { "no" },
            e.pending,
            e.delivered,
            e.dropped,
            e.failures,
            last_error
        ));
        if let Some(url) = &e.url {
            out.push_str(&format!("{:<12} → {url}\n", ""));
        }
    }
    out
}

fn render_stats(stats: &StatsView) -> String {
    let mut out = String::from("attempts stopped by a threshold:\n");
    if stats.thresholds.is_empty() {
        out.push_str("  none\n");
    }
    // The counts are printed unpadded (`{}`), as they were when they came
    // out of a `serde_json::Value`, whose `Display` ignores the width.
    for r in &stats.thresholds {
        out.push_str(&format!(
            "  {:<18} {} stopped   mean runtime {:>8.1}s   max {:>8.1}s   agent load mean {}\n",
            r.threshold,
            r.stopped_attempts,
            r.mean_runtime_ms.unwrap_or(0.0) / 1000.0,
            r.max_runtime_ms.map_or(0.0, |ms| ms as f64) / 1000.0,
            r.mean_agent_load
                .map_or("-".to_owned(), |l| format!("{l:.2}")),
        ));
    }
    out.push_str("\nruntime history (longest p95 first):\n");
    for r in stats.runtimes.iter().take(20) {
        out.push_str(&format!(
            "  {:<48} {} runs   mean {:>8.1}s   p95 {:>8.1}s\n",
            r.task_key,
            r.runs,
            r.mean_ms / 1000.0,
            r.p95_ms / 1000.0,
        ));
    }
    if !stats.flaky.is_empty() {
        out.push_str("\nflaky tasks:\n");
        for r in &stats.flaky {
            out.push_str(&format!(
                "  {:<48} flaky {} of {} runs\n",
                r.task_key, r.flaky, r.runs
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use testfleet_wire::api::{OutcomeCounts, TaskStateCounts};

    use super::*;

    #[test]
    fn jobs_table_prints_the_summaries_counts() {
        let job = JobSummary {
            id: 7,
            name: "nightly".into(),
            queue: "linux".into(),
            priority: 0,
            state: JobState::Running,
            created_at: "2024-01-01T00:00:00Z".into(),
            finished_at: None,
            integration_id: None,
            tasks: TaskStateCounts {
                total: 20_000,
                queued: 4_000,
                running: 3,
                passed: 15_990,
                failed: 5,
                cancelled: 2,
            },
            outcomes: OutcomeCounts {
                passed: 15_990,
                failed: 6,
                timed_out: 1,
                cancelled: 2,
                ..OutcomeCounts::default()
            },
            attempts: 16_010,
            retried: 4,
        };
        let text = render_jobs(&[job]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("TASKS DONE") && lines[0].contains("RETRIED"));
        let fields: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            fields,
            [
                "7",
                "running",
                "15997/20000",
                "7",
                "4",
                "2024-01-01T00:00:00Z",
                "nightly"
            ]
        );
    }
}
