//! kill -9 of the server in the middle of a run of agents: every
//! acknowledged spec, agent, task and event is there after the restart; the
//! tasks that were running on internal agents run again as their next
//! attempt and complete; and 100 watchers that resume from their last event
//! id see one gap-free sequence each, identical to each other and to
//! ListEvents.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;

use crate::common::agents::{spawn, task_when};
use crate::common::binary::{Binary, ConfigFile};
use crate::common::fake_llm::{ANSWER, FakeLlm};

const WATCHERS: usize = 100;

fn config(dir: &Path, fake: &FakeLlm) -> std::path::PathBuf {
    ConfigFile::new()
        .hash_embeddings()
        .fake_model("fake", &fake.openai_url())
        .write(dir)
}

/// Every event id in the log, in order.
async fn all_ids(c: &mut AgentServiceClient<Channel>) -> Vec<u64> {
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let page = c
            .list_events(ListEventsRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.events.iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

/// A watcher: WatchEvents from `after` (or the start), each event id into
/// `seen`, until the stream breaks.
fn watch(
    channel: Channel,
    after: Option<u64>,
    seen: Arc<Mutex<Vec<u64>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let request = WatchEventsRequest {
            after_id: after.unwrap_or(0),
            from_start: after.is_none(),
            ..Default::default()
        };
        let Ok(response) = AgentServiceClient::new(channel).watch_events(request).await else {
            return;
        };
        let mut stream = response.into_inner();
        while let Ok(Some(m)) = stream.message().await {
            seen.lock().unwrap().push(m.event.unwrap().id);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_nothing_and_watchers_resume_without_gaps() {
    // 300 words 10 ms apart: a task runs for 3 s, long enough to be killed.
    let fake = FakeLlm::start(Duration::from_millis(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &fake);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let (server, channel) = Binary::start_with(&data, &args).await;
    let mut c = AgentServiceClient::new(channel.clone());
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "writer".into(),
            model: "fake".into(),
            capabilities: vec!["write".into()],
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    spawn(&mut c, "writer", 2).await;
    let seen: Vec<Arc<Mutex<Vec<u64>>>> = (0..WATCHERS).map(|_| Arc::default()).collect();
    let watchers: Vec<_> = seen
        .iter()
        .map(|s| watch(channel.clone(), None, s.clone()))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let t = c
            .submit_task(SubmitTaskRequest {
                target: Some(TaskTarget {
                    target: Some(task_target::Target::Capability("write".into())),
                }),
                prompt: format!("part {i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        tasks.push(t);
    }
    for t in &tasks[..2] {
        task_when(&mut c, &t.id, |t| t.state == TaskState::Running as i32).await;
    }
    let before = all_ids(&mut c).await;

    server.kill();
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("every watcher sees its stream break")
            .unwrap();
    }
    let (server, channel) = Binary::start_with(&data, &args).await;
    let mut c = AgentServiceClient::new(channel.clone());
    assert!(
        all_ids(&mut c).await.starts_with(&before),
        "every acknowledged event is still there"
    );
    // Each watcher resumes after the last event it saw.
    let resumed: Vec<_> = seen
        .iter()
        .map(|s| {
            let last = s.lock().unwrap().last().copied();
            watch(channel.clone(), Some(last.unwrap_or(0)), s.clone())
        })
        .collect();
    for (i, t) in tasks.iter().enumerate() {
        let done = tokio::time::timeout(Duration::from_secs(60), task_when_long(&mut c, &t.id))
            .await
            .expect("every task ends after the restart");
        assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
        assert_eq!(done.output_text, *ANSWER);
        let want = if i < 2 { 2 } else { 1 };
        assert_eq!(done.attempt, want, "the killed attempts counted: {done:?}");
    }
    let log = all_ids(&mut c).await;
    assert_eq!(
        log,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "ids strictly increasing"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for s in &seen {
        while s.lock().unwrap().len() < log.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a watcher fell behind"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            *s.lock().unwrap(),
            log,
            "no gap, no duplicate, across the crash"
        );
    }
    for r in resumed {
        r.abort();
    }
    server.stop();
}

/// Task `id` once it has ended (polled; a restart's re-run takes seconds).
async fn task_when_long(c: &mut AgentServiceClient<Channel>, id: &str) -> Task {
    loop {
        let t = c
            .get_task(GetTaskRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        if ![TaskState::Pending as i32, TaskState::Running as i32].contains(&t.state) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
