//! The schema as the copier knows it: every table of the store in
//! foreign-key order ([`TABLES`]), every column with its [`Kind`], and how
//! each table is named and paged in SQL.

use crate::db::Backend;

/// How a column's values are decoded from the source and bound to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `INTEGER` in SQLite, `BIGINT` in PostgreSQL.
    Int,
    /// `INTEGER` 0/1 in SQLite, `BOOLEAN` in PostgreSQL.
    Bool,
    /// `REAL` in SQLite, `DOUBLE PRECISION` in PostgreSQL.
    Real,
    Text,
}

impl Kind {
    /// Whether a declared column type (SQLite's declaration, PostgreSQL's
    /// `information_schema.columns.data_type`) holds this kind.
    pub(super) fn accepts(self, declared: &str) -> bool {
        let declared = declared.to_ascii_lowercase();
        match self {
            Kind::Int => declared == "integer" || declared == "bigint",
            Kind::Bool => declared == "integer" || declared == "boolean",
            Kind::Real => declared == "real" || declared == "double precision",
            Kind::Text => declared == "text",
        }
    }
}

#[derive(Debug)]
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) nullable: bool,
}

const fn int(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        nullable: false,
    }
}

const fn flag(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Bool,
        nullable: false,
    }
}

const fn real(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Real,
        nullable: false,
    }
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        nullable: false,
    }
}

/// The column, allowing NULL.
const fn null(c: Column) -> Column {
    Column {
        nullable: true,
        ..c
    }
}

#[derive(Debug)]
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) columns: &'static [Column],
    /// The primary key: rows are read in its order, page by page after the
    /// last key read.
    pub(super) key: &'static [&'static str],
    /// SQLite has no `id` column here: `id` is its rowid (rdb_result_groups
    /// and rdb_result_data, whose PostgreSQL `id` keeps the insertion order
    /// that the rowid keeps in SQLite). Copying the rowid as `id` and back
    /// keeps that order.
    pub(super) sqlite_rowid_id: bool,
}

/// Every table of the schema (`migrations/sqlite`, `migrations/postgres`),
/// parents before the tables that reference them.
pub(super) static TABLES: &[Table] = &[
    Table {
        name: "jobs",
        columns: &[
            int("id"),
            text("name"),
            text("queue"),
            int("priority"),
            text("spec"),
            text("state"),
            int("created_at"),
            null(int("finished_at")),
            null(text("integration_id")),
            // A finished job's counts (migrations sqlite/0016, postgres/0004).
            null(int("tasks_queued")),
            null(int("tasks_running")),
            null(int("tasks_passed")),
            null(int("tasks_failed")),
            null(int("tasks_cancelled")),
            null(int("outcomes_passed")),
            null(int("outcomes_failed")),
            null(int("outcomes_flaky")),
            null(int("outcomes_timed_out")),
            null(int("outcomes_stalled")),
            null(int("outcomes_crashed")),
            null(int("outcomes_infra_error")),
            null(int("outcomes_cancelled")),
            null(int("attempts_total")),
            null(int("tasks_retried")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "tasks",
        columns: &[
            int("id"),
            int("job_id"),
            text("name"),
            text("spec"),
            int("priority"),
            null(text("pinned_agent")),
            text("state"),
            null(text("stage")),
            null(text("outcome")),
            null(text("detail_message")),
            null(text("agent")),
            null(int("current_attempt")),
            int("attempts"),
            int("test_failures"),
            int("infra_failures"),
            flag("flaky"),
            null(text("last_agent")),
            int("queued_at"),
            int("updated_at"),
            text("task_key"),
            int("retriggers"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "attempts",
        columns: &[
            int("id"),
            int("task_id"),
            int("number"),
            text("agent"),
            null(text("stage")),
            null(text("outcome")),
            null(text("reason")),
            null(text("reason_data")),
            int("started_at"),
            null(int("finished_at")),
            null(int("last_update_ts")),
            null(text("results")),
            null(int("lease_expires_at")),
            null(text("machine")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "log_chunks",
        columns: &[int("attempt_id"), int("offset"), text("data")],
        key: &["attempt_id", "offset"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "agents",
        columns: &[
            text("hostname"),
            text("labels"),
            int("first_seen"),
            int("last_connected"),
            flag("retired"),
            null(text("status")),
            null(text("machine")),
        ],
        key: &["hostname"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "work_log",
        columns: &[
            int("id"),
            text("hostname"),
            null(int("attempt_id")),
            null(text("integration_id")),
            text("status"),
            null(text("detail")),
            int("at"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "task_stats",
        columns: &[
            text("task_key"),
            int("runs"),
            real("mean_ms"),
            real("p95_ms"),
            text("recent"),
        ],
        key: &["task_key"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "export_events",
        columns: &[int("id"), int("attempt_id"), int("created_at")],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "export_sinks",
        columns: &[
            text("name"),
            int("cursor"),
            int("delivered"),
            int("dropped"),
            int("failures"),
            null(text("last_error")),
            null(int("last_error_at")),
            null(int("last_success_at")),
        ],
        key: &["name"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_testcases",
        columns: &[text("name"), null(text("ref_url"))],
        key: &["name"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_groups",
        columns: &[
            int("id"),
            text("uuid"),
            null(text("description")),
            null(text("ref_url")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_results",
        columns: &[
            int("id"),
            text("testcase"),
            text("outcome"),
            null(text("note")),
            null(text("ref_url")),
            int("submit_time"),
            null(int("attempt_id")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_result_groups",
        columns: &[int("id"), int("result_id"), text("group_uuid")],
        key: &["id"],
        sqlite_rowid_id: true,
    },
    Table {
        name: "rdb_result_data",
        columns: &[int("id"), int("result_id"), text("key"), text("value")],
        key: &["id"],
        sqlite_rowid_id: true,
    },
    Table {
        name: "users",
        columns: &[
            text("name"),
            text("password_hash"),
            flag("admin"),
            int("created_at"),
            null(text("digest_realm")),
            null(text("digest_ha1_md5")),
            null(text("digest_ha1_sha256")),
        ],
        key: &["name"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "api_tokens",
        columns: &[
            int("id"),
            text("name"),
            text("token_hash"),
            flag("admin"),
            int("created_at"),
            null(int("revoked_at")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "agent_secrets",
        columns: &[
            text("hostname"),
            text("secret_hash"),
            int("created_at"),
            null(int("revoked_at")),
        ],
        key: &["hostname"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "audit_log",
        columns: &[
            int("id"),
            int("at"),
            text("actor"),
            null(text("peer")),
            text("action"),
            null(text("target")),
            null(text("detail")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "artifacts",
        columns: &[
            int("id"),
            int("attempt_id"),
            int("task_id"),
            int("job_id"),
            text("path"),
            text("kind"),
            text("digest"),
            int("size"),
            int("created_at"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    // The events log (migrations sqlite/0018, postgres/0006).
    Table {
        name: "trigger_events",
        columns: &[
            int("id"),
            text("source"),
            text("kind"),
            text("topic"),
            null(text("delivery_id")),
            null(text("dedup_key")),
            int("received_at"),
            text("body"),
            text("matched_rules"),
            text("job_ids"),
            text("outcome"),
            null(text("reason")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    // Benchmark series (migrations sqlite/0017, postgres/0005).
    Table {
        name: "bench_fingerprints",
        columns: &[text("hash"), text("machine")],
        key: &["hash"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "bench_series",
        columns: &[
            int("id"),
            text("host"),
            text("program"),
            text("function"),
            text("data_tag"),
            text("metric"),
            text("unit"),
            int("points"),
            int("first_at"),
            int("last_at"),
            real("last_value"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "bench_points",
        columns: &[
            int("id"),
            int("series_id"),
            int("attempt_id"),
            int("job_id"),
            int("task_id"),
            int("repetition"),
            real("value"),
            null(text("sha")),
            null(text("branch")),
            null(text("integration")),
            text("fingerprint"),
            int("at"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "bench_acks",
        columns: &[
            int("id"),
            int("series_id"),
            text("sha"),
            text("note"),
            null(text("bug_url")),
            text("by_user"),
            int("created_at"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    // Merge-request bots' state (migrations sqlite/0020 and 0021,
    // postgres/0008 and 0009).
    Table {
        name: "bot_requests",
        columns: &[
            int("id"),
            text("bot"),
            text("project"),
            int("iid"),
            text("head_sha"),
            null(text("base_sha")),
            text("state"),
            null(int("note_id")),
            null(text("reason")),
            int("created_at"),
            int("updated_at"),
            null(text("template_digest")),
            int("confirm_rounds"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "bot_request_jobs",
        columns: &[
            int("request_id"),
            text("side"),
            int("job_id"),
            flag("reused"),
        ],
        key: &["request_id", "side", "job_id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "coordinators",
        columns: &[
            text("id"),
            int("started_at"),
            int("heartbeat_at"),
            text("agents"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
];

/// Most parameters bound in one statement, under SQLite's 32766 and
/// PostgreSQL's 65535.
pub(super) const MAX_PARAMS: usize = 30_000;
/// Most rows read (and then written in one INSERT) at once.
const MAX_PAGE_ROWS: usize = 1000;

impl Table {
    fn column_sql(&self, column: &Column, backend: Backend) -> String {
        if self.sqlite_rowid_id && column.name == "id" && backend == Backend::Sqlite {
            "rowid".to_owned()
        } else {
            format!("\"{}\"", column.name)
        }
    }

    pub(super) fn column_list(&self, backend: Backend) -> String {
        self.columns
            .iter()
            .map(|c| self.column_sql(c, backend))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn key_columns(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.key.iter().map(|k| {
            self.columns
                .iter()
                .enumerate()
                .find(|(_, c)| c.name == *k)
                .expect("every key column is a column of its table")
        })
    }

    pub(super) fn key_list(&self, backend: Backend) -> String {
        self.key_columns()
            .map(|(_, c)| self.column_sql(c, backend))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns a database must have for this table (SQLite does not
    /// list a rowid among its columns).
    pub(super) fn stored_columns(&self, backend: Backend) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(move |c| {
            !(self.sqlite_rowid_id && c.name == "id" && backend == Backend::Sqlite)
        })
    }

    pub(super) fn max_page_rows(&self) -> usize {
        (MAX_PARAMS / self.columns.len()).clamp(1, MAX_PAGE_ROWS)
    }
}
