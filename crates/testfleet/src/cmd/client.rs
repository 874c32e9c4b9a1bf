//! Client commands: submit, watch, jobs, show, cancel, logs, agents.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use testfleet_client::ApiClient;
use testfleet_core::{JobState, TaskState};
use testfleet_wire::api::{JobView, StatsView, TaskView};

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
                    println!("{}", serde_json::to_string_pretty(&view)?);
                } else {
                    println!(
                        "submitted job {} ({} task(s)); follow it with: testfleet watch {}",
                        view.id,
                        view.tasks.len(),
                        view.id
                    );
                }
                return Ok(exit::OK);
            }
            if !json {
                println!("submitted job {} ({} task(s))", view.id, view.tasks.len());
            }
            watch(api, view.id, json).await
        }
        Command::Watch { job, json } => watch(api, job, json).await,
        Command::Jobs { limit, state, json } => {
            let jobs = api.jobs(limit, state.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else if jobs.is_empty() {
                println!("no jobs");
            } else {
                println!(
                    "{:>6}  {:<10} {:>7}  {:<24} NAME",
                    "ID", "STATE", "TASKS", "CREATED"
                );
                for j in jobs {
                    let done = j.tasks.iter().filter(|t| t.state.is_terminal()).count();
                    println!(
                        "{:>6}  {:<10} {:>3}/{:<3}  {:<24} {}",
                        j.id,
                        j.state,
                        done,
                        j.tasks.len(),
                        j.created_at,
                        j.name
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Show { job, json } => {
            let view = api.job(job).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", render_job(&view));
            }
            Ok(exit::OK)
        }
        Command::Cancel { job, json } => {
            let view = api.cancel(job).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("job {} is {}", view.id, view.state);
            }
            Ok(exit::OK)
        }
        Command::Logs { task, follow, json } => logs(api, task, follow, json).await,
        Command::Report { job, format } => {
            print!("{}", api.job_report(job, &format).await?);
            Ok(exit::OK)
        }
        Command::Exporters => {
            println!("{}", serde_json::to_string_pretty(&api.exporters().await?)?);
            Ok(exit::OK)
        }
        Command::Why { task, json } => {
            let why = api.why(task).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&why)?);
            } else {
                println!("task {task}:");
                for reason in why["reasons"].as_array().into_iter().flatten() {
                    println!("  - {}", reason.as_str().unwrap_or_default());
                }
            }
            Ok(exit::OK)
        }
        Command::Stats { json } => {
            let stats = api.stats().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", render_stats(&stats));
            }
            Ok(exit::OK)
        }
        Command::Summary { attempt } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&api.attempt_summary(attempt).await?)?
            );
            Ok(exit::OK)
        }
        Command::Agents { json, .. } => {
            let agents = api.agents().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else if agents.is_empty() {
                println!("no agents have connected yet");
            } else {
                println!("{:<24} {:<8} {:<10} LABELS", "HOST", "ONLINE", "STATUS");
                for a in agents {
                    let labels: Vec<String> =
                        a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:<24} {:<8} {:<10} {}",
                        a.hostname,
                        if a.online { "yes" } else { "no" },
                        a.status.as_deref().unwrap_or("-"),
                        labels.join(",")
                    );
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
                println!("{:<28} {line}", t.name);
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
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        print!("\n{}", render_job(&job));
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
    let mut stdout = std::io::stdout();
    loop {
        let slice = api.task_log(task, offset).await?;
        if json {
            println!("{}", serde_json::to_string(&slice)?);
        } else {
            stdout.write_all(slice.data.as_bytes())?;
            stdout.flush()?;
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
