//! Task graphs through the gRPC API: dependencies across internal agents
//! (the fake provider) and external workers, outputs handed down, failures
//! handed down without running, graphs created all or nothing, and a
//! waiting graph kept across a restart.

use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::work_request::Message;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::TestServer;
use crate::common::agents::{agents, ended, spawn, task as get_task, task_when};
use crate::common::fake_llm::{ANSWER, FakeLlm};
use crate::common::sessions::{aliases, start_server};
use crate::common::violated_fields;
use crate::common::workers::TestWorker;

async fn specs(c: &mut AgentServiceClient<Channel>) {
    for (name, model, cap) in [("writer", "oa", "write"), ("fetcher", "", "fetch")] {
        c.register_spec(RegisterSpecRequest {
            spec: Some(AgentSpec {
                name: name.into(),
                model: model.into(),
                capabilities: vec![cap.into()],
                concurrency_limit: 4,
                ..Default::default()
            }),
        })
        .await
        .expect("RegisterSpec");
    }
}

fn to(capability: &str, prompt: &str) -> SubmitTaskRequest {
    SubmitTaskRequest {
        target: Some(TaskTarget {
            target: Some(task_target::Target::Capability(capability.into())),
        }),
        prompt: prompt.into(),
        ..Default::default()
    }
}

fn node(name: &str, task: SubmitTaskRequest, after: &[&str]) -> TaskGraphNode {
    TaskGraphNode {
        name: name.into(),
        task: Some(task),
        after: after.iter().map(|a| (*a).to_owned()).collect(),
    }
}

async fn graph(
    c: &mut AgentServiceClient<Channel>,
    nodes: Vec<TaskGraphNode>,
    key: &str,
) -> Result<Vec<Task>, tonic::Status> {
    c.submit_task_graph(SubmitTaskGraphRequest {
        nodes,
        idempotency_key: key.into(),
    })
    .await
    .map(|r| r.into_inner().tasks)
}

async fn task_count(c: &mut AgentServiceClient<Channel>) -> usize {
    c.list_tasks(ListTasksRequest {
        page_size: 1000,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .tasks
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_runs_in_order_and_hands_outputs_down() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    specs(&mut c).await;
    spawn(&mut c, "writer", 1).await;
    let mut worker = TestWorker::connect(server.channel().await, "fetcher", "").await;

    // Two fetches on the worker, then a summary of both on the model.
    let tasks = graph(
        &mut c,
        vec![
            node(
                "summary",
                to("write", "Summarise the pages."),
                &["page-a", "page-b"],
            ),
            node("page-a", to("fetch", "https://a"), &[]),
            node("page-b", to("fetch", "https://b"), &[]),
        ],
        "",
    )
    .await
    .expect("SubmitTaskGraph");
    let (summary, a, b) = (&tasks[0], &tasks[1], &tasks[2]);
    let mut deps = summary.depends_on.clone();
    deps.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(deps, want, "names became ids");
    let mut fetched = Vec::new();
    for _ in 0..2 {
        let lease = worker.assignment().await;
        fetched.push(lease.task.unwrap());
    }
    assert_eq!(
        get_task(&mut c, &summary.id).await.state,
        TaskState::Pending as i32
    );
    assert!(
        fake.requests().is_empty(),
        "the summary waits for both pages"
    );
    for t in &fetched {
        let page = format!("contents of {}", t.prompt);
        assert!(worker.result(&t.id, t.attempt, &page).await.accepted);
    }
    let done = task_when(&mut c, &summary.id, ended).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    assert_eq!(done.output_text, *ANSWER);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = requests[0].body.to_string();
    for page in [
        "contents of https://a",
        "contents of https://b",
        "Summarise the pages.",
    ] {
        assert!(sent.contains(page), "the model saw {page:?}: {sent}");
    }

    // A worker's task receives its dependencies' outputs by id.
    let first = c
        .submit_task(to("write", "draft"))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let mut check = to("fetch", "check the draft");
    check.depends_on = vec![first.id.clone()];
    check.strategy = ExecutionStrategy::Dag as i32;
    let check = c
        .submit_task(check)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let lease = worker.assignment().await;
    assert_eq!(lease.task.unwrap().id, check.id);
    assert_eq!(lease.dependency_outputs.get(&first.id), Some(&*ANSWER));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dependency_ends_its_dependents_without_running_them() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    specs(&mut c).await;
    spawn(&mut c, "writer", 1).await;
    let mut worker = TestWorker::connect(server.channel().await, "fetcher", "").await;
    let tasks = graph(
        &mut c,
        vec![
            node("get", to("fetch", "x"), &[]),
            node("use", to("write", "use it"), &["get"]),
            node("more", to("write", "and more"), &["use"]),
        ],
        "",
    )
    .await
    .unwrap();
    let lease = worker.assignment().await.task.unwrap();
    worker.send(Message::Failure(TaskFailure {
        task_id: lease.id.clone(),
        message: "404".into(),
        retryable: false,
        attempt: 1,
    }));
    assert!(worker.ack().await.accepted);
    for t in &tasks[1..] {
        let done = task_when(&mut c, &t.id, ended).await;
        assert_eq!(done.state, TaskState::Failed as i32);
        assert_eq!(done.attempt, 0, "never ran");
        let error = done.error.unwrap();
        assert_eq!(error.reason, "DEPENDENCY_FAILED");
        assert!(error.message.contains("did not run"), "{error:?}");
    }
    assert!(fake.requests().is_empty());

    // A task submitted after its dependency failed fails at once; one
    // whose waiting dependency is cancelled fails too.
    let mut late = to("write", "late");
    late.depends_on = vec![tasks[0].id.clone()];
    let late = c
        .submit_task(late)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let late = task_when(&mut c, &late.id, ended).await;
    assert_eq!(late.error.unwrap().reason, "DEPENDENCY_FAILED");
    let chain = graph(
        &mut c,
        vec![
            node("wait", to("nobody", "x"), &[]),
            node("then", to("write", "y"), &["wait"]),
        ],
        "",
    )
    .await
    .unwrap();
    c.cancel_task(CancelTaskRequest {
        id: chain[0].id.clone(),
        reason: String::new(),
    })
    .await
    .unwrap();
    let then = task_when(&mut c, &chain[1].id, ended).await;
    assert_eq!(then.state, TaskState::Failed as i32);
    assert!(then.error.unwrap().message.contains("cancelled"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_graphs_create_nothing_and_retries_return_the_first() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    specs(&mut c).await;
    let before = task_count(&mut c).await;
    let cycle = graph(
        &mut c,
        vec![
            node("a", to("write", "a"), &["c"]),
            node("b", to("write", "b"), &["a"]),
            node("c", to("write", "c"), &["b"]),
        ],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(cycle.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&cycle), vec!["nodes"]);
    assert!(cycle.message().contains("cycle"), "{}", cycle.message());
    let unknown = graph(&mut c, vec![node("a", to("write", "a"), &["zz"])], "")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unknown), vec!["nodes[0].after[0]"]);
    let mut bad_dep = to("write", "a");
    bad_dep.depends_on = vec!["01NOSUCHTASK0000000000000".into()];
    let missing = graph(
        &mut c,
        vec![
            node("ok", to("write", "fine"), &[]),
            node("a", bad_dep.clone(), &[]),
        ],
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(
        violated_fields(&missing),
        vec!["nodes[1].task.depends_on[0]"]
    );
    let bad_task = graph(&mut c, vec![node("a", to("write", ""), &[])], "")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_task), vec!["nodes[0].task.prompt"]);
    let single = c.submit_task(bad_dep).await.unwrap_err();
    assert_eq!(violated_fields(&single), vec!["depends_on[0]"]);
    assert_eq!(task_count(&mut c).await, before, "nothing half-created");

    let nodes = vec![
        node("a", to("nobody", "a"), &[]),
        node("b", to("nobody", "b"), &["a"]),
    ];
    let first = graph(&mut c, nodes.clone(), "graph-1").await.unwrap();
    let again = graph(&mut c, nodes, "graph-1").await.unwrap();
    let ids = |ts: &[Task]| ts.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
    let other = graph(&mut c, vec![node("x", to("nobody", "x"), &[])], "graph-1")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&other), vec!["idempotency_key"]);
    assert_eq!(task_count(&mut c).await, before + 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_graph_survives_a_restart() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    specs(&mut c).await;
    spawn(&mut c, "writer", 1).await;
    let tasks = graph(
        &mut c,
        vec![
            node("get", to("fetch", "x"), &[]),
            node("use", to("write", "use"), &["get"]),
        ],
        "",
    )
    .await
    .unwrap();
    let data = server.stop_keeping_data().await;
    let mut config = crate::common::test_config().0;
    config.data_dir = data.path().join("data");
    config.query.models = Some(aliases(&fake, &keys.path().join("anthropic.key")));
    let server = TestServer::start_with(config, data, |s| s).await;
    let mut c = agents(server.channel().await);
    let mut worker = TestWorker::connect(server.channel().await, "fetcher", "").await;
    let lease = worker.assignment().await.task.unwrap();
    assert_eq!(lease.id, tasks[0].id);
    assert!(worker.result(&lease.id, 1, "fetched").await.accepted);
    let done = task_when(&mut c, &tasks[1].id, ended).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    server.stop().await.unwrap();
}
