//! Artifacts: fenced to the running attempt, capped per attempt, expired.

use testfleet_core::AttemptOutcome;
use testfleet_core::time_fmt::format_millis;
use testfleet_store::{NewArtifact, Store, StoreError, StoredArtifact};
use testfleet_wire::artifact::ArtifactKind;

use crate::support::{INTEGRATION, claim, parse, simple_job, submit};

contract_tests!(
    only_the_running_attempt_on_its_agent_adds_artifacts,
    artifacts_are_listed_per_job_and_attempt,
    retention_drops_old_then_oldest_over_the_total,
    job_inputs_since_lists_live_input_trees,
);

fn art(path: &str, size: u64) -> NewArtifact {
    NewArtifact {
        path: path.into(),
        kind: ArtifactKind::Always,
        digest: "ab".repeat(32),
        size,
    }
}

async fn only_the_running_attempt_on_its_agent_adds_artifacts(store: Store) {
    // corelib-tests keeps at most 1KB per attempt.
    let (job_id, queued) = submit(&store, &parse(INTEGRATION), 1_000).await;
    let task_id = queued[1].id;
    let a = claim(&store, task_id, "h1", 2_000).await.attempt.attempt_id;

    let slot = store.artifact_slot(a, "h1").await.unwrap();
    assert_eq!(slot.attempt_id, a);
    assert_eq!(slot.task_id, task_id);
    assert_eq!(slot.job_id, job_id);
    assert_eq!(slot.task.artifacts.max_size.map(|m| m.0), Some(1_000));
    assert_eq!(slot.used_bytes, 0);
    let err = store.artifact_slot(a, "h2").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("not running on `h2`"), "{err}");
    assert!(matches!(
        store.artifact_slot(999_999, "h1").await,
        Err(StoreError::NotFound(_))
    ));

    let StoredArtifact::Added { id } = store
        .add_artifact(a, "h1", &art("results/x.xml", 600), 1_000, 3_000)
        .await
        .unwrap()
    else {
        panic!("the first artifact fits");
    };
    // Together over the limit: refused; the same path replaces instead.
    assert_eq!(
        store
            .add_artifact(a, "h1", &art("results/y.xml", 600), 1_000, 3_100)
            .await
            .unwrap(),
        StoredArtifact::OverLimit {
            used: 600,
            limit: 1_000
        }
    );
    assert_eq!(
        store
            .add_artifact(a, "h1", &art("results/x.xml", 900), 1_000, 3_200)
            .await
            .unwrap(),
        StoredArtifact::Added { id }
    );
    assert_eq!(store.artifact_slot(a, "h1").await.unwrap().used_bytes, 900);
    // Not from another agent.
    assert!(matches!(
        store
            .add_artifact(a, "h2", &art("z", 1), 1_000, 3_300)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Once the attempt ended (retried here), it adds nothing more.
    store
        .finish_attempt(
            a,
            Some("h1"),
            AttemptOutcome::Failed,
            None,
            None,
            None,
            None,
            4_000,
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_artifact(a, "h1", &art("core.1234", 10), 1_000, 4_100)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.artifact_slot(a, "h1").await,
        Err(StoreError::Conflict(_))
    ));
    // The next attempt has its own slot and limit.
    let b = claim(&store, task_id, "h2", 5_000).await.attempt.attempt_id;
    assert_eq!(store.artifact_slot(b, "h2").await.unwrap().used_bytes, 0);
    assert!(matches!(
        store
            .add_artifact(b, "h2", &art("results/x.xml", 1_000), 1_000, 5_100)
            .await,
        Ok(StoredArtifact::Added { .. })
    ));
    assert!(matches!(
        store
            .add_artifact(a, "h2", &art("results/x.xml", 1), 1_000, 5_200)
            .await,
        Err(StoreError::Conflict(_))
    ));
}

async fn artifacts_are_listed_per_job_and_attempt(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("arts", 2, 1, 2), 1_000).await;
    assert!(store.job_artifacts(job_id).await.unwrap().is_empty());
    assert_eq!(store.last_attempt(queued[0].id).await.unwrap(), None);

    let a = claim(&store, queued[0].id, "h1", 2_000)
        .await
        .attempt
        .attempt_id;
    let b = claim(&store, queued[1].id, "h2", 2_000)
        .await
        .attempt
        .attempt_id;
    assert_eq!(store.last_attempt(queued[0].id).await.unwrap(), Some(a));
    let mut stdout = art("stdout.log", 42);
    stdout.kind = ArtifactKind::Stdout;
    stdout.digest = "cd".repeat(32);
    for (attempt, host, new) in [
        (b, "h2", art("results/b.xml", 7)),
        (a, "h1", art("results/z.xml", 5)),
        (a, "h1", stdout.clone()),
    ] {
        store
            .add_artifact(attempt, host, &new, 1 << 20, 3_000)
            .await
            .unwrap();
    }
    store
        .finish_attempt(
            a,
            Some("h1"),
            AttemptOutcome::Failed,
            None,
            None,
            None,
            None,
            4_000,
        )
        .await
        .unwrap();
    let retry = claim(&store, queued[0].id, "h2", 5_000)
        .await
        .attempt
        .attempt_id;
    store
        .add_artifact(retry, "h2", &art("results/z.xml", 6), 1 << 20, 5_500)
        .await
        .unwrap();
    assert_eq!(store.last_attempt(queued[0].id).await.unwrap(), Some(retry));

    // By task, attempt number, path.
    let list = store.job_artifacts(job_id).await.unwrap();
    let rows: Vec<_> = list
        .iter()
        .map(|v| {
            (
                v.task_id,
                v.task_name.as_str(),
                v.attempt_id,
                v.attempt,
                v.path.as_str(),
                v.size,
                v.outcome,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                queued[0].id,
                "t0",
                a,
                1,
                "results/z.xml",
                5,
                Some(AttemptOutcome::Failed)
            ),
            (
                queued[0].id,
                "t0",
                a,
                1,
                "stdout.log",
                42,
                Some(AttemptOutcome::Failed)
            ),
            (queued[0].id, "t0", retry, 2, "results/z.xml", 6, None),
            (queued[1].id, "t1", b, 1, "results/b.xml", 7, None),
        ]
    );
    let out = &list[1];
    assert_eq!(out.job_id, job_id);
    assert_eq!(out.kind, ArtifactKind::Stdout);
    assert_eq!(out.digest, stdout.digest);
    assert_eq!(out.created_at, format_millis(3_000));
    assert_eq!(&store.artifact(out.id).await.unwrap(), out);
    assert!(matches!(
        store.artifact(999_999).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.job_artifacts(999_999).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn retention_drops_old_then_oldest_over_the_total(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("kept", 1, 0, 2), 1_000).await;
    let a = claim(&store, queued[0].id, "h1", 2_000)
        .await
        .attempt
        .attempt_id;
    for (i, at) in [(0u64, 10), (1, 20), (2, 30), (3, 40)] {
        let mut n = art(&format!("f{i}"), 100);
        n.digest = format!("{i:064}");
        store.add_artifact(a, "h1", &n, 1 << 20, at).await.unwrap();
    }
    // f0 is past the age; then the oldest go until 200 bytes remain.
    let (dropped, released) = store.expire_artifacts(15, 200).await.unwrap();
    assert_eq!(dropped, 2);
    assert_eq!(released, vec![format!("{:064}", 0), format!("{:064}", 1)]);
    let left: Vec<String> = store
        .job_artifacts(job_id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(left, vec!["f2", "f3"]);
    assert!(store.artifact_uses(&format!("{:064}", 2)).await.unwrap());
    assert!(!store.artifact_uses(&format!("{:064}", 0)).await.unwrap());

    // A blob still named by another artifact is not released.
    let mut shared = art("copy-of-f3", 10);
    shared.digest = format!("{:064}", 3);
    store
        .add_artifact(a, "h1", &shared, 1 << 20, 50)
        .await
        .unwrap();
    let (dropped, released) = store.expire_artifacts(45, 1 << 30).await.unwrap();
    assert_eq!(dropped, 2, "f2 and f3 are older than 45");
    assert_eq!(released, vec![format!("{:064}", 2)]);
    assert!(store.artifact_uses(&format!("{:064}", 3)).await.unwrap());
    // Nothing to do.
    assert_eq!(
        store.expire_artifacts(0, 1 << 30).await.unwrap(),
        (0, Vec::new())
    );
}

async fn job_inputs_since_lists_live_input_trees(store: Store) {
    let tree = |name: &str, job: &str, task: &str| {
        parse(&format!(
            "name = \"{name}\"\ninputs = \"sha256:{job}\"\n[[task]]\nname = \"a\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n[[task]]\nname = \"b\"\ninputs = \"sha256:{task}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ))
    };
    assert!(store.job_inputs_since(0).await.unwrap().is_empty());
    // An old job that finished, and a newer one still queued.
    let (_, old) = submit(&store, &tree("old", "11", "22"), 1_000).await;
    for q in &old {
        let a = claim(&store, q.id, "h1", 1_500).await.attempt.attempt_id;
        store
            .finish_attempt(
                a,
                Some("h1"),
                AttemptOutcome::Passed,
                None,
                None,
                None,
                None,
                2_000,
            )
            .await
            .unwrap();
    }
    submit(&store, &tree("new", "33", "22"), 5_000).await;
    assert_eq!(
        store.job_inputs_since(4_000).await.unwrap(),
        vec!["sha256:22".to_owned(), "sha256:33".to_owned()]
    );
    assert_eq!(
        store.job_inputs_since(0).await.unwrap(),
        vec![
            "sha256:11".to_owned(),
            "sha256:22".to_owned(),
            "sha256:33".to_owned()
        ]
    );
    // An old job that has not finished still holds its inputs.
    let (_, stuck) = submit(&store, &tree("stuck", "44", "55"), 100).await;
    assert_eq!(stuck.len(), 2);
    let live = store.job_inputs_since(4_000).await.unwrap();
    assert!(live.contains(&"sha256:44".to_owned()));
    assert!(live.contains(&"sha256:55".to_owned()));
    assert!(!live.contains(&"sha256:11".to_owned()));
}
