//! Dev mode (`--dev`): `queryWork` shows an agent the head of its queue and
//! `mockItem` queues a mock work item for it.

use super::*;

impl Coordinator {
    /// Dev mode `queryWork`: the head of the agent's queue, not removed.
    pub async fn query_work(&self, host: &str) -> Option<WorkItem> {
        let head = self.sched.lock().await.head_for(host)?;
        match self.store.work_item_for_task(head, None).await {
            Ok(item) => Some(item),
            Err(e) => {
                tracing::error!(task = head, "failed to build work item: {e}");
                None
            }
        }
    }

    /// Dev mode `mockItem`: queues a mock work item for this agent when its
    /// queue is empty.
    pub async fn mock_item(&self, host: &str) -> Result<bool, SubmitError> {
        if self.sched.lock().await.head_for(host).is_some() {
            return Ok(false);
        }
        let now = self.now();
        let id = format!("{}", 100_000_000 + now.rem_euclid(900_000_000));
        let spec = JobSpec {
            name: format!("mock-{host}-{id}"),
            queue: "default".into(),
            priority: 0,
            source: None,
            integration: Some(IntegrationSpec {
                id,
                timestamp: Some(Timestamp(now)),
                branch: Some("dev".into()),
                sha: Some(format!("{:040x}", u128::try_from(now).unwrap_or(0))),
                url: None,
                data: Vec::new(),
            }),
            env: BTreeMap::new(),
            inputs: None,
            tasks: vec![TaskSpec {
                name: "mock".into(),
                requires: testfleet_core::Requirements(BTreeMap::from([(
                    "hostname".to_owned(),
                    testfleet_core::Requirement::Exact(host.to_owned()),
                )])),
                each_agent: false,
                priority: None,
                steps: vec![StepSpec {
                    stage: testfleet_core::state::StepStage::Test,
                    run: "echo mock work item".into(),
                    timeout: testfleet_core::job::DurationSpec(Duration::from_secs(60)),
                    env: BTreeMap::new(),
                }],
                results: Vec::new(),
                artifacts: Default::default(),
                retries: Default::default(),
                env: BTreeMap::new(),
                max_runtime: None,
                silence_timeout: None,
                inputs: None,
                repeat: 1,
                bench: None,
            }],
        };
        self.submit(spec).await?;
        Ok(true)
    }
}
