//! One pass of the GitLab bot, and the loop that runs passes.
//!
//! A pass first moves the requests already taken up (kept in the store:
//! `bot_requests`), then takes up the oldest open merge request carrying
//! the label whose head pipeline succeeded, when none is running. Taking
//! one up: record it (unique per merge request and head sha), find the
//! merge base with the target branch, submit a benchmark job for each
//! side, and post the start note — unless a note with the request's
//! hidden marker is already there (a crash between posting and recording
//! posts nothing twice). When both jobs end, the same note is replaced by
//! the comparison and the label is removed; a failed run gets its reason
//! and loses its label too.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use testfleet_core::state::JobState;
use testfleet_core::trigger::{Overrides, Template, TemplateError, Vars};
use testfleet_store::{BotRequest, BotRequestState, NewBotRequest, Store, StoreError};
use testfleet_wire::api::JobView;

use super::client::{GitLabClient, GitLabError, MergeRequest};
use super::note::{self, NoteContext};
use crate::Coordinator;
use crate::analytics::{Analytics, AnalyticsError};
use crate::coordinator::SubmitError;

/// The bot's name in the store.
pub const BOT: &str = "gitlab";

/// The resolved `[server.bots.gitlab]` settings the bot runs with.
#[derive(Debug, Clone)]
pub struct GitLabBotSettings {
    /// The project as configured (numeric id or path), as the store and
    /// the notes' markers name it.
    pub project: String,
    /// The label that asks for a run (default `benchmark`).
    pub label: String,
    /// How often a pass runs.
    pub poll_interval: Duration,
    /// The job template; placeholders: `sha`, `branch`, `target_branch`,
    /// `mr`, `side` (`head` or `base`), `project`, `pipeline_id`,
    /// `pipeline_started_at`.
    pub template: Template,
    /// Overrides of the rendered job (a queue for the benchmark hosts).
    pub overrides: Overrides,
    /// The dashboard's URL as the notes' readers reach it.
    pub dashboard_url: String,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// GitLab refused the token: the bot pauses.
    #[error("the GitLab bot is paused")]
    Paused(#[source] GitLabError),
    #[error("failed to talk to GitLab")]
    GitLab(#[source] GitLabError),
    #[error("failed to read or write the bot's state")]
    Store(#[from] StoreError),
    #[error("failed to render the bot's job template")]
    Template(#[from] TemplateError),
    #[error("failed to submit a benchmark job")]
    Submit(#[from] SubmitError),
    #[error("failed to compare the benchmark jobs")]
    Analytics(#[from] AnalyticsError),
    #[error("note id {0} does not fit the store")]
    NoteId(u64),
}

impl From<GitLabError> for BotError {
    fn from(e: GitLabError) -> BotError {
        if e.is_unauthorized() {
            BotError::Paused(e)
        } else {
            BotError::GitLab(e)
        }
    }
}

/// What a pass did (or, dry, would do) about one merge request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Taken up: jobs submitted and the start note posted.
    Started {
        iid: u64,
        head_sha: String,
        base_sha: String,
        head_job: i64,
        base_job: i64,
        note_id: u64,
    },
    /// (Dry run) would be taken up now.
    WouldStart { iid: u64, head_sha: String },
    /// Its jobs are still running.
    Running {
        iid: u64,
        head_job: i64,
        base_job: i64,
    },
    /// Reported: the note holds the comparison, the label is removed.
    Reported {
        iid: u64,
        note_id: u64,
        headline: String,
    },
    /// Ended without a comparison: the note says why.
    Failed { iid: u64, reason: String },
    /// Labelled, but waits: its head pipeline has not succeeded, or an
    /// older request runs first.
    Waiting { iid: u64, why: String },
}

/// The GitLab bot of one project.
pub struct GitLabBot {
    client: GitLabClient,
    coordinator: Arc<Coordinator>,
    analytics: Analytics,
    store: Store,
    settings: GitLabBotSettings,
}

impl std::fmt::Debug for GitLabBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLabBot")
            .field("client", &self.client)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn note_id_i64(id: u64) -> Result<i64, BotError> {
    i64::try_from(id).map_err(|_| BotError::NoteId(id))
}

fn iid_i64(iid: u64) -> i64 {
    i64::try_from(iid).unwrap_or(i64::MAX)
}

fn iid_u64(iid: i64) -> u64 {
    u64::try_from(iid).unwrap_or_default()
}

impl GitLabBot {
    /// A bot on `coordinator` (jobs, comparisons) with its own `store`
    /// handle (its state).
    pub fn new(
        client: GitLabClient,
        coordinator: Arc<Coordinator>,
        store: Store,
        settings: GitLabBotSettings,
    ) -> GitLabBot {
        let analytics = Analytics::new(coordinator.clone());
        GitLabBot {
            client,
            coordinator,
            analytics,
            store,
            settings,
        }
    }

    /// Runs passes every poll interval until `shutdown` resolves, or until
    /// GitLab refuses the token (the bot pauses, with the reason logged).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.pass(false).await {
                Ok(actions) => {
                    for a in actions {
                        tracing::debug!(?a, "gitlab bot");
                    }
                }
                Err(e @ BotError::Paused(_)) => {
                    tracing::error!("{}", error_chain(&e));
                    return;
                }
                Err(e) => tracing::warn!("gitlab bot pass: {}", error_chain(&e)),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// One pass; with `dry_run`, nothing is written anywhere (GitLab, the
    /// store, the queue) and the actions say what would be done.
    pub async fn pass(&self, dry_run: bool) -> Result<Vec<Action>, BotError> {
        let mut actions = Vec::new();
        let open = self
            .store
            .open_bot_requests(BOT, &self.settings.project)
            .await?;
        let mut busy = false;
        for request in open {
            if dry_run {
                busy = true;
                actions.push(match (request.head_job_id, request.base_job_id) {
                    (Some(h), Some(b)) => Action::Running {
                        iid: iid_u64(request.iid),
                        head_job: h,
                        base_job: b,
                    },
                    _ => Action::WouldStart {
                        iid: iid_u64(request.iid),
                        head_sha: request.head_sha.clone(),
                    },
                });
                continue;
            }
            let action = self.advance(request).await?;
            busy |= matches!(action, Action::Running { .. } | Action::Started { .. });
            actions.push(action);
        }
        let mrs = self
            .client
            .open_merge_requests(&self.settings.label)
            .await?;
        for summary in mrs {
            let Some(sha) = summary.sha.clone() else {
                continue;
            };
            let key = self
                .store
                .bot_request_by_key(BOT, &self.settings.project, iid_i64(summary.iid), &sha)
                .await?;
            if key.is_some() {
                continue;
            }
            let mr = self.client.merge_request(summary.iid).await?;
            let status = mr.head_pipeline.as_ref().map(|p| p.status.as_str());
            if status != Some("success") {
                actions.push(Action::Waiting {
                    iid: mr.iid,
                    why: format!("its head pipeline is {}", status.unwrap_or("missing")),
                });
                continue;
            }
            if busy {
                actions.push(Action::Waiting {
                    iid: mr.iid,
                    why: "an older request runs first".into(),
                });
                continue;
            }
            busy = true;
            if dry_run {
                actions.push(Action::WouldStart {
                    iid: mr.iid,
                    head_sha: sha,
                });
                continue;
            }
            let (request, _) = self
                .store
                .begin_bot_request(
                    &NewBotRequest {
                        bot: BOT.into(),
                        project: self.settings.project.clone(),
                        iid: iid_i64(mr.iid),
                        head_sha: sha,
                    },
                    self.coordinator.now(),
                )
                .await?;
            actions.push(self.start(request, &mr).await?);
        }
        Ok(actions)
    }

    /// Moves a request already taken up one step on.
    async fn advance(&self, request: BotRequest) -> Result<Action, BotError> {
        match (request.head_job_id, request.base_job_id) {
            (Some(_), Some(_)) if request.note_id.is_none() => {
                // Jobs submitted, note not recorded: post (or find) it.
                let mr = self.client.merge_request(iid_u64(request.iid)).await?;
                self.start(request, &mr).await
            }
            (Some(head), Some(base)) => self.check_jobs(request, head, base).await,
            _ => {
                let mr = self.client.merge_request(iid_u64(request.iid)).await?;
                self.start(request, &mr).await
            }
        }
    }

    fn context(&self, request: &BotRequest) -> NoteContext {
        NoteContext {
            project: self.settings.project.clone(),
            iid: iid_u64(request.iid),
            head_sha: request.head_sha.clone(),
            base_sha: request.base_sha.clone(),
            dashboard_url: self.settings.dashboard_url.trim_end_matches('/').to_owned(),
            head_job: request.head_job_id,
            base_job: request.base_job_id,
        }
    }

    /// Submits the jobs (unless recorded) and posts the start note (unless
    /// one with the request's marker exists).
    async fn start(&self, request: BotRequest, mr: &MergeRequest) -> Result<Action, BotError> {
        let iid = mr.iid;
        let request = match (request.head_job_id, request.base_job_id) {
            (Some(_), Some(_)) => request,
            _ => {
                let base = match self
                    .client
                    .merge_base(&mr.target_branch, &request.head_sha)
                    .await
                {
                    Ok(c) => c.id,
                    Err(e) if e.is_unauthorized() => return Err(e.into()),
                    Err(e) => {
                        let reason = format!("no merge base with `{}`: {e}", mr.target_branch);
                        return self.fail(request, &reason).await;
                    }
                };
                let head_job = match self.submit(mr, &request.head_sha, "head").await {
                    Ok(j) => j,
                    Err(BotError::Template(e)) => return self.fail(request, &e.to_string()).await,
                    Err(e) => return Err(e),
                };
                let base_job = self.submit(mr, &base, "base").await?;
                self.store
                    .set_bot_request_jobs(
                        request.id,
                        &base,
                        head_job,
                        base_job,
                        self.coordinator.now(),
                    )
                    .await?
            }
        };
        let note_id = self
            .post_or_find(&request, &note::start_note(&self.context(&request)))
            .await?;
        let request = self
            .store
            .set_bot_request_note(request.id, note_id_i64(note_id)?, self.coordinator.now())
            .await?;
        Ok(Action::Started {
            iid,
            head_sha: request.head_sha.clone(),
            base_sha: request.base_sha.clone().unwrap_or_default(),
            head_job: request.head_job_id.unwrap_or_default(),
            base_job: request.base_job_id.unwrap_or_default(),
            note_id,
        })
    }

    /// The note with the request's marker (newest first, as GitLab lists
    /// them), updated to `body`; or a new note.
    async fn post_or_find(&self, request: &BotRequest, body: &str) -> Result<u64, BotError> {
        if let Some(id) = request.note_id {
            let id = u64::try_from(id).map_err(|_| BotError::NoteId(0))?;
            self.client
                .update_note(iid_u64(request.iid), id, body)
                .await?;
            return Ok(id);
        }
        let marker = note::marker(
            &self.settings.project,
            iid_u64(request.iid),
            &request.head_sha,
        );
        let notes = self.client.notes(iid_u64(request.iid)).await?;
        if let Some(found) = notes.iter().find(|n| !n.system && n.body.contains(&marker)) {
            self.client
                .update_note(iid_u64(request.iid), found.id, body)
                .await?;
            return Ok(found.id);
        }
        Ok(self
            .client
            .create_note(iid_u64(request.iid), body)
            .await?
            .id)
    }

    /// Renders and submits one side's job; returns its id.
    async fn submit(&self, mr: &MergeRequest, sha: &str, side: &str) -> Result<i64, BotError> {
        let mut vars = Vars::new();
        vars.insert("sha", sha);
        vars.insert("side", side);
        vars.insert("mr", mr.iid.to_string());
        vars.insert("project", self.settings.project.clone());
        vars.insert("target_branch", mr.target_branch.clone());
        let branch = if side == "head" {
            mr.source_branch.clone()
        } else {
            mr.target_branch.clone()
        };
        vars.insert("branch", branch);
        let pipeline = mr.head_pipeline.as_ref();
        vars.insert(
            "pipeline_id",
            pipeline.map(|p| p.id.to_string()).unwrap_or_default(),
        );
        vars.insert(
            "pipeline_started_at",
            pipeline
                .and_then(|p| p.started_at.clone().or_else(|| p.created_at.clone()))
                .unwrap_or_default(),
        );
        let rendered = self
            .settings
            .template
            .render(&vars, &self.settings.overrides)?;
        Ok(self.coordinator.submit(rendered.job).await?.id)
    }

    /// Reports a request whose two jobs have ended; else says it runs.
    async fn check_jobs(
        &self,
        request: BotRequest,
        head: i64,
        base: i64,
    ) -> Result<Action, BotError> {
        let views = self.coordinator.views();
        let head_view = views.job(head).await?;
        let base_view = views.job(base).await?;
        if !head_view.state.is_terminal() || !base_view.state.is_terminal() {
            return Ok(Action::Running {
                iid: iid_u64(request.iid),
                head_job: head,
                base_job: base,
            });
        }
        let mut errors = Vec::new();
        for (side, job) in [("head", &head_view), ("baseline", &base_view)] {
            errors.extend(job_errors(side, job));
        }
        // A side with no passing task has nothing to compare.
        let empty_side = [&head_view, &base_view].iter().any(|j| {
            j.state == JobState::Cancelled
                || !j
                    .tasks
                    .iter()
                    .any(|t| t.outcome.is_some_and(|o| o.is_success()))
        });
        if empty_side {
            let reason = format!("a benchmark job did not pass: {}", errors.join("; "));
            return self.fail(request, &reason).await;
        }
        let view = self.analytics.compare(&[base], &[head]).await?;
        let body = note::result_note(&self.context(&request), &view, &errors);
        let note_id = self.post_or_find(&request, &body).await?;
        self.client
            .remove_label(iid_u64(request.iid), &self.settings.label)
            .await?;
        self.store
            .finish_bot_request(
                request.id,
                BotRequestState::Reported,
                None,
                self.coordinator.now(),
            )
            .await?;
        Ok(Action::Reported {
            iid: iid_u64(request.iid),
            note_id,
            headline: note::headline(&view),
        })
    }

    /// Ends a request as failed: its note says why, its label is removed.
    async fn fail(&self, request: BotRequest, reason: &str) -> Result<Action, BotError> {
        let body = note::failed_note(&self.context(&request), reason);
        let note_id = self.post_or_find(&request, &body).await?;
        if request.note_id.is_none() {
            self.store
                .set_bot_request_note(request.id, note_id_i64(note_id)?, self.coordinator.now())
                .await?;
        }
        self.client
            .remove_label(iid_u64(request.iid), &self.settings.label)
            .await?;
        self.store
            .finish_bot_request(
                request.id,
                BotRequestState::Failed,
                Some(reason),
                self.coordinator.now(),
            )
            .await?;
        Ok(Action::Failed {
            iid: iid_u64(request.iid),
            reason: reason.to_owned(),
        })
    }
}

/// One line per task of `job` that did not pass.
fn job_errors(side: &str, job: &JobView) -> Vec<String> {
    job.tasks
        .iter()
        .filter(|t| t.outcome.is_none_or(|o| !o.is_success()))
        .map(|t| {
            let outcome = t.outcome.map(|o| o.as_str()).unwrap_or(t.state.as_str());
            let mut line = format!("{side} job {} task `{}`", job.id, t.name);
            if let Some(agent) = &t.agent {
                line.push_str(&format!(" on {agent}"));
            }
            line.push_str(&format!(": {outcome}"));
            if let Some(detail) = &t.detail_message {
                line.push_str(&format!(" ({detail})"));
            }
            line
        })
        .collect()
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
