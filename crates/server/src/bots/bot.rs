//! One pass of a merge-request bot, and the loop that runs passes; the
//! same for every code-review host ([`ReviewHost`]).
//!
//! A pass first moves the requests already taken up (kept in the store:
//! `bot_requests`), then takes up the oldest open request carrying the
//! label whose head passed its CI, when none is running. Taking one up:
//! record it (unique per request and head sha), post the start note —
//! unless a note with the request's hidden marker is already there (a
//! crash between posting and recording posts nothing twice) — and record
//! its id, find the merge base with the target branch, then submit the
//! jobs of both sides and record them in one transaction (stored results
//! of the same sha, host and template are reused instead of run again),
//! and put the job links into the note. When every job has ended, the same
//! note is replaced by the comparison and the label is removed; a failed
//! run gets its reason and loses its label too.

use std::sync::Arc;

use serde::Serialize;
use testfleet_core::job::JobSpec;
use testfleet_core::labels::Requirement;
use testfleet_core::state::JobState;
use testfleet_core::trigger::{TemplateError, Vars};
use testfleet_store::{
    BotJob, BotRequest, BotRequestState, BotSide, BotSideJobs, NewBotRequest, Store, StoreError,
};
use testfleet_wire::api::JobView;

use super::host::{CiState, ReviewHost, ReviewRequest};
use super::http::ApiError;
use super::note::{self, NoteContext, NoteJob};
use super::settings::BotSettings;
use crate::Coordinator;
use crate::analytics::{Analytics, AnalyticsError};
use crate::coordinator::SubmitError;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The host refused the token: the bot pauses.
    #[error("the {0} bot is paused")]
    Paused(&'static str, #[source] ApiError),
    #[error("failed to talk to the code-review host")]
    Api(#[source] ApiError),
    #[error("failed to read or write the bot's state")]
    Store(#[from] StoreError),
    #[error("failed to render the bot's job template")]
    Template(#[from] TemplateError),
    #[error("failed to submit a benchmark job")]
    Submit(#[from] SubmitError),
    #[error("failed to compare the benchmark jobs")]
    Analytics(#[from] AnalyticsError),
    #[error("comment id {0} does not fit the store")]
    NoteId(u64),
    /// The task submitting the jobs ended abnormally.
    #[error("the job submission task failed")]
    Join(#[source] tokio::task::JoinError),
    /// A side's job would have no task (no known agent matches).
    #[error("{0}")]
    NoTasks(String),
}

/// What a pass did (or, dry, would do) about one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Taken up: start note posted, jobs submitted (or reused).
    Started {
        iid: u64,
        head_sha: String,
        base_sha: String,
        head_jobs: Vec<i64>,
        base_jobs: Vec<i64>,
        /// Jobs whose stored results are reused rather than run again.
        reused_jobs: Vec<i64>,
        note_id: u64,
    },
    /// (Dry run) would be taken up now.
    WouldStart { iid: u64, head_sha: String },
    /// Its jobs are still running.
    Running {
        iid: u64,
        head_jobs: Vec<i64>,
        base_jobs: Vec<i64>,
    },
    /// Reported: the note holds the comparison, the label is removed.
    Reported {
        iid: u64,
        note_id: u64,
        headline: String,
    },
    /// Verdicts were UNKNOWN: the tasks behind them run again (both sides)
    /// before the bot answers.
    Confirming {
        iid: u64,
        /// The round started (1 for the first).
        round: i64,
        unknown: u64,
        tasks: Vec<i64>,
    },
    /// Ended without a comparison: the note says why.
    Failed { iid: u64, reason: String },
    /// Labelled, but waits: its head has not passed CI, or an older
    /// request runs first.
    Waiting { iid: u64, why: String },
}

/// A merge-request bot of one project on one host.
pub struct Bot<H: ReviewHost> {
    host: H,
    coordinator: Arc<Coordinator>,
    analytics: Analytics,
    store: Store,
    settings: BotSettings,
}

impl<H: ReviewHost> std::fmt::Debug for Bot<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("host", &self.host)
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

fn side_jobs(request: &BotRequest, side: BotSide) -> Vec<i64> {
    request
        .jobs
        .iter()
        .filter(|j| j.side == side)
        .map(|j| j.job_id)
        .collect()
}

impl<H: ReviewHost> Bot<H> {
    /// A bot on `coordinator` (jobs, comparisons) with its own `store`
    /// handle (its state).
    pub fn new(
        host: H,
        coordinator: Arc<Coordinator>,
        store: Store,
        settings: BotSettings,
    ) -> Bot<H> {
        let analytics = Analytics::new(coordinator.clone());
        Bot {
            host,
            coordinator,
            analytics,
            store,
            settings,
        }
    }

    fn api(&self, e: ApiError) -> BotError {
        if e.is_unauthorized() {
            BotError::Paused(self.host.kind(), e)
        } else {
            BotError::Api(e)
        }
    }

    /// Runs passes every poll interval until `shutdown` resolves, or until
    /// the host refuses the token (the bot pauses, with the reason logged).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let kind = self.host.kind();
        loop {
            match self.pass(false).await {
                Ok(actions) => {
                    for a in actions {
                        tracing::debug!(?a, "{kind} bot");
                    }
                }
                Err(e @ BotError::Paused(..)) => {
                    tracing::error!("{}", error_chain(&e));
                    return;
                }
                Err(e) => tracing::warn!("{kind} bot pass: {}", error_chain(&e)),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// One pass; with `dry_run`, nothing is written anywhere (the host, the
    /// store, the queue) and the actions say what would be done.
    pub async fn pass(&self, dry_run: bool) -> Result<Vec<Action>, BotError> {
        let kind = self.host.kind();
        let mut actions = Vec::new();
        let open = self
            .store
            .open_bot_requests(kind, &self.settings.project)
            .await?;
        let mut busy = false;
        for request in open {
            if dry_run {
                busy = true;
                actions.push(if request.jobs.is_empty() {
                    Action::WouldStart {
                        iid: iid_u64(request.iid),
                        head_sha: request.head_sha.clone(),
                    }
                } else {
                    Action::Running {
                        iid: iid_u64(request.iid),
                        head_jobs: side_jobs(&request, BotSide::Head),
                        base_jobs: side_jobs(&request, BotSide::Base),
                    }
                });
                continue;
            }
            let action = self.advance(request).await?;
            busy |= matches!(action, Action::Running { .. } | Action::Started { .. });
            actions.push(action);
        }
        let labelled = self
            .host
            .labelled(&self.settings.label)
            .await
            .map_err(|e| self.api(e))?;
        for summary in labelled {
            let number = iid_i64(summary.number);
            if let Some(sha) = &summary.head_sha
                && self.taken_up(number, sha).await?
            {
                continue;
            }
            let rr = self
                .host
                .request(summary.number)
                .await
                .map_err(|e| self.api(e))?;
            // GitHub's list has no sha; a merge request without commits none.
            let sha = rr.head_sha.clone();
            if sha.is_empty() || (summary.head_sha.is_none() && self.taken_up(number, &sha).await?)
            {
                continue;
            }
            if let CiState::Other(why) = &rr.ci {
                actions.push(Action::Waiting {
                    iid: rr.number,
                    why: why.clone(),
                });
                continue;
            }
            if busy {
                actions.push(Action::Waiting {
                    iid: rr.number,
                    why: "an older request runs first".into(),
                });
                continue;
            }
            busy = true;
            if dry_run {
                actions.push(Action::WouldStart {
                    iid: rr.number,
                    head_sha: sha,
                });
                continue;
            }
            let (request, _) = self
                .store
                .begin_bot_request(
                    &NewBotRequest {
                        bot: kind.into(),
                        project: self.settings.project.clone(),
                        iid: iid_i64(rr.number),
                        head_sha: sha,
                        template_digest: self.settings.template_digest(),
                    },
                    self.coordinator.now(),
                )
                .await?;
            actions.push(self.start(request, &rr).await?);
        }
        Ok(actions)
    }

    /// Whether this request and head sha was taken up before.
    async fn taken_up(&self, number: i64, sha: &str) -> Result<bool, BotError> {
        Ok(self
            .store
            .bot_request_by_key(self.host.kind(), &self.settings.project, number, sha)
            .await?
            .is_some())
    }

    /// Moves a request already taken up one step on.
    async fn advance(&self, request: BotRequest) -> Result<Action, BotError> {
        if request.jobs.is_empty() || request.note_id.is_none() {
            let rr = self
                .host
                .request(iid_u64(request.iid))
                .await
                .map_err(|e| self.api(e))?;
            return self.start(request, &rr).await;
        }
        self.check_jobs(request).await
    }

    fn context(&self, request: &BotRequest) -> NoteContext {
        NoteContext {
            project: self.settings.project.clone(),
            iid: iid_u64(request.iid),
            noun: self.host.request_noun(),
            head_sha: request.head_sha.clone(),
            base_sha: request.base_sha.clone(),
            dashboard_url: self.settings.dashboard_url.trim_end_matches('/').to_owned(),
            jobs: request
                .jobs
                .iter()
                .map(|j: &BotJob| NoteJob {
                    head: j.side == BotSide::Head,
                    id: j.job_id,
                    reused: j.reused,
                })
                .collect(),
        }
    }

    /// Posts the start note (unless one with the request's marker exists)
    /// and records it, then submits and records the jobs (unless recorded)
    /// and puts their links in the note.
    async fn start(&self, request: BotRequest, rr: &ReviewRequest) -> Result<Action, BotError> {
        let mut request = request;
        if request.note_id.is_none() {
            self.post_or_find(&request, &note::start_note(&self.context(&request)))
                .await?;
            request = self.store.bot_request(request.id).await?;
        }
        if request.jobs.is_empty() {
            let base = match self
                .host
                .merge_base(&rr.target_branch, &request.head_sha)
                .await
            {
                Ok(sha) => sha,
                Err(e) if e.is_unauthorized() => return Err(self.api(e)),
                Err(e) => {
                    let reason = format!("no merge base with `{}`: {e}", rr.target_branch);
                    return self.fail(request, &reason).await;
                }
            };
            let sides = match self.sides(&request, rr, &base).await {
                Ok(s) => s,
                Err(e @ (BotError::Template(_) | BotError::NoTasks(_))) => {
                    return self.fail(request, &error_chain(&e)).await;
                }
                Err(e) => return Err(e),
            };
            // Submitting and queueing run to their end in a task of their
            // own: a pass dropped in between (shutdown, a killed pass in
            // the tests) must not leave committed tasks out of the
            // scheduler's queue.
            let (store, coordinator) = (self.store.clone(), self.coordinator.clone());
            let (id, now, kind) = (request.id, self.coordinator.now(), self.host.kind());
            let submitted = tokio::spawn(async move {
                let submitted = store.submit_bot_jobs(id, &base, sides, now).await?;
                for queued in &submitted.queued {
                    tracing::info!(
                        job_id = queued.job_id,
                        request = id,
                        "{kind} bot job submitted"
                    );
                }
                coordinator.enqueue(submitted.queued.clone()).await;
                Ok::<_, StoreError>(submitted)
            })
            .await
            .map_err(BotError::Join)??;
            request = submitted.request;
            self.post_or_find(&request, &note::start_note(&self.context(&request)))
                .await?;
        }
        let note_id = recorded(&request);
        Ok(Action::Started {
            iid: rr.number,
            head_sha: request.head_sha.clone(),
            base_sha: request.base_sha.clone().unwrap_or_default(),
            head_jobs: side_jobs(&request, BotSide::Head),
            base_jobs: side_jobs(&request, BotSide::Base),
            reused_jobs: request
                .jobs
                .iter()
                .filter(|j| j.reused)
                .map(|j| j.job_id)
                .collect(),
            note_id: note_id.unwrap_or_default(),
        })
    }

    /// The request's note, updated to `body`: the recorded one, else the
    /// bot's note on the request found by its marker (an earlier push's,
    /// or one posted before a crash), else a new one.
    /// The id is recorded when it is not the recorded one (a note deleted by
    /// someone is posted again).
    async fn post_or_find(&self, request: &BotRequest, body: &str) -> Result<u64, BotError> {
        let number = iid_u64(request.iid);
        if let Some(id) = request.note_id {
            let id = u64::try_from(id).map_err(|_| BotError::NoteId(0))?;
            match self.host.update_comment(number, id, body).await {
                Ok(()) => return Ok(id),
                Err(e) if e.status() == Some(404) => {
                    tracing::warn!(
                        request = number,
                        note = id,
                        "the bot's note is gone (deleted?); posting it again"
                    );
                }
                Err(e) => return Err(self.api(e)),
            }
        }
        let marker = note::marker_prefix(&self.settings.project, number);
        let comments = self.host.comments(number).await.map_err(|e| self.api(e))?;
        let id = match comments
            .iter()
            .find(|c| !c.system && c.body.contains(&marker) && Some(c.id) != recorded(request))
        {
            Some(found) => {
                self.host
                    .update_comment(number, found.id, body)
                    .await
                    .map_err(|e| self.api(e))?;
                found.id
            }
            None => self
                .host
                .create_comment(number, body)
                .await
                .map_err(|e| self.api(e))?,
        };
        self.store
            .set_bot_request_note(request.id, note_id_i64(id)?, self.coordinator.now())
            .await?;
        Ok(id)
    }

    /// What each side runs: stored results of its sha reused per host, a
    /// job for the rest.
    async fn sides(
        &self,
        request: &BotRequest,
        rr: &ReviewRequest,
        base: &str,
    ) -> Result<Vec<BotSideJobs>, BotError> {
        let mut sides = Vec::new();
        for (side, sha) in [
            (BotSide::Head, request.head_sha.as_str()),
            (BotSide::Base, base),
        ] {
            let hosts = &self.settings.hosts;
            let found = self
                .store
                .bot_reusable_jobs(
                    request,
                    sha,
                    (!hosts.is_empty()).then_some(hosts.as_slice()),
                )
                .await?;
            let (reused, remaining): (Vec<i64>, Vec<String>) = if hosts.is_empty() {
                // No host list: one earlier job, whole, or a new one.
                match found.iter().map(|r| r.job_id).max() {
                    Some(job) => (vec![job], Vec::new()),
                    None => (Vec::new(), Vec::new()),
                }
            } else {
                let mut reused: Vec<i64> = found.iter().map(|r| r.job_id).collect();
                reused.sort_unstable();
                reused.dedup();
                let remaining = hosts
                    .iter()
                    .filter(|h| !found.iter().any(|r| &r.host == *h))
                    .cloned()
                    .collect();
                (reused, remaining)
            };
            let submit = if !reused.is_empty() && remaining.is_empty() {
                None
            } else {
                let mut spec = self.render(request, rr, sha, side)?;
                if !remaining.is_empty() {
                    pin_to_hosts(&mut spec, &remaining);
                }
                let tasks = self
                    .coordinator
                    .new_tasks(&spec, self.coordinator.now())
                    .await?;
                if tasks.is_empty() {
                    return Err(BotError::NoTasks(if remaining.is_empty() {
                        "the benchmark job has no task to run: no known agent matches its `each_agent` tasks".to_owned()
                    } else {
                        format!(
                            "none of the benchmark hosts ({}) has connected to this coordinator",
                            remaining.join(", ")
                        )
                    }));
                }
                Some((spec, tasks))
            };
            sides.push(BotSideJobs {
                side,
                reused,
                submit,
            });
        }
        Ok(sides)
    }

    /// Renders one side's job: the template with the request's variables,
    /// and the seed's variables as the job's environment
    /// (`TESTFLEET_BOT_*`: request, pipeline id, note id, branch, sha,
    /// pipeline start time, side).
    fn render(
        &self,
        request: &BotRequest,
        rr: &ReviewRequest,
        sha: &str,
        side: BotSide,
    ) -> Result<JobSpec, BotError> {
        let branch = match side {
            BotSide::Head => rr.source_branch.clone(),
            BotSide::Base => rr.target_branch.clone(),
        };
        let note_id = request.note_id.map(|n| n.to_string()).unwrap_or_default();
        let pipeline_id = rr.pipeline_id.clone().unwrap_or_default();
        let started = rr.pipeline_started_at.clone().unwrap_or_default();
        let values = [
            ("sha", sha.to_owned()),
            ("side", side.as_str().to_owned()),
            ("mr", rr.number.to_string()),
            ("project", self.settings.project.clone()),
            ("target_branch", rr.target_branch.clone()),
            ("branch", branch),
            ("pipeline_id", pipeline_id),
            ("pipeline_started_at", started),
            ("note_id", note_id),
        ];
        let mut vars = Vars::new();
        for (k, v) in &values {
            vars.insert(*k, v.clone());
        }
        let rendered = self
            .settings
            .template
            .render(&vars, &self.settings.overrides)?;
        let mut spec = rendered.job;
        for (k, v) in values {
            spec.env
                .entry(format!("TESTFLEET_BOT_{}", k.to_ascii_uppercase()))
                .or_insert(v);
        }
        spec.env
            .entry("TESTFLEET_BOT".to_owned())
            .or_insert_with(|| self.host.kind().to_owned());
        Ok(spec)
    }

    /// Reports a request whose jobs have all ended; else says it runs.
    async fn check_jobs(&self, request: BotRequest) -> Result<Action, BotError> {
        let views = self.coordinator.views();
        let mut head = Vec::new();
        let mut base = Vec::new();
        for job in &request.jobs {
            let view = views.job(job.job_id).await?;
            match job.side {
                BotSide::Head => head.push(view),
                BotSide::Base => base.push(view),
            }
        }
        if head.iter().chain(&base).any(|j| !j.state.is_terminal()) {
            return Ok(Action::Running {
                iid: iid_u64(request.iid),
                head_jobs: side_jobs(&request, BotSide::Head),
                base_jobs: side_jobs(&request, BotSide::Base),
            });
        }
        let mut errors = Vec::new();
        for (side, jobs) in [("head", &head), ("baseline", &base)] {
            for job in jobs {
                errors.extend(job_errors(side, job));
            }
        }
        // A side with no passing task has nothing to compare.
        let empty_side = [&head, &base].iter().any(|jobs| {
            !jobs.iter().any(|j| {
                j.state != JobState::Cancelled
                    && j.tasks
                        .iter()
                        .any(|t| t.outcome.is_some_and(|o| o.is_success()))
            })
        });
        if empty_side {
            let reason = format!("a benchmark job did not pass: {}", errors.join("; "));
            return self.fail(request, &reason).await;
        }
        let ids = |jobs: &[JobView]| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
        let (base_ids, head_ids) = (ids(&base), ids(&head));
        let rounds = u32::try_from(request.confirm_rounds).unwrap_or(u32::MAX);
        if rounds < self.settings.confirm_rounds {
            let view = self.analytics.compare(&base_ids, &head_ids).await?;
            if view.counts.unknown > 0 {
                // Count the round first: a crash then loses a round, never
                // adds one.
                let request = self
                    .store
                    .bump_bot_request_rounds(request.id, self.coordinator.now())
                    .await?;
                let (_, queued) = self
                    .analytics
                    .compare_and_rerun(&base_ids, &head_ids, true)
                    .await?;
                if !queued.is_empty() {
                    return Ok(Action::Confirming {
                        iid: iid_u64(request.iid),
                        round: request.confirm_rounds,
                        unknown: view.counts.unknown,
                        tasks: queued,
                    });
                }
            }
        }
        let mut view = self.analytics.compare(&base_ids, &head_ids).await?;
        view.rounds = rounds;
        let body = note::result_note(&self.context(&request), &view, &errors);
        let note_id = self
            .end(&request, &body, BotRequestState::Reported, None)
            .await?;
        Ok(Action::Reported {
            iid: iid_u64(request.iid),
            note_id,
            headline: note::headline(&view),
        })
    }

    /// Ends a request: the note says `body`, the label is removed, the
    /// request is `state` in the store (in that order: a crash before the
    /// end is redone by the next pass). Returns the note's id.
    async fn end(
        &self,
        request: &BotRequest,
        body: &str,
        state: BotRequestState,
        reason: Option<&str>,
    ) -> Result<u64, BotError> {
        let note_id = self.post_or_find(request, body).await?;
        self.host
            .remove_label(iid_u64(request.iid), &self.settings.label)
            .await
            .map_err(|e| self.api(e))?;
        self.store
            .finish_bot_request(request.id, state, reason, self.coordinator.now())
            .await?;
        Ok(note_id)
    }

    /// Ends a request as failed: its note says why, its label is removed.
    async fn fail(&self, request: BotRequest, reason: &str) -> Result<Action, BotError> {
        let body = note::failed_note(&self.context(&request), reason);
        self.end(&request, &body, BotRequestState::Failed, Some(reason))
            .await?;
        Ok(Action::Failed {
            iid: iid_u64(request.iid),
            reason: reason.to_owned(),
        })
    }
}

/// The recorded note id, as the host numbers it.
fn recorded(request: &BotRequest) -> Option<u64> {
    request.note_id.and_then(|n| u64::try_from(n).ok())
}

/// Makes every task of `spec` run once on each of `hosts` (those known to
/// the coordinator).
fn pin_to_hosts(spec: &mut JobSpec, hosts: &[String]) {
    for task in &mut spec.tasks {
        task.each_agent = true;
        task.requires
            .0
            .insert("hostname".to_owned(), Requirement::OneOf(hosts.to_vec()));
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
