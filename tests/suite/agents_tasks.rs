//! Tasks on internal agents through the gRPC API, run as query sessions on
//! the fake provider (tests/suite/common/fake_llm.rs): no fake success — a
//! task's output is what the provider sent, through a query a client can
//! steer by `Task.query_id`. Concurrency limits and priority, capability
//! routing, retries, timeouts, cancellation and a restart.

use std::collections::HashSet;
use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::agents::{
    agents, spawn, submit, task as get_task, task_when, to_agent, to_capability,
};
use crate::common::fake_llm::{ANSWER, FakeLlm};
use crate::common::sessions::{aliases, client as query_client, query_info, start_server};
use crate::common::{TestServer, violated_fields};

async fn register(
    c: &mut AgentServiceClient<Channel>,
    name: &str,
    model: &str,
    caps: &[&str],
    limit: u32,
) {
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: name.into(),
            model: model.into(),
            capabilities: caps.iter().map(|s| (*s).to_owned()).collect(),
            system_prompt: format!("You are {name}."),
            concurrency_limit: limit,
            ..Default::default()
        }),
    })
    .await
    .expect("RegisterSpec");
}

/// Watches a task to its end; every state seen.
async fn finish(c: &mut AgentServiceClient<Channel>, id: &str) -> (Task, Vec<i32>) {
    let mut stream = c
        .watch_task(WatchTaskRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut states = Vec::new();
    let mut last = None;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a task update within 30 s")
        .unwrap()
    {
        let task = m.task.unwrap();
        states.push(task.state);
        last = Some(task);
    }
    (last.expect("an update"), states)
}

fn finished(state: i32) -> bool {
    ![TaskState::Pending as i32, TaskState::Running as i32].contains(&state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_agents_run_five_tasks_as_five_real_queries() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "writer", "oa", &["write"], 1).await;
    let five = spawn(&mut c, "writer", 5).await;
    let before = fake.requests().len();
    let mut tasks = Vec::new();
    for (i, a) in five.iter().enumerate() {
        tasks.push(submit(&mut c, to_agent(&a.id, &format!("Write part {i}."))).await);
    }
    let mut queries = HashSet::new();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.state, TaskState::Pending as i32);
        let (done, states) = finish(&mut c, &t.id).await;
        assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
        assert!(states.iter().all(|s| *s != 0) && finished(*states.last().unwrap()));
        assert_eq!(done.output_text, *ANSWER, "the text the provider sent");
        assert_eq!(done.agent_id, five[i].id);
        assert_eq!(done.attempt, 1);
        assert_eq!(done.usage.unwrap().output_tokens, 300);
        assert!(done.started_at.is_some() && done.finished_at.is_some());
        // The task's query is a real one, readable through QueryControl.
        let q = query_info(query_client(server.channel().await), &done.query_id, true).await;
        assert_eq!(q.text, *ANSWER);
        assert_eq!(q.labels.get("agentd.task"), Some(&done.id));
        queries.insert(done.query_id.clone());
    }
    assert_eq!(queries.len(), 5, "five distinct queries");
    let requests = fake.requests();
    assert_eq!(
        requests.len() - before,
        5,
        "five requests reached the provider"
    );
    for r in &requests[before..] {
        let m = r.body["messages"].as_array().unwrap();
        assert_eq!(m[0]["content"], "You are writer.");
        assert!(m[1]["content"].as_str().unwrap().starts_with("Write part "));
    }
    // The agents count what they did, and are idle again.
    let a = c
        .get_agent(GetAgentRequest {
            id: five[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(a.tasks_succeeded, 1);
    assert_eq!(a.state, AgentState::Idle as i32);
    assert!(a.running_task_ids.is_empty());
    assert!(a.cost_usd > 0.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_by_priority_then_arrival_and_by_capability() {
    let fake = FakeLlm::start(Duration::from_millis(1)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "solo", "oa", &["code"], 1).await;
    let solo = spawn(&mut c, "solo", 1).await.remove(0);
    let first = submit(&mut c, to_agent(&solo.id, "first")).await;
    let mut later = Vec::new();
    for (prompt, priority) in [("low", 0), ("high", 10), ("mid", 5), ("low2", 0)] {
        let mut r = to_agent(&solo.id, prompt);
        r.priority = priority;
        later.push(submit(&mut c, r).await);
    }
    finish(&mut c, &first.id).await;
    for t in &later {
        let (done, _) = finish(&mut c, &t.id).await;
        assert_eq!(done.state, TaskState::Succeeded as i32);
    }
    // The order the provider saw them in, and never two at once.
    let prompts: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            r.body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(prompts, ["first", "high", "mid", "low", "low2"]);
    let events = c
        .list_events(ListEventsRequest {
            filter: Some(EventFilter {
                agent_id: solo.id.clone(),
                kinds: vec![
                    AgentEventKind::TaskAssigned as i32,
                    AgentEventKind::TaskCompleted as i32,
                ],
                ..Default::default()
            }),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<i32> = events.iter().map(|e| e.kind).collect();
    let alternating: Vec<i32> = (0..5)
        .flat_map(|_| {
            [
                AgentEventKind::TaskAssigned as i32,
                AgentEventKind::TaskCompleted as i32,
            ]
        })
        .collect();
    assert_eq!(kinds, alternating, "assigned only after the previous ended");

    // By capability: only an agent that has it; none yet → it waits.
    let art = submit(&mut c, to_capability("art", "paint")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = get_task(&mut c, &art.id).await;
    assert_eq!(waiting.state, TaskState::Pending as i32);
    register(&mut c, "painter", "an", &["art"], 1).await;
    let painter = spawn(&mut c, "painter", 1).await.remove(0);
    let (done, _) = finish(&mut c, &art.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    assert_eq!(done.agent_id, painter.id);
    assert_eq!(done.output_text, *ANSWER);

    // Newest first, by state or agent.
    let listed = c
        .list_tasks(ListTasksRequest {
            agent_id: solo.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0].id, later[3].id);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_query_can_be_paused_switched_and_resumed() {
    let fake = FakeLlm::start(Duration::from_millis(3)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "steered", "oa", &[], 1).await;
    let agent = spawn(&mut c, "steered", 1).await.remove(0);
    let task = submit(&mut c, to_agent(&agent.id, "go")).await;
    let query_id = task_when(&mut c, &task.id, |t| !t.query_id.is_empty())
        .await
        .query_id;
    let mut q = query_client(server.channel().await);
    q.pause(PauseRequest {
        query_id: query_id.clone(),
    })
    .await
    .unwrap();
    // Paused: the task waits, still running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = get_task(&mut c, &task.id).await;
    assert_eq!(t.state, TaskState::Running as i32);
    q.switch_model(SwitchModelRequest {
        query_id: query_id.clone(),
        model: "an".into(),
    })
    .await
    .unwrap();
    q.resume(ResumeRequest {
        query_id: query_id.clone(),
        model: String::new(),
    })
    .await
    .unwrap();
    let (done, _) = finish(&mut c, &task.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    assert_eq!(
        done.output_text, *ANSWER,
        "nothing lost or repeated across the switch"
    );
    let info = query_info(query_client(server.channel().await), &query_id, false).await;
    assert_eq!(info.model, "an");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_timeouts_cancellation_and_bad_input() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    // all-fail: its query fails after its fallbacks; the task tries twice.
    register(&mut c, "flaky", "all-fail", &[], 1).await;
    register(&mut c, "silent", "mute", &[], 2).await;
    let flaky = spawn(&mut c, "flaky", 1).await.remove(0);
    let silent = spawn(&mut c, "silent", 1).await.remove(0);

    let mut r = to_agent(&flaky.id, "try");
    r.max_attempts = 2;
    let t = submit(&mut c, r).await;
    let (done, _) = finish(&mut c, &t.id).await;
    assert_eq!(done.state, TaskState::Failed as i32, "{done:?}");
    assert_eq!(done.attempt, 2);
    assert_eq!(done.max_attempts, 2);
    let error = done.error.unwrap();
    assert_eq!(error.reason, "PROVIDER_ERROR");
    let failures = c
        .list_events(ListEventsRequest {
            filter: Some(EventFilter {
                task_id: t.id.clone(),
                kinds: vec![AgentEventKind::TaskFailed as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(failures.len(), 2);
    assert_eq!(
        failures[0].details.as_ref().unwrap().fields["retrying"].kind,
        Some(prost_types::value::Kind::BoolValue(true))
    );

    // Cancelled while it waits out a retry's backoff: at once, and it
    // never runs again.
    let mut r = to_agent(&flaky.id, "try again");
    r.max_attempts = 3;
    let t = submit(&mut c, r).await;
    task_when(&mut c, &t.id, |now| {
        now.attempt == 1 && now.state == TaskState::Pending as i32
    })
    .await;
    let cancelled = c
        .cancel_task(CancelTaskRequest {
            id: t.id.clone(),
            reason: "no more".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled as i32);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = get_task(&mut c, &t.id).await;
    assert_eq!(
        (after.state, after.attempt),
        (TaskState::Cancelled as i32, 1)
    );

    // A model that says nothing: the task's timeout ends it.
    let mut r = to_agent(&silent.id, "wait");
    r.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let t = submit(&mut c, r).await;
    let (done, _) = finish(&mut c, &t.id).await;
    assert_eq!(done.state, TaskState::TimedOut as i32, "{done:?}");
    assert_eq!(done.attempt, 1, "a timeout is not retried");

    // Cancelled while running (its query is terminated) and while waiting.
    let running = submit(&mut c, to_agent(&silent.id, "one")).await;
    let other = submit(&mut c, to_agent(&silent.id, "two")).await;
    let third = submit(&mut c, to_agent(&silent.id, "three")).await;
    task_when(&mut c, &running.id, |t| !t.query_id.is_empty()).await;
    let cancelled = c
        .cancel_task(CancelTaskRequest {
            id: running.id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled as i32);
    let q = query_info(
        query_client(server.channel().await),
        &cancelled.query_id,
        false,
    )
    .await;
    assert_eq!(q.state, QueryState::Terminated as i32);
    for t in [&other, &third] {
        let done = c
            .cancel_task(CancelTaskRequest {
                id: t.id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(done.state, TaskState::Cancelled as i32);
    }

    // Bad input is named; a stopped agent takes nothing.
    let err = c
        .submit_task(SubmitTaskRequest {
            prompt: "x".into(),
            priority: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["priority", "target"]);
    let err = c
        .submit_task(to_agent("no-such-agent", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.stop_agent(StopAgentRequest {
        id: flaky.id.clone(),
        cancel_tasks: true,
    })
    .await
    .unwrap();
    let err = c.submit_task(to_agent(&flaky.id, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut parallel = to_agent(&silent.id, "x");
    parallel.strategy = ExecutionStrategy::Parallel as i32;
    let err = c.submit_task(parallel).await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["strategy"],
        "swarms only: refused, not ignored"
    );

    // A budget: the query stops at the first token past it, the task
    // fails without retry.
    register(&mut c, "spender", "oa", &[], 1).await;
    let spender = spawn(&mut c, "spender", 1).await.remove(0);
    let mut r = to_agent(&spender.id, "spend");
    r.max_cost_usd = Some(0.0001);
    let t = submit(&mut c, r).await;
    let (done, _) = finish(&mut c, &t.id).await;
    assert_eq!(done.state, TaskState::Failed as i32, "{done:?}");
    assert_eq!(done.attempt, 1);
    assert_eq!(done.max_cost_usd, 0.0001);
    assert_eq!(done.error.as_ref().unwrap().reason, "BUDGET_EXCEEDED");
    assert!(
        done.cost_usd > 0.0001 && done.cost_usd < 0.0002,
        "{}",
        done.cost_usd
    );
    let q = query_info(query_client(server.channel().await), &done.query_id, true).await;
    assert_eq!(q.state, QueryState::Failed as i32);
    assert!(q.text.len() < ANSWER.len(), "stopped early");
    let mut bad = to_agent(&spender.id, "x");
    bad.max_cost_usd = Some(-1.0);
    let err = c.submit_task(bad).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["max_cost_usd"]);

    // Idempotent submission.
    let mut keyed = to_capability("nothing-has-this", "once");
    keyed.idempotency_key = "job-7".into();
    let a = submit(&mut c, keyed.clone()).await;
    let b = submit(&mut c, keyed).await;
    assert_eq!(a.id, b.id);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_interrupted_by_a_restart_runs_again() {
    let fake = FakeLlm::start(Duration::from_millis(2)).await;
    let (server, keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "durable", "oa-slow", &[], 1).await;
    let agent = spawn(&mut c, "durable", 1).await.remove(0);
    let task = submit(&mut c, to_agent(&agent.id, "long")).await;
    task_when(&mut c, &task.id, |t| t.state == TaskState::Running as i32).await;
    let data = server.stop_keeping_data().await;
    let mut config = crate::common::test_config().0;
    config.data_dir = data.path().join("data");
    config.query.models = Some(aliases(&fake, &keys.path().join("anthropic.key")));
    let server = TestServer::start_with(config, data, |s| s).await;
    let mut c = agents(server.channel().await);
    let (done, _) = finish(&mut c, &task.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    assert_eq!(done.attempt, 2, "the interrupted attempt counted");
    assert_eq!(done.output_text, *ANSWER);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_remember_outputs_and_recall_them_as_context() {
    use agentd::pb::v1::memory_service_client::MemoryServiceClient;
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "librarian".into(),
            model: "oa".into(),
            memory_top_k: 2,
            store_output: true,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let agent = spawn(&mut c, "librarian", 1).await.remove(0);
    // First task: the collection is created on first use, empty.
    let first = submit(&mut c, to_agent(&agent.id, "Count to three hundred.")).await;
    let (done, _) = finish(&mut c, &first.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    let first_request = fake.requests().pop().unwrap().body;
    assert_eq!(
        first_request["messages"][0]["content"], "Count to three hundred.",
        "no memories yet: the prompt alone"
    );
    // Its output is a point named after the task.
    let points = MemoryServiceClient::new(server.channel().await)
        .get_points(GetPointsRequest {
            collection: "agent-librarian".into(),
            ids: vec![first.id.clone()],
            with_payload: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    assert_eq!(points.len(), 1);
    let payload = points[0].payload.as_ref().unwrap();
    assert_eq!(
        payload.fields["task_id"].kind,
        Some(prost_types::value::Kind::StringValue(first.id.clone()))
    );
    // The next task gets it back as context before its prompt.
    let second = submit(&mut c, to_agent(&agent.id, "w1 w2 w3 w4 w5")).await;
    let (done, _) = finish(&mut c, &second.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32);
    let request = fake.requests().pop().unwrap().body;
    let content = request["messages"][0]["content"].as_str().unwrap();
    assert!(content.starts_with("Relevant memories"), "{content}");
    assert!(
        content.contains(&*ANSWER),
        "the first task's answer is recalled"
    );
    assert!(content.ends_with("w1 w2 w3 w4 w5"));

    // A window with no room for the memories (the answer recalled is
    // ~450 tokens; 200 leave 150 for a prompt): the prompt goes alone. A
    // prompt that does not fit fails the task before any model call.
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "librarian".into(),
            model: "oa".into(),
            memory_top_k: 2,
            context_window: 200,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let small = spawn(&mut c, "librarian", 1).await.remove(0);
    let third = submit(&mut c, to_agent(&small.id, "w1 w2 w3")).await;
    let (done, _) = finish(&mut c, &third.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    let request = fake.requests().pop().unwrap().body;
    assert_eq!(request["messages"][0]["content"], "w1 w2 w3");
    let before = fake.requests().len();
    let long = "word ".repeat(200);
    let fourth = submit(&mut c, to_agent(&small.id, &long)).await;
    let (done, _) = finish(&mut c, &fourth.id).await;
    assert_eq!(done.state, TaskState::Failed as i32, "{done:?}");
    let error = done.error.unwrap();
    assert!(
        error.message.contains("250 tokens") && error.message.contains("context window of 200"),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), before, "no model call");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_agent_hands_its_running_task_to_another() {
    let fake = FakeLlm::start(Duration::from_millis(3)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "relay", "oa", &["relay"], 1).await;
    let pair = spawn(&mut c, "relay", 2).await;
    let task = submit(&mut c, to_capability("relay", "carry")).await;
    let first = task_when(&mut c, &task.id, |t| !t.query_id.is_empty()).await;
    c.stop_agent(StopAgentRequest {
        id: first.agent_id.clone(),
        cancel_tasks: false,
    })
    .await
    .unwrap();
    let (done, _) = finish(&mut c, &task.id).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    assert_eq!(done.attempt, 2);
    let other = pair.iter().find(|a| a.id != first.agent_id).unwrap();
    assert_eq!(done.agent_id, other.id, "the other agent finished it");
    assert_eq!(done.output_text, *ANSWER);
    assert_ne!(done.query_id, first.query_id, "a new query");
    server.stop().await.unwrap();
}
