//! External workers through the Work stream: leases pushed to a worker,
//! progress, checkpoints and results acknowledged; a broken stream or a
//! silent worker loses its lease to another worker with attempt + 1, and
//! what the old attempt sends later is refused; cancellation and StopAgent
//! reach the worker at once; a restart keeps leases for the worker to
//! reattach. Timings are shortened (`[agents]` settings) so that the
//! grace period and lease timeout pass in well under a second.

use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::work_request::Message;
use agentd::pb::v1::work_response::Directive;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::common::agents::{agents, spawn, task as get_task, task_when};
use crate::common::structs::to_struct;
use crate::common::workers::{TestWorker, heartbeat, hello, open};
use crate::common::{TestServer, test_config, violated_fields};

const HEARTBEAT: Duration = Duration::from_millis(100);
const LEASE: Duration = Duration::from_millis(800);
const GRACE: Duration = Duration::from_millis(300);

fn worker_config() -> (agentd::config::Config, tempfile::TempDir) {
    let (mut config, dir) = test_config();
    config.agents.worker_heartbeat_interval = HEARTBEAT;
    config.agents.worker_lease_timeout = LEASE;
    config.agents.worker_grace = GRACE;
    (config, dir)
}

async fn start() -> TestServer {
    let (config, dir) = worker_config();
    TestServer::start_with(config, dir, |s| s).await
}

async fn worker_spec(c: &mut AgentServiceClient<Channel>, name: &str, limit: u32) {
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: name.into(),
            capabilities: vec!["etl".into()],
            concurrency_limit: limit,
            ..Default::default()
        }),
    })
    .await
    .expect("RegisterSpec");
}

async fn submit_etl(c: &mut AgentServiceClient<Channel>, prompt: &str) -> Task {
    c.submit_task(SubmitTaskRequest {
        target: Some(TaskTarget {
            target: Some(task_target::Target::Capability("etl".into())),
        }),
        prompt: prompt.into(),
        ..Default::default()
    })
    .await
    .expect("SubmitTask")
    .into_inner()
    .task
    .expect("task")
}

async fn agent(c: &mut AgentServiceClient<Channel>, id: &str) -> Agent {
    c.get_agent(GetAgentRequest { id: id.into() })
        .await
        .expect("GetAgent")
        .into_inner()
        .agent
        .expect("agent")
}

async fn event_kinds(c: &mut AgentServiceClient<Channel>, filter: EventFilter) -> Vec<i32> {
    c.list_events(ListEventsRequest {
        filter: Some(filter),
        page_size: 1000,
        ..Default::default()
    })
    .await
    .expect("ListEvents")
    .into_inner()
    .events
    .into_iter()
    .map(|e| e.kind)
    .collect()
}

fn task_events(task: &str) -> EventFilter {
    EventFilter {
        task_id: task.into(),
        ..Default::default()
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_leases_reports_progress_and_results_and_is_acknowledged() {
    let server = start().await;
    let mut c = agents(server.channel().await);
    worker_spec(&mut c, "etl-worker", 2).await;

    let mut w = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    assert_eq!(
        w.registered.heartbeat_interval,
        Some(prost_types::Duration::try_from(HEARTBEAT).unwrap())
    );
    assert_eq!(
        w.registered.lease_timeout,
        Some(prost_types::Duration::try_from(LEASE).unwrap())
    );
    let a = agent(&mut c, &w.agent_id).await;
    assert_eq!(a.kind, AgentKind::Worker as i32);
    assert_eq!(a.state, AgentState::Idle as i32);
    assert!(a.last_heartbeat_at.is_some());

    // A task for the capability is pushed to the worker at once.
    let task = submit_etl(&mut c, "load the file").await;
    let lease = w.assignment().await;
    let leased = lease.task.expect("task");
    assert_eq!(leased.id, task.id);
    assert_eq!(leased.attempt, 1);
    assert_eq!(leased.prompt, "load the file");
    let running = get_task(&mut c, &task.id).await;
    assert_eq!(running.state, TaskState::Running as i32);
    assert_eq!(running.agent_id, w.agent_id);
    assert_eq!(
        agent(&mut c, &w.agent_id).await.running_task_ids,
        vec![task.id.clone()]
    );

    // Progress, a checkpoint, and bad reports, each acknowledged.
    w.send(Message::Progress(TaskProgress {
        task_id: task.id.clone(),
        fraction: 0.5,
        message: "half".into(),
        attempt: 1,
    }));
    let ack = w.ack().await;
    assert!(ack.accepted, "{ack:?}");
    assert_eq!((ack.of.as_str(), ack.attempt), ("progress", 1));
    let t = get_task(&mut c, &task.id).await;
    assert_eq!((t.progress, t.progress_message.as_str()), (0.5, "half"));
    w.send(Message::Progress(TaskProgress {
        task_id: task.id.clone(),
        fraction: 2.0,
        ..Default::default()
    }));
    let ack = w.ack().await;
    assert!(
        !ack.accepted && ack.reason.starts_with("progress.fraction"),
        "{ack:?}"
    );
    w.send(
        heartbeat(vec![TaskCheckpoint {
            task_id: task.id.clone(),
            attempt: 1,
            data: Some(to_struct(serde_json::json!({ "rows": 500 }))),
        }])
        .message
        .unwrap(),
    );
    let ack = w.ack().await;
    assert!(ack.accepted && ack.of == "checkpoint", "{ack:?}");
    let refused = w.result("01NOSUCHTASK0000000000000", 0, "x").await;
    assert!(
        !refused.accepted && refused.reason.starts_with("result.task_id"),
        "{refused:?}"
    );
    let refused = w.result(&task.id, 7, "x").await;
    assert!(
        !refused.accepted && refused.reason.starts_with("result.attempt"),
        "{refused:?}"
    );

    // The result, with structured output.
    w.send(Message::Result(TaskResult {
        task_id: task.id.clone(),
        output_text: "1000 rows".into(),
        output: Some(to_struct(serde_json::json!({ "rows": 1000 }))),
        attempt: 1,
    }));
    let ack = w.ack().await;
    assert!(ack.accepted && ack.of == "result", "{ack:?}");
    let done = get_task(&mut c, &task.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    assert_eq!(done.output_text, "1000 rows");
    assert_eq!(
        done.output.unwrap().fields["rows"].kind,
        Some(prost_types::value::Kind::NumberValue(1000.0))
    );
    assert_eq!(
        done.checkpoint.unwrap().fields["rows"].kind,
        Some(prost_types::value::Kind::NumberValue(500.0))
    );
    let a = agent(&mut c, &w.agent_id).await;
    assert_eq!((a.state, a.tasks_succeeded), (AgentState::Idle as i32, 1));
    assert!(a.running_task_ids.is_empty());
    let again = w.result(&task.id, 1, "twice").await;
    assert!(!again.accepted, "a second result is refused: {again:?}");
    assert_eq!(get_task(&mut c, &task.id).await.output_text, "1000 rows");
    use AgentEventKind as K;
    assert_eq!(
        event_kinds(&mut c, task_events(&task.id)).await,
        vec![
            K::TaskSubmitted as i32,
            K::TaskAssigned as i32,
            K::TaskProgress as i32,
            K::TaskCompleted as i32
        ]
    );

    // A retryable failure runs again (after the backoff) as attempt 2; a
    // final one fails the task with the worker's message.
    let task = submit_etl(&mut c, "flaky").await;
    assert_eq!(w.assignment().await.task.unwrap().attempt, 1);
    w.send(Message::Failure(TaskFailure {
        task_id: task.id.clone(),
        message: "disk busy".into(),
        retryable: true,
        attempt: 1,
    }));
    assert!(w.ack().await.accepted);
    let second = w.assignment().await.task.unwrap();
    assert_eq!((second.id.as_str(), second.attempt), (task.id.as_str(), 2));
    w.send(Message::Failure(TaskFailure {
        task_id: task.id.clone(),
        message: "bad input file".into(),
        retryable: false,
        attempt: 2,
    }));
    assert!(w.ack().await.accepted);
    let failed = task_when(&mut c, &task.id, |t| t.state == TaskState::Failed as i32).await;
    let error = failed.error.unwrap();
    assert_eq!(error.reason, "WORKER_FAILED");
    assert!(error.message.contains("bad input file"), "{error:?}");
    assert_eq!(agent(&mut c, &w.agent_id).await.tasks_failed, 2);

    // The dashboard's view of all this.
    let stats = c
        .get_agent_stats(GetAgentStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.agents_by_state.get("idle"), Some(&1));
    assert_eq!(stats.tasks_by_state.get("succeeded"), Some(&1));
    assert_eq!(stats.tasks_by_state.get("failed"), Some(&1));
    assert_eq!((stats.queue_depth, stats.workers_connected), (0, 1));
    assert!(
        (stats.tasks_per_second - 2.0 / 60.0).abs() < 1e-9,
        "{stats:?}"
    );
    assert!(stats.task_latency_p50.is_some() && stats.task_latency_p99.is_some());
    assert_eq!(
        stats.window,
        Some(prost_types::Duration {
            seconds: 60,
            nanos: 0
        })
    );
    let err = c
        .get_agent_stats(GetAgentStatsRequest {
            window: Some(prost_types::Duration {
                seconds: 7200,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["window"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_task_goes_to_another_with_its_checkpoint_and_the_old_result_is_refused() {
    let server = start().await;
    let mut c = agents(server.channel().await);
    worker_spec(&mut c, "etl-worker", 1).await;
    let mut first = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    first.heartbeat_every(HEARTBEAT);
    let task = submit_etl(&mut c, "long job").await;
    assert_eq!(first.assignment().await.task.unwrap().attempt, 1);
    first.send(
        heartbeat(vec![TaskCheckpoint {
            task_id: task.id.clone(),
            attempt: 1,
            data: Some(to_struct(serde_json::json!({ "offset": 42 }))),
        }])
        .message
        .unwrap(),
    );
    assert!(first.ack().await.accepted);
    let mut second = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    second.heartbeat_every(HEARTBEAT);

    // SIGKILL, as far as the server can tell: the stream breaks.
    let first_id = first.agent_id.clone();
    let killed = std::time::Instant::now();
    drop(first);
    let lease = second.assignment().await;
    let waited = killed.elapsed();
    let retry = lease.task.unwrap();
    assert_eq!((retry.id.as_str(), retry.attempt), (task.id.as_str(), 2));
    assert!(
        waited >= GRACE,
        "reassigned after the grace period, not before: {waited:?}"
    );
    assert_eq!(
        retry.checkpoint.unwrap().fields["offset"].kind,
        Some(prost_types::value::Kind::NumberValue(42.0)),
        "the next attempt resumes from the checkpoint"
    );
    let gone = agent(&mut c, &first_id).await;
    assert_eq!(gone.state, AgentState::Stopped as i32);
    assert_eq!(gone.tasks_failed, 1);

    // The old worker comes back as its agent; its late result is refused
    // and the new attempt's result stands.
    let mut back = TestWorker::connect(server.channel().await, "etl-worker", &first_id).await;
    assert_eq!(back.agent_id, first_id);
    assert_eq!(
        agent(&mut c, &first_id).await.state,
        AgentState::Idle as i32
    );
    let late = back.result(&task.id, 1, "stale").await;
    assert!(
        !late.accepted && late.reason.starts_with("result.task_id"),
        "{late:?}"
    );
    assert!(second.result(&task.id, 2, "fresh").await.accepted);
    let done = get_task(&mut c, &task.id).await;
    assert_eq!(
        (done.state, done.output_text.as_str()),
        (TaskState::Succeeded as i32, "fresh")
    );
    assert_eq!(done.agent_id, second.agent_id);
    use AgentEventKind as K;
    let kinds = event_kinds(&mut c, task_events(&task.id)).await;
    assert_eq!(
        kinds,
        vec![
            K::TaskSubmitted as i32,
            K::TaskAssigned as i32,
            K::TaskReassigned as i32,
            K::TaskAssigned as i32,
            K::TaskCompleted as i32
        ]
    );
    let agent_kinds = event_kinds(
        &mut c,
        EventFilter {
            agent_id: first_id.clone(),
            kinds: vec![
                K::WorkerConnected as i32,
                K::WorkerDisconnected as i32,
                K::AgentStopped as i32,
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        agent_kinds,
        vec![
            K::WorkerConnected as i32,
            K::WorkerDisconnected as i32,
            K::AgentStopped as i32,
            K::WorkerConnected as i32
        ]
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_loses_its_lease_and_its_result_after_waking_is_refused() {
    let server = start().await;
    let mut c = agents(server.channel().await);
    worker_spec(&mut c, "etl-worker", 1).await;
    // The stopped one never heartbeats (SIGSTOP right after it took the
    // task); its stream stays open.
    let mut stopped = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    let task = submit_etl(&mut c, "job").await;
    assert_eq!(stopped.assignment().await.task.unwrap().attempt, 1);
    let mut alive = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    alive.heartbeat_every(HEARTBEAT);
    let retry = alive.assignment().await.task.unwrap();
    assert_eq!((retry.id.as_str(), retry.attempt), (task.id.as_str(), 2));
    let silent = agent(&mut c, &stopped.agent_id).await;
    assert_eq!(silent.state, AgentState::Unresponsive as i32);
    use AgentEventKind as K;
    assert!(
        event_kinds(
            &mut c,
            EventFilter {
                agent_id: stopped.agent_id.clone(),
                ..Default::default()
            }
        )
        .await
        .contains(&(K::HeartbeatMissed as i32))
    );

    // SIGCONT: it was told to stop the task; it heartbeats again, and the
    // result of its lost attempt is refused.
    match stopped.next().await.unwrap() {
        Directive::Cancel(cancel) => assert_eq!(cancel.task_id, task.id),
        other => panic!("expected the lost lease's cancellation, got {other:?}"),
    }
    stopped.send(heartbeat(Vec::new()).message.unwrap());
    let late = stopped.result(&task.id, 1, "late").await;
    assert!(!late.accepted, "{late:?}");
    assert!(alive.result(&task.id, 2, "on time").await.accepted);
    let done = get_task(&mut c, &task.id).await;
    assert_eq!(done.output_text, "on time");
    let woke = agent(&mut c, &stopped.agent_id).await;
    assert_eq!(
        woke.state,
        AgentState::Idle as i32,
        "back after its heartbeat"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_timeouts_and_stop_reach_the_worker_and_bad_streams_are_refused() {
    let server = start().await;
    let mut c = agents(server.channel().await);
    worker_spec(&mut c, "etl-worker", 4).await;
    let mut w = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    w.heartbeat_every(HEARTBEAT);

    // CancelTask: the worker hears of it at once.
    let task = submit_etl(&mut c, "cancel me").await;
    w.assignment().await;
    let cancelled = c
        .cancel_task(CancelTaskRequest {
            id: task.id.clone(),
            reason: "not needed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled as i32);
    match w.next().await.unwrap() {
        Directive::Cancel(x) => assert_eq!(
            (x.task_id, x.reason),
            (task.id.clone(), "not needed".into())
        ),
        other => panic!("expected a cancellation, got {other:?}"),
    }
    assert!(!w.result(&task.id, 1, "too late").await.accepted);

    // A task's timeout ends its lease.
    let timed = c
        .submit_task(SubmitTaskRequest {
            target: Some(TaskTarget {
                target: Some(task_target::Target::AgentId(w.agent_id.clone())),
            }),
            prompt: "slow".into(),
            timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    w.assignment().await;
    match w.next().await.unwrap() {
        Directive::Cancel(x) => assert_eq!(x.task_id, timed.id),
        other => panic!("expected the timeout's cancellation, got {other:?}"),
    }
    let t = get_task(&mut c, &timed.id).await;
    assert_eq!(t.state, TaskState::TimedOut as i32);

    // StopAgent closes the stream; the agent cannot be reattached.
    let running = submit_etl(&mut c, "stop me").await;
    w.assignment().await;
    c.stop_agent(StopAgentRequest {
        id: w.agent_id.clone(),
        cancel_tasks: false,
    })
    .await
    .unwrap();
    let ended = loop {
        match w.next().await {
            Ok(Directive::Cancel(_) | Directive::Ack(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    let back = open(server.channel().await, hello("etl-worker", &w.agent_id, 0))
        .await
        .unwrap_err();
    assert_eq!(back.code(), Code::FailedPrecondition, "{back:?}");
    let requeued = get_task(&mut c, &running.id).await;
    assert_eq!(
        requeued.state,
        TaskState::Pending as i32,
        "waits for another worker"
    );

    // Bad streams.
    let not_hello = open(server.channel().await, heartbeat(Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(not_hello.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&not_hello), vec!["hello"]);
    let unknown = open(server.channel().await, hello("no-such-spec", "", 0))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let no_agent = open(
        server.channel().await,
        hello("etl-worker", "01NOSUCHAGENT000000000000", 0),
    )
    .await
    .unwrap_err();
    assert_eq!(no_agent.code(), Code::NotFound, "{no_agent:?}");
    let too_many = open(server.channel().await, hello("etl-worker", "", 5000))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&too_many),
        vec!["hello.max_concurrent_tasks"]
    );
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "thinker".into(),
            model: "local".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let internal = spawn(&mut c, "thinker", 1).await.remove(0);
    let wrong = open(server.channel().await, hello("thinker", &internal.id, 0))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");
    let mut twice = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    twice.send(hello("etl-worker", "", 0).message.unwrap());
    let status = twice.next().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["hello"]);

    // A newer stream for the same agent ends the older one.
    let mut old = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    let _new = TestWorker::connect(server.channel().await, "etl-worker", &old.agent_id).await;
    let status = old.next().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(reason(&status), "SUPERSEDED");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_a_restart_for_its_worker_to_reattach() {
    let server = start().await;
    let mut c = agents(server.channel().await);
    worker_spec(&mut c, "etl-worker", 1).await;
    let mut w = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    let task = submit_etl(&mut c, "survive").await;
    assert_eq!(w.assignment().await.task.unwrap().attempt, 1);
    let id = w.agent_id.clone();
    drop(w);
    let data = server.stop_keeping_data().await;
    let (mut config, _) = worker_config();
    config.data_dir = data.path().join("data");
    let server = TestServer::start_with(config, data, |s| s).await;
    let mut c = agents(server.channel().await);
    assert_eq!(
        get_task(&mut c, &task.id).await.state,
        TaskState::Running as i32
    );

    // The worker reattaches within the lease timeout: the same attempt is
    // sent to it again, and its result is taken.
    let mut w = TestWorker::connect(server.channel().await, "etl-worker", &id).await;
    let again = w.assignment().await.task.unwrap();
    assert_eq!((again.id.as_str(), again.attempt), (task.id.as_str(), 1));
    assert!(w.result(&task.id, 1, "after restart").await.accepted);
    let done = task_when(&mut c, &task.id, |t| t.state == TaskState::Succeeded as i32).await;
    assert_eq!(done.output_text, "after restart");
    assert_eq!(done.attempt, 1);

    // A worker that does not come back loses the lease after the timeout.
    let task = submit_etl(&mut c, "orphan").await;
    assert_eq!(w.assignment().await.task.unwrap().attempt, 1);
    drop(w);
    let data = server.stop_keeping_data().await;
    let (mut config, _) = worker_config();
    config.data_dir = data.path().join("data");
    let server = TestServer::start_with(config, data, |s| s).await;
    let mut c = agents(server.channel().await);
    let mut other = TestWorker::connect(server.channel().await, "etl-worker", "").await;
    other.heartbeat_every(HEARTBEAT);
    let retry = other.assignment().await.task.unwrap();
    assert_eq!((retry.id.as_str(), retry.attempt), (task.id.as_str(), 2));
    assert!(other.result(&task.id, 2, "taken over").await.accepted);
    let done = get_task(&mut c, &task.id).await;
    assert_eq!(done.output_text, "taken over");
    server.stop().await.unwrap();
}
