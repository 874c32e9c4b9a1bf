//! `testfleet store copy`: moves a coordinator's store into another database
//! (SQLite → PostgreSQL, or back) with `testfleet_store::copy_store`; a line
//! per table on stderr as it goes, the verified row counts on stdout.

use std::io::IsTerminal;

use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use testfleet_store::{DatabaseUrl, TableCount, TableProgress, copy_store};

use crate::cli::StoreCommand;
use crate::exit;
use crate::settings::{self, FileConfig};

pub async fn run(action: StoreCommand, file: &FileConfig) -> Result<u8> {
    match action {
        StoreCommand::Copy {
            from,
            data_dir,
            to,
            json,
        } => {
            let from = match from.as_deref() {
                Some(url) => parse("--from", url)?,
                // The coordinator's own store, as `server` would open it.
                None => {
                    let dir = settings::data_dir(data_dir.as_deref(), file);
                    settings::database(None, &dir, file)?
                }
            };
            let to = parse("--to", &to)?;
            copy(&from, &to, json).await
        }
    }
}

fn parse(flag: &str, url: &str) -> Result<DatabaseUrl> {
    url.parse::<DatabaseUrl>()
        .map_err(|e| anyhow!("{flag}: {e}"))
}

async fn copy(from: &DatabaseUrl, to: &DatabaseUrl, json: bool) -> Result<u8> {
    eprintln!("copying {from} → {to}");
    let mut lines = TableLines::new(std::io::stderr().is_terminal());
    let report = copy_store(from, to, |p| lines.update(p)).await;
    lines.abandon();
    let report = report?;
    if json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            from: String,
            to: String,
            tables: &'a [TableCount],
            rows: u64,
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&Json {
                from: from.to_string(),
                to: to.to_string(),
                tables: &report.tables,
                rows: report.rows(),
            })?
        )?;
    } else {
        let width = report
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(0);
        for t in &report.tables {
            outln!("{:<width$}  {:>10}", t.table, t.rows)?;
        }
        outln!(
            "{:<width$}  {:>10}  rows in {} tables, counted in {to}",
            "total",
            report.rows(),
            report.tables.len()
        )?;
    }
    Ok(exit::OK)
}

fn rows(n: u64) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
}

/// Progress on stderr: a bar per table on a terminal, else a line per
/// table once it is copied.
struct TableLines {
    terminal: bool,
    bar: Option<ProgressBar>,
}

impl TableLines {
    fn new(terminal: bool) -> TableLines {
        TableLines {
            terminal,
            bar: None,
        }
    }

    fn update(&mut self, p: TableProgress) {
        if !self.terminal {
            if p.copied == p.total {
                eprintln!("  {}: {}", p.table, rows(p.copied));
            }
            return;
        }
        if p.copied == 0 {
            let bar = ProgressBar::new(p.total);
            bar.set_style(
                ProgressStyle::with_template("  {msg:<20} [{bar:30}] {pos}/{len} rows {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(p.table);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(p.copied);
            if p.copied == p.total {
                bar.finish();
                self.bar = None;
            }
        }
    }

    /// Leaves a table that failed half-way as it was.
    fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_opened() {
        let e = parse("--to", "mysql://db/x").unwrap_err().to_string();
        assert!(
            e.starts_with("--to: unsupported database URL `mysql`"),
            "{e}"
        );
        let e = parse("--from", "sqlite://").unwrap_err().to_string();
        assert!(e.contains("sqlite:// needs a file path"), "{e}");
        assert!(matches!(
            parse("--from", "sqlite:///tmp/x.db"),
            Ok(DatabaseUrl::Sqlite(p)) if p == Path::new("/tmp/x.db")
        ));
    }
}
