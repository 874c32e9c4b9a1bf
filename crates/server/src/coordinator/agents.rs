//! Agent events: connections, `statusUpdate`, `fetchWork` and log chunks,
//! applied in the order each connection sent them (see `crate::sio`).

use super::*;

impl Coordinator {
    /// Registers a new connection of `host`; returns its connection id.
    pub async fn agent_connected(
        &self,
        host: &str,
        labels: LabelSet,
        machine: Option<MachineInfo>,
        socket: SocketRef,
    ) -> u64 {
        let now = self.now();
        let connection = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if let Err(e) = self
            .store
            .agent_connected(host, &labels, machine.as_ref(), now)
            .await
        {
            tracing::error!(
                agent = host,
                "failed to record agent: {}",
                crate::bots::error_chain(&e)
            );
        }
        let mut sched = self.sched.lock().await;
        let slot = sched
            .agents
            .entry(host.to_owned())
            .or_insert_with(|| AgentSlot::new(LabelSet::new()));
        if let Some(old) = self.sockets.insert(host, connection, socket) {
            // The same host connected again: the newer connection wins.
            tracing::info!(agent = host, "replacing an older connection of this agent");
            let _ = old.disconnect();
        }
        slot.labels = with_hostname(labels, host);
        slot.connected(connection, now);
        tracing::info!(agent = host, "agent connected");
        drop(sched);
        self.push_agent_data().await;
        connection
    }

    /// Handles the end of a connection. `shutdown` retires the agent.
    pub async fn agent_disconnected(&self, host: &str, connection: u64, shutdown: bool) {
        let now = self.now();
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection {
            return;
        }
        self.sockets.remove(host, connection);
        sched.disconnected(host, now);
        drop(sched);
        if shutdown {
            tracing::info!(agent = host, "agent shut down; retired");
            // While the coordinator shuts down its store is closed: the
            // agents leaving then need no record (a restart reads them).
            if let Err(e) = self.store.retire_agent(host).await
                && !self.store.is_closed()
            {
                tracing::error!(
                    agent = host,
                    "failed to retire agent: {}",
                    crate::bots::error_chain(&e)
                );
            }
        } else {
            tracing::warn!(agent = host, "agent connection lost");
        }
        self.push_agent_data().await;
    }

    /// Applies a `statusUpdate`.
    pub async fn status_update(&self, host: &str, connection: u64, update: StatusUpdate) {
        let now = self.now();
        let ts = update
            .update_timestamp
            .as_ref()
            .and_then(parse_update_timestamp);
        let status_text = update.status.clone().unwrap_or_default();
        let stage = if status_text.is_empty() {
            Ok(Stage::Idle)
        } else {
            status_text.parse::<Stage>()
        };
        let stage = match stage {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(agent = host, "ignoring status update: {e}");
                return;
            }
        };
        let detail = update.detail_text();
        if let Some(attempt_id) = update.attempt_id
            && stage != Stage::Idle
            && self.cluster.is_some()
        {
            // It may have come from another coordinator with its work.
            self.adopt_attempt(host, connection, attempt_id).await;
        }
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection {
            return;
        }
        if let (Some(ts), Some(last)) = (ts, slot.last_update_ts)
            && ts < last
        {
            tracing::debug!(agent = host, status = %stage, "ignoring an out-of-order status update");
            return;
        }
        if ts.is_some() {
            slot.last_update_ts = ts;
        }
        slot.status = Some(stage.as_str().to_owned());
        slot.detail = detail.clone();
        if let Some(load) = update.load {
            slot.load = Some(load);
        }
        let running = slot.running.clone();
        let matches_running = running.as_ref().is_some_and(|r| update_matches(&update, r));
        let attempt_id = running
            .as_ref()
            .filter(|_| matches_running)
            .map(|r| r.attempt_id);
        let log_integration = update.integration_id_text();
        let mut to_finish = None;
        match (stage, running) {
            (Stage::Idle, Some(run)) if self.work_lost(&sched, host, &run) => {
                // The agent is idle while we hold an attempt for it: it lost
                // that work (it restarted, or never received it).
                to_finish = Some((
                    run,
                    AttemptOutcome::InfraError,
                    Some(
                        "agent reported idle while this attempt was running (agent restarted?)"
                            .to_owned(),
                    ),
                ));
            }
            (Stage::Done | Stage::Error, Some(run)) if matches_running => {
                let (outcome, reason) = if stage == Stage::Done {
                    (AttemptOutcome::Passed, None)
                } else {
                    (
                        AttemptOutcome::Failed,
                        Some(
                            detail
                                .clone()
                                .unwrap_or_else(|| "agent reported error".into()),
                        ),
                    )
                };
                to_finish = Some((run, outcome, reason));
            }
            (s, Some(run)) if matches_running && s.rank().is_some() => {
                // Progress changes no scheduling decision: it goes to the
                // batched progress writer, without holding up dispatch.
                drop(sched);
                self.store.progress().send(Progress::Stage {
                    attempt_id: run.attempt_id,
                    stage: s,
                    detail: detail.clone(),
                    update_ts: ts,
                    now,
                });
                self.log_work(host, attempt_id, log_integration, stage, detail, now);
                self.push_agent_data().await;
                return;
            }
            (s, None) if s != Stage::Idle && !s.is_final() => {
                tracing::debug!(agent = host, status = %s, "status update for work this coordinator does not know");
            }
            _ => {}
        }
        if let Some((run, _, _)) = &to_finish {
            Self::release_slot(&mut sched, run);
        }
        drop(sched);
        if let Some((run, outcome, reason)) = to_finish {
            self.record_finish(&run, outcome, reason.as_deref(), None, None)
                .await;
        }
        self.log_work(host, attempt_id, log_integration, stage, detail, now);
        self.push_agent_data().await;
    }

    fn log_work(
        &self,
        host: &str,
        attempt_id: Option<i64>,
        integration_id: Option<String>,
        stage: Stage,
        detail: Option<String>,
        now: UnixMillis,
    ) {
        self.store.progress().send(Progress::WorkLog {
            hostname: host.to_owned(),
            attempt_id,
            integration_id,
            status: stage.as_str().to_owned(),
            detail,
            now,
        });
    }

    /// Handles `fetchWork`: answers with work now, or leaves the fetch open.
    pub async fn fetch_work(&self, host: &str, connection: u64) {
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection {
            return;
        }
        if slot.state().claiming() {
            // Work is being claimed for it; this fetch crossed our pick.
            return;
        }
        let mut lost = None;
        if let Some(run) = slot.running.clone() {
            if !self.work_lost(&sched, host, &run) {
                // A fetch sent before our sendWork arrived: the work is on its way.
                tracing::debug!(agent = host, "fetchWork crossed a sendWork; ignored");
                return;
            }
            // Agents fetch only when idle, so the running attempt is gone.
            Self::release_slot(&mut sched, &run);
            lost = Some(run);
        }
        sched.fetch_opened(host);
        drop(sched);
        if let Some(run) = lost {
            self.record_finish(
                &run,
                AttemptOutcome::InfraError,
                Some("agent asked for new work while this attempt was running (agent restarted?)"),
                None,
                None,
            )
            .await;
        }
        self.dispatch().await;
    }

    /// Whether an agent that says it is idle (or asks for work) has really
    /// lost the attempt we hold for it. Work sent on an earlier connection is
    /// lost for sure (the agent restarted or never got it). On the same
    /// connection, an `idle` or `fetchWork` sent just before our `sendWork`
    /// arrived can still be in flight, so only an answer well after the
    /// dispatch counts.
    fn work_lost(&self, sched: &Scheduler, host: &str, run: &RunningAttempt) -> bool {
        let Some(slot) = sched.agents.get(host) else {
            return true;
        };
        if slot.dispatched_on != slot.connection {
            return true;
        }
        self.now() - run.started_at >= DISPATCH_GRACE_MS
    }

    /// Stores a chunk of a running attempt's output.
    pub async fn log_chunk(&self, host: &str, chunk: LogChunk) {
        match self
            .store
            .append_log(chunk.attempt_id, host, chunk.offset, &chunk.data)
            .await
        {
            Ok(true) => self.push_log_update(host, chunk.attempt_id).await,
            Ok(false) => tracing::debug!(
                agent = host,
                attempt = chunk.attempt_id,
                "log chunk dropped (duplicate or not this agent's)"
            ),
            Err(e) => tracing::error!(agent = host, "failed to store log chunk: {e}"),
        }
    }
}

/// Whether a status update is about this attempt: by testfleet's attempt id
/// when the agent sends it, else by `integrationId` (Qt agents), else assumed.
fn update_matches(update: &StatusUpdate, run: &RunningAttempt) -> bool {
    if let Some(id) = update.attempt_id {
        return id == run.attempt_id;
    }
    match update.integration_id_text() {
        Some(id) => id == run.integration_id,
        None => true,
    }
}

/// `updateTimestamp` as an ISO-8601 string or milliseconds since the epoch.
fn parse_update_timestamp(v: &Value) -> Option<UnixMillis> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => parse_rfc3339_millis(s).or_else(|| s.trim().parse::<i64>().ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_timestamps_in_both_shapes() {
        assert_eq!(
            parse_update_timestamp(&json!(1_676_034_673_000i64)),
            Some(1_676_034_673_000)
        );
        assert_eq!(
            parse_update_timestamp(&json!("2023-02-10T13:11:13.000Z")),
            Some(1_676_034_673_000)
        );
        assert_eq!(parse_update_timestamp(&json!("garbage")), None);
    }
}
