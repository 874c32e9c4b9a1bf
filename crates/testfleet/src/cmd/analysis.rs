//! The analytics commands (SPEC §11): `changes` (a CSV file here, or a
//! stored series), `series`, `compare`, `regressions` and `ack`. Each prints
//! a table, or the REST answer's JSON with `--json`.

mod render;

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use testfleet_client::{ApiClient, SeriesQuery};
use testfleet_core::analysis::Better;
use testfleet_core::analysis::changes::{ChangeOptions, ChangePoint, detect};
use testfleet_core::analysis::csv::{CsvKey, CsvSeries, parse_csv_series};
use testfleet_core::time_fmt::format_millis;
use testfleet_wire::analysis::{AckRequest, ChangeView, CompareRequest, SeriesChanges};

use crate::cli::{BetterArg, Command};
use crate::exit;

/// `testfleet changes FILE.csv`: the change points of a series read from a
/// CSV file (`-`: standard input), found here without a coordinator.
pub fn changes_file(path: &Path, better: BetterArg, json: bool) -> Result<u8> {
    let (name, text) = read_input(path)?;
    let csv = parse_csv_series(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let values: Vec<f64> = csv.points.iter().map(|(_, v)| *v).collect();
    let found = detect(&values, &ChangeOptions::default());
    let better = match better {
        BetterArg::Lower => Better::Lower,
        BetterArg::Higher => Better::Higher,
    };
    let view = SeriesChanges {
        series: None,
        points: values.len() as u64,
        changes: found
            .iter()
            .map(|c| local_change(c, &csv, better))
            .collect(),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        // The first column is the file's own: its index, its time, or (for
        // a `value` file) the point's position.
        let (column, keys): (&'static str, Vec<String>) = match csv.key {
            CsvKey::Time => ("TIME", view.changes.iter().map(|c| c.at.clone()).collect()),
            CsvKey::Index => (
                "INDEX>",
                found
                    .iter()
                    .map(|c| match csv.points.get(c.index) {
                        Some((Some(i), _)) => i.to_string(),
                        _ => c.index.to_string(),
                    })
                    .collect(),
            ),
            CsvKey::None => (
                "POINT>",
                view.changes.iter().map(|c| c.index.to_string()).collect(),
            ),
        };
        out!("{}", render::changes(&view, column, &keys))?;
    }
    Ok(exit::OK)
}

/// The file's text and the name errors call it by.
fn read_input(path: &Path) -> Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read standard input")?;
        Ok(("standard input".to_owned(), text))
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        Ok((path.display().to_string(), text))
    }
}

/// A change point of a CSV series as `POST /api/v1/analysis/changes`
/// answers it: `index` is the point's position (0 = the file's first
/// point), `at` its time (RFC 3339) for a `time,value` CSV and empty
/// otherwise.
fn local_change(c: &ChangePoint, csv: &CsvSeries, better: Better) -> ChangeView {
    let at = match (csv.key, csv.points.get(c.index)) {
        (CsvKey::Time, Some((Some(ms), _))) => format_millis(*ms),
        _ => String::new(),
    };
    let change_pct = c.change * 100.0;
    ChangeView {
        series_id: 0,
        metric: String::new(),
        unit: String::new(),
        index: c.index as u64,
        at,
        sha: None,
        mean_before: c.mean_before,
        mean_after: c.mean_after,
        // JSON has no infinity: a change from a zero mean reads as 0.
        change_pct: if change_pct.is_finite() {
            change_pct
        } else {
            0.0
        },
        p_value: c.p_value,
        step: c.step,
        regression: c.is_regression(better),
        ack: None,
    }
}

/// The analytics commands that ask the coordinator.
pub async fn run(api: &ApiClient, command: Command) -> Result<u8> {
    match command {
        Command::Changes {
            series: Some(id),
            json,
            ..
        } => {
            let view = api.series_changes(id).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                let keys: Vec<String> = view.changes.iter().map(|c| c.index.to_string()).collect();
                out!("{}", render::changes(&view, "INDEX>", &keys))?;
            }
            Ok(exit::OK)
        }
        Command::Series {
            id: Some(id),
            points,
            json,
            ..
        } => {
            let view = api.series_points(id, None, Some(points)).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                out!("{}", render::series_points(&view))?;
            }
            Ok(exit::OK)
        }
        Command::Series {
            id: None,
            host,
            program,
            function,
            metric,
            search,
            after,
            limit,
            json,
            ..
        } => {
            let query = SeriesQuery {
                host,
                program,
                function,
                metric,
                search,
                after,
                limit: Some(limit),
            };
            let page = api.series(&query).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&page)?)?;
            } else {
                out!("{}", render::series_page(&page))?;
            }
            Ok(exit::OK)
        }
        Command::Compare {
            baseline,
            contender,
            confirm,
            max_rounds,
            fail_on_regression,
            json,
        } => {
            let view = if confirm {
                if !json {
                    eprintln!(
                        "comparing; UNKNOWN verdicts re-run both sides (up to {} round(s)), which takes as long as the jobs do…",
                        max_rounds.map_or_else(|| "3".to_owned(), |n| n.to_string())
                    );
                }
                api.compare_confirm(&CompareRequest {
                    baseline: baseline.0,
                    contender: contender.0,
                    confirm: true,
                    max_rounds,
                })
                .await?
            } else {
                api.compare(&baseline.0, &contender.0).await?
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                out!("{}", render::compare(&view))?;
            }
            Ok(if fail_on_regression && view.counts.slower > 0 {
                exit::JOB_FAILED
            } else {
                exit::OK
            })
        }
        Command::Regressions { since, limit, json } => {
            let view = api.regressions(since.as_deref(), limit).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                out!("{}", render::regressions(&view))?;
            }
            Ok(exit::OK)
        }
        Command::Ack {
            series,
            sha,
            note,
            bug,
            json,
        } => {
            let view = api
                .ack(
                    series,
                    &AckRequest {
                        sha,
                        note,
                        bug_url: bug,
                    },
                )
                .await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&view)?)?;
            } else {
                out!("{}", render::ack(&view))?;
            }
            Ok(exit::OK)
        }
        _ => Err(anyhow::anyhow!("this command is not an analytics command")),
    }
}

#[cfg(test)]
mod tests {
    use testfleet_core::analysis::changes::Step;

    use super::*;

    fn point(index: usize) -> ChangePoint {
        ChangePoint {
            index,
            mean_before: 100.0,
            mean_after: 110.0,
            change: 0.1,
            p_value: 0.0001,
            step: Step::Up,
        }
    }

    #[test]
    fn a_csv_change_is_placed_by_position_and_time() {
        let csv = CsvSeries {
            key: CsvKey::Index,
            points: vec![(Some(5), 100.0), (Some(6), 110.0)],
        };
        let c = local_change(&point(1), &csv, Better::Lower);
        assert_eq!((c.index, c.at.as_str()), (1, ""));
        assert!(c.regression);
        assert!((c.change_pct - 10.0).abs() < 1e-9);

        let csv = CsvSeries {
            key: CsvKey::Time,
            points: vec![
                (Some(1_704_067_200_000), 100.0),
                (Some(1_704_153_600_000), 110.0),
            ],
        };
        let c = local_change(&point(1), &csv, Better::Higher);
        assert_eq!(c.index, 1);
        assert!(c.at.starts_with("2024-01-02T00:00:00"), "{}", c.at);
        assert!(!c.regression, "up is better for a higher-is-better metric");

        let from_zero = ChangePoint {
            mean_before: 0.0,
            change: f64::INFINITY,
            ..point(1)
        };
        assert_eq!(
            local_change(&from_zero, &csv, Better::Lower).change_pct,
            0.0
        );
    }
}
