//! The closed loop of `testfleet compare --confirm`: while a verdict is
//! UNKNOWN, the tasks that measured its benchmark on both sides run once
//! more (a new attempt of the same task, on its pinned host when it has
//! one), and the comparison is made again with every value pooled.
//!
//! A round: queue the tasks again (`Coordinator::rerun_tasks`, one store
//! transaction), wait until each has finished and its values are in the
//! series, compare again. It stops when no row is UNKNOWN, after
//! `max_rounds` rounds, when nothing could be queued again (the tasks are
//! still queued or running), or at the deadline; the answer is then the last
//! comparison. No transaction is held while waiting: it polls the tasks'
//! states through the read handle.

use std::collections::BTreeSet;

use testfleet_core::TaskState;
use testfleet_store::StoreError;
use testfleet_wire::analysis::{CompareRequest, CompareView};
use tokio::time::Instant;

use super::compare::check_side;
use super::{Analytics, AnalyticsError, Result};

/// Rounds when the request does not say.
pub const DEFAULT_ROUNDS: u32 = 3;
/// Most rounds a request may ask for.
pub const MAX_ROUNDS: u32 = 10;

/// What a confirmation did, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmed {
    /// The tasks queued again, over all rounds.
    pub tasks: BTreeSet<i64>,
    /// Whether the deadline ended the loop.
    pub timed_out: bool,
}

impl Analytics {
    /// `POST /api/v1/compare`: compares, and with `confirm` re-runs both
    /// sides of the UNKNOWN rows up to `max_rounds` times.
    pub async fn compare_request(&self, req: &CompareRequest) -> Result<(CompareView, Confirmed)> {
        let rounds = match (req.confirm, req.max_rounds) {
            (_, Some(n)) if !(1..=MAX_ROUNDS).contains(&n) => {
                return Err(AnalyticsError::invalid(
                    "max_rounds",
                    format!("{n} is out of range; use 1 to {MAX_ROUNDS}"),
                ));
            }
            (false, _) => 0,
            (true, n) => n.unwrap_or(DEFAULT_ROUNDS),
        };
        let view = self.compare(&req.baseline, &req.contender).await?;
        if rounds == 0 || view.counts.unknown == 0 {
            return Ok((view, Confirmed::default()));
        }
        let baseline = check_side("baseline", &req.baseline)?;
        let contender = check_side("contender", &req.contender)?;
        self.confirm(&baseline, &contender, rounds).await
    }

    /// One confirmation step that does not wait (the merge-request bots'):
    /// the comparison and, when `rerun` and some rows are UNKNOWN, the tasks
    /// behind them queued again. Returns the comparison and the tasks
    /// queued (none when nothing is unknown or nothing could run again).
    pub async fn compare_and_rerun(
        &self,
        baseline: &[i64],
        contender: &[i64],
        rerun: bool,
    ) -> Result<(CompareView, Vec<i64>)> {
        let view = self.compare(baseline, contender).await?;
        if !rerun || view.counts.unknown == 0 {
            return Ok((view, Vec::new()));
        }
        let baseline = check_side("baseline", baseline)?;
        let contender = check_side("contender", contender)?;
        let compared = self.compare_jobs(&baseline, &contender).await?;
        let tasks: Vec<i64> = compared.unknown_tasks.into_iter().collect();
        let queued = self.coordinator.rerun_tasks(&tasks).await?;
        Ok((view, queued))
    }

    /// The loop itself, on checked sides.
    async fn confirm(
        &self,
        baseline: &[i64],
        contender: &[i64],
        max_rounds: u32,
    ) -> Result<(CompareView, Confirmed)> {
        let deadline = Instant::now() + self.confirm_timeout;
        let mut done = Confirmed::default();
        let mut compared = self.compare_jobs(baseline, contender).await?;
        let mut rounds = 0;
        while rounds < max_rounds && !compared.unknown_tasks.is_empty() {
            let tasks: Vec<i64> = compared.unknown_tasks.iter().copied().collect();
            let queued = self.coordinator.rerun_tasks(&tasks).await?;
            if queued.is_empty() {
                tracing::info!(?tasks, "confirm: no task could run again; answering");
                break;
            }
            done.tasks.extend(&queued);
            rounds += 1;
            tracing::info!(round = rounds, tasks = ?queued, "confirm: tasks queued again");
            let finished = self.wait_finished(&queued, deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let caught_up = finished && self.wait_caught_up(remaining).await?;
            compared = self.compare_jobs(baseline, contender).await?;
            if !caught_up {
                done.timed_out = true;
                tracing::warn!(
                    round = rounds,
                    "confirm: the deadline passed; answering with what is there"
                );
                break;
            }
        }
        compared.view.rounds = rounds;
        Ok((compared.view, done))
    }

    /// Waits until every task of `tasks` has finished (passed, failed or
    /// cancelled); false when the deadline came first.
    async fn wait_finished(&self, tasks: &[i64], deadline: Instant) -> Result<bool> {
        let mut waiting: Vec<i64> = tasks.to_vec();
        loop {
            let mut still = Vec::with_capacity(waiting.len());
            for id in waiting {
                match self.views().task(id).await {
                    Ok(t) if t.task.state.is_terminal() => {}
                    Ok(t) => {
                        debug_assert!(matches!(
                            t.task.state,
                            TaskState::Queued | TaskState::Running
                        ));
                        still.push(id);
                    }
                    // A task is never deleted; an unknown one has nothing to wait for.
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if still.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            waiting = still;
            tokio::time::sleep(self.confirm_poll).await;
        }
    }
}
