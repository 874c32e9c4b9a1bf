//! The jobs page (`/jobs`: newest first, filtered by state and searched by
//! name) and a job's page (`/jobs/{id}`: its tasks a page at a time with
//! stage progress, outcome, flaky flag, reason and attempts; artifacts and
//! reports; cancel and retry).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use testfleet_core::{JobState, Stage};
use testfleet_wire::api::{ArtifactView, JobSummary, TaskView};

use super::format::outcome_text;
use super::{Dash, Page, PageError, parse_id, wants_fragment};
use crate::http_error::{ApiPath, ApiQuery};

/// Jobs a list shows unless told.
const DEFAULT_JOBS: i64 = 50;
/// Jobs a list shows at most, and the newest jobs a search looks through.
const MAX_JOBS: i64 = 1000;
/// Tasks a job's page shows at once; the rest are a link away.
const TASKS_PER_PAGE: i64 = 500;
/// Artifacts a job's page lists.
const ARTIFACTS_SHOWN: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct JobsQuery {
    state: Option<String>,
    /// Words the job's name contains (any case).
    q: Option<String>,
    limit: Option<i64>,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsContent {
    jobs: Vec<JobSummary>,
    state: String,
    q: String,
    limit: i64,
    searched: bool,
}

impl JobsContent {
    fn outcomes(&self, j: &JobSummary) -> String {
        outcome_text(&j.outcomes)
    }

    fn states(&self) -> &'static [&'static str] {
        &["queued", "running", "passed", "failed", "cancelled"]
    }
}

/// `GET /jobs?state=&q=&limit=`.
pub(crate) async fn jobs_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> Result<Response, PageError> {
    let state_text = q.state.unwrap_or_default();
    let state = match state_text.as_str() {
        "" => None,
        s => Some(
            s.parse::<JobState>()
                .map_err(|e| PageError::BadRequest(e.to_string()))?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_JOBS);
    if !(1..=MAX_JOBS).contains(&limit) {
        return Err(PageError::BadRequest(format!(
            "limit {limit} is out of range; use 1 to {MAX_JOBS}"
        )));
    }
    let search = q.q.unwrap_or_default();
    let words: Vec<String> = search.split_whitespace().map(str::to_lowercase).collect();
    // A search looks through the newest jobs only: a bounded read.
    let read = if words.is_empty() { limit } else { MAX_JOBS };
    let jobs = d
        .coordinator
        .views()
        .jobs(read, state)
        .await?
        .into_iter()
        .filter(|j| {
            let name = j.name.to_lowercase();
            words.iter().all(|w| name.contains(w.as_str()))
        })
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    let mut json = format!("/api/v1/jobs?limit={limit}");
    if !state_text.is_empty() {
        json.push_str(&format!("&state={state_text}"));
    }
    Page {
        title: "Jobs".to_owned(),
        nav: "jobs",
        json: Some(json),
        scripts: &[],
        content: JobsContent {
            jobs,
            state: state_text,
            q: search,
            limit,
            searched: !words.is_empty(),
        },
    }
    .respond(wants_fragment(&headers))
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobQuery {
    /// The page of tasks after this task id.
    after: Option<i64>,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobContent {
    job: JobSummary,
    tasks: Vec<TaskView>,
    total_tasks: u64,
    next_after: Option<i64>,
    artifacts: Vec<ArtifactView>,
    more_artifacts: usize,
}

impl JobContent {
    fn outcomes(&self) -> String {
        outcome_text(&self.job.outcomes)
    }

    fn can_cancel(&self) -> bool {
        !self.job.state.is_terminal()
    }

    fn can_retry(&self) -> bool {
        self.job.state == JobState::Failed
    }

    /// The task's stage as a rank out of [`Self::STAGES`].
    fn stage_rank(&self, t: &TaskView) -> u8 {
        t.stage
            .as_deref()
            .and_then(|s| s.parse::<Stage>().ok())
            .and_then(Stage::rank)
            .unwrap_or(0)
    }

    fn outcome(&self, t: &TaskView) -> String {
        t.outcome.map(|o| o.to_string()).unwrap_or_default()
    }

    fn tests(&self, t: &TaskView) -> String {
        let total = t.counts.total();
        if total == 0 {
            String::new()
        } else {
            format!("{}/{}", t.counts.pass, total)
        }
    }
}

/// `GET /jobs/{id}?after=`.
pub(crate) async fn job_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Response, PageError> {
    let id = parse_id("job", &id)?;
    let views = d.coordinator.views();
    let job = views.job_summary(id).await?;
    let page = views
        .job_tasks(id, q.after.filter(|a| *a > 0), TASKS_PER_PAGE)
        .await?;
    let mut artifacts = views.job_artifacts(id).await?;
    let more_artifacts = artifacts.len().saturating_sub(ARTIFACTS_SHOWN);
    artifacts.truncate(ARTIFACTS_SHOWN);
    Page {
        title: format!("Job {id}: {}", job.name),
        nav: "jobs",
        json: Some(format!("/api/v1/jobs/{id}")),
        scripts: &[],
        content: JobContent {
            job,
            total_tasks: page.total,
            tasks: page.tasks,
            next_after: page.next_after,
            artifacts,
            more_artifacts,
        },
    }
    .respond(wants_fragment(&headers))
}
