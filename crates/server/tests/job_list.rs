//! The jobs list over REST carries counts, not tasks; a job's tasks come
//! from `GET /api/v1/jobs/{id}/tasks` a page at a time; the dashboard's jobs
//! page shows the counts.

use serde_json::Value;
use testfleet_core::JobState;
use testfleet_testkit::server::TestServer;

fn job_file(name: &str, tasks: usize) -> String {
    let mut toml = format!("name = \"{name}\"\n");
    for i in 0..tasks {
        toml.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    toml
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn start() -> TestServer {
    TestServer::in_tempdir(|config| config.agent_secret = Some("list-secret".into())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_counts_tasks_and_carries_none() {
    let h = start().await;
    let kept = h.api.submit(&job_file("kept", 7)).await.unwrap();
    let stopped = h.api.submit(&job_file("stopped", 3)).await.unwrap();
    h.api.cancel(stopped.id).await.unwrap();

    let (status, body) = get(&format!("{}/api/v1/jobs?limit=1", h.url)).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let jobs = list.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{body}");
    // Counts, not tasks: no task's name, id or job id is in the answer.
    assert!(jobs[0]["tasks"].is_object(), "{body}");
    assert!(
        !body.contains("\"t0\"") && !body.contains("job_id"),
        "{body}"
    );
    assert_eq!(jobs[0]["tasks"]["cancelled"], 3, "{body}");
    assert_eq!(jobs[0]["outcomes"]["cancelled"], 3, "{body}");

    let jobs = h.api.jobs(10, None).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![stopped.id, kept.id]
    );
    assert_eq!(jobs[0].state, JobState::Cancelled);
    assert_eq!((jobs[0].tasks.total, jobs[0].tasks.finished()), (3, 3));
    assert_eq!((jobs[1].tasks.total, jobs[1].tasks.queued), (7, 7));
    assert_eq!(jobs[1].outcomes.total(), 0);
    assert_eq!(jobs[1].attempts, 0);
    let queued = h.api.jobs(10, Some("queued")).await.unwrap();
    assert_eq!(
        queued.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_endpoint_pages_a_job_in_id_order() {
    let h = start().await;
    let other = h.api.submit(&job_file("other", 2)).await.unwrap();
    let job = h.api.submit(&job_file("paged", 7)).await.unwrap();
    let ids: Vec<i64> = job.tasks.iter().map(|t| t.id).collect();

    let mut seen = Vec::new();
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = h.api.job_tasks(job.id, after, 3).await.unwrap();
        assert_eq!((page.job_id, page.total), (job.id, 7));
        sizes.push(page.tasks.len());
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seen, ids);
    // The default page holds every task of a small job; the tasks are the
    // job's own, as the job's view shows them.
    let all = h.api.job_tasks(job.id, None, 1000).await.unwrap();
    assert_eq!(all.tasks, job.tasks);
    assert_eq!(all.next_after, None);
    let (status, body) = get(&format!("{}/api/v1/jobs/{}/tasks", h.url, other.id)).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(page["next_after"], Value::Null, "{body}");

    // Bad input is refused with a reason.
    for (query, says) in [
        ("limit=0", "limit 0 is out of range; use 1 to 1000"),
        ("limit=1001", "limit 1001 is out of range; use 1 to 1000"),
        ("after=-5", "after -5 is not a task id"),
    ] {
        let (status, body) = get(&format!("{}/api/v1/jobs/{}/tasks?{query}", h.url, job.id)).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    let (status, body) = get(&format!("{}/api/v1/jobs/999999/tasks", h.url)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("job 999999 not found"), "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_counts_and_pages_a_jobs_tasks() {
    let h = start().await;
    let big = h.api.submit(&job_file("big", 501)).await.unwrap();
    let stopped = h.api.submit(&job_file("stopped", 2)).await.unwrap();
    h.api.cancel(stopped.id).await.unwrap();

    let (status, jobs) = get(&format!("{}/jobs", h.url)).await;
    assert_eq!(status, 200);
    assert!(jobs.contains("<td>0/501</td>"), "{jobs}");
    assert!(
        jobs.contains("<td>2/2</td>") && jobs.contains("<td>2 cancelled</td>"),
        "{jobs}"
    );
    assert!(!jobs.contains("t500"), "the jobs page lists no task");

    // The job page shows the counts and the first 500 tasks, then a link on.
    let (status, first) = get(&format!("{}/jobs/{}", h.url, big.id)).await;
    assert_eq!(status, 200);
    assert!(first.contains("<dd>0/501</dd>"), "{first}");
    let row = |i: usize| format!("<a href=\"/tasks/{}\">t{i}</a>", big.tasks[i].id);
    assert!(first.contains(&row(499)) && !first.contains(&row(500)));
    let next = big.tasks[499].id;
    let link = format!("/jobs/{}?after={next}", big.id);
    assert!(first.contains(&link), "{first}");
    let (status, second) = get(&format!("{}{link}", h.url)).await;
    assert_eq!(status, 200);
    assert!(second.contains(&row(500)) && !second.contains(&row(499)));
    assert!(!second.contains("?after="), "the last page links nowhere");
    h.stop().await;
}
