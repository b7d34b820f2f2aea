//! The tool loop of internal agents: a spec names its tools, and a task's
//! query runs the whole loop on the fake provider (which plays a script of
//! tool calls given in the task's prompt, in OpenAI's real streaming
//! format). Built-in memory tools run on the server; each call of a worker
//! tool becomes a task leased to an external worker of the tool's
//! capability, with the lease machinery of any task (a worker that dies
//! loses it to another with attempt 2), cancelled when the call's timeout
//! passes or its query ends. Calls and results are in the task's query and
//! in the activity log.

use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::work_request::Message;
use agentd::pb::v1::work_response::Directive;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::agents::{agents, ended, spawn, submit, task as get_task, task_when, to_agent};
use crate::common::fake_llm::{ANSWER, FakeLlm};
use crate::common::sessions::{Session, aliases, client as query_client, query_info, start, user};
use crate::common::structs::to_struct;
use crate::common::workers::TestWorker;
use crate::common::{TestServer, test_config, violated_fields};

const HEARTBEAT: Duration = Duration::from_millis(100);

/// A server on the fake's aliases with short worker timings; `agents`
/// false serves no AgentService.
async fn start_server(fake: &FakeLlm, agents: bool) -> (TestServer, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (mut config, dir) = test_config();
    let key_file = keys.path().join("anthropic.key");
    std::fs::write(&key_file, "test-key-123\n").unwrap();
    let mut models = aliases(fake, &key_file);
    let mut plain = models
        .iter()
        .find(|m| m.alias == "oa")
        .cloned()
        .expect("oa");
    plain.alias = "oa-no-tools".into();
    plain.supports_tools = Some(false);
    models.push(plain);
    config.query.models = Some(models);
    config.query.retry_backoff = Duration::from_millis(5);
    config.query.cooldown = Duration::ZERO;
    config.agents.worker_heartbeat_interval = HEARTBEAT;
    config.agents.worker_lease_timeout = Duration::from_millis(800);
    config.agents.worker_grace = Duration::from_millis(300);
    config.services.agents = agents;
    config.validate().unwrap();
    (TestServer::start_with(config, dir, |s| s).await, keys)
}

/// `lookup(q: string)`, run by workers with capability "search".
fn lookup(timeout: Option<Duration>) -> ToolDefinition {
    ToolDefinition {
        name: "lookup".into(),
        description: "Looks a question up.".into(),
        parameters: Some(to_struct(serde_json::json!({
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"]
        }))),
        location: ToolLocation::Worker as i32,
        worker_capability: "search".into(),
        timeout: timeout.map(|t| prost_types::Duration {
            seconds: t.as_secs() as i64,
            nanos: t.subsec_nanos() as i32,
        }),
    }
}

/// A built-in tool.
fn server_tool(name: &str) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        location: ToolLocation::Server as i32,
        ..Default::default()
    }
}

/// Registers `researcher` (model `oa`, the given tools) and the worker
/// spec `searcher` (capability "search", no model).
async fn register(c: &mut AgentServiceClient<Channel>, tools: Vec<ToolDefinition>) {
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "researcher".into(),
            model: "oa".into(),
            tools,
            max_turns: 5,
            ..Default::default()
        }),
    })
    .await
    .expect("RegisterSpec researcher");
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "searcher".into(),
            capabilities: vec!["search".into()],
            concurrency_limit: 4,
            ..Default::default()
        }),
    })
    .await
    .expect("RegisterSpec searcher");
}

async fn worker(server: &TestServer) -> TestWorker {
    let mut w = TestWorker::connect(server.channel().await, "searcher", "").await;
    w.heartbeat_every(HEARTBEAT);
    w
}

/// The events of task `id` of the two tool kinds, in order.
async fn tool_events(c: &mut AgentServiceClient<Channel>, id: &str) -> Vec<AgentEvent> {
    c.list_events(ListEventsRequest {
        filter: Some(EventFilter {
            task_id: id.into(),
            kinds: vec![
                AgentEventKind::TaskToolCall as i32,
                AgentEventKind::TaskToolResult as i32,
            ],
            ..Default::default()
        }),
        page_size: 100,
        ..Default::default()
    })
    .await
    .expect("ListEvents")
    .into_inner()
    .events
}

fn detail(e: &AgentEvent, key: &str) -> String {
    use prost_types::value::Kind;
    match e
        .details
        .as_ref()
        .and_then(|d| d.fields.get(key))
        .and_then(|v| v.kind.clone())
    {
        Some(Kind::StringValue(s)) => s,
        Some(Kind::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Answers a tool task with `output` as structured output.
async fn answer(w: &mut TestWorker, task: &Task, output: serde_json::Value) -> WorkAck {
    w.send(Message::Result(TaskResult {
        task_id: task.id.clone(),
        output: Some(to_struct(output)),
        attempt: task.attempt,
        ..Default::default()
    }));
    w.ack().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_task_runs_the_whole_tool_loop_with_memory_and_worker_tools() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake, true).await;
    let mut c = agents(server.channel().await);
    register(
        &mut c,
        vec![
            server_tool("memory_put"),
            server_tool("memory_get"),
            lookup(None),
        ],
    )
    .await;
    let mut w = worker(&server).await;
    let agent = spawn(&mut c, "researcher", 1).await.remove(0);

    // Turn 1: two calls at once (one built-in, one on a worker); turn 2:
    // one built-in; turn 3: the answer.
    let script = "call memory_put {\"namespace\":\"notes\",\"key\":\"topic\",\"value\":\"rust\"}\n\
                  call lookup {\"q\":\"rust crates\"}\n---\n\
                  call memory_get {\"namespace\":\"notes\",\"key\":\"topic\"}";
    let task = submit(&mut c, to_agent(&agent.id, script)).await;

    // The worker gets the call as a task of its own.
    let lease = w.assignment().await;
    let call_task = lease.task.expect("task");
    let call = call_task.tool_call.clone().expect("tool_call set");
    assert_eq!(call.name, "lookup");
    assert_eq!(
        call.arguments,
        Some(to_struct(serde_json::json!({"q": "rust crates"})))
    );
    assert_eq!(
        call_task.input, call.arguments,
        "the arguments are the input"
    );
    assert_eq!(call_task.parent_task_id, task.id);
    assert_eq!(call_task.labels["agentd.tool_call"], call.id);
    assert_eq!(call_task.attempt, 1);
    let running = get_task(&mut c, &task.id).await;
    assert_eq!(running.state, TaskState::Running as i32);
    assert_eq!(call_task.labels["agentd.query"], running.query_id);
    assert_eq!(running.child_task_ids, std::slice::from_ref(&call_task.id));

    let ack = answer(&mut w, &call_task, serde_json::json!({"best": "serde"})).await;
    assert!(ack.accepted, "{ack:?}");

    let done = task_when(&mut c, &task.id, ended).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    assert_eq!(done.output_text, *ANSWER);
    let child = get_task(&mut c, &call_task.id).await;
    assert_eq!(child.state, TaskState::Succeeded as i32);

    // The query holds the three calls with their results.
    let info = query_info(query_client(server.channel().await), &done.query_id, false).await;
    let calls: Vec<(String, i32, bool, String)> = info
        .tool_calls
        .iter()
        .map(|r| {
            let call = r.call.as_ref().unwrap();
            (call.name.clone(), r.location, r.is_error, r.result.clone())
        })
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].0, "memory_put");
    assert!(!calls[0].2, "{calls:?}");
    assert_eq!(
        calls[1],
        (
            "lookup".to_owned(),
            ToolLocation::Worker as i32,
            false,
            r#"{"best":"serde"}"#.to_owned()
        )
    );
    assert_eq!(calls[2].0, "memory_get");
    assert!(calls[2].3.contains("rust"), "{calls:?}");
    assert!(info.tool_calls.iter().all(|r| r.done));

    // The provider saw the worker's result in the next turn.
    let saw_result = fake.received.lock().unwrap().iter().any(|r| {
        r.body["messages"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["role"] == "tool" && m["content"] == r#"{"best":"serde"}"#)
        })
    });
    assert!(saw_result, "no request carried the worker's result");

    // The built-in tool really wrote agentd's memory.
    let entry = MemoryServiceClient::new(server.channel().await)
        .get(GetRequest {
            namespace: "notes".into(),
            key: "topic".into(),
        })
        .await
        .expect("Get")
        .into_inner()
        .entry
        .expect("entry");
    assert_eq!(entry.value, b"rust");

    // The activity log: each call, then its result, for the same ids.
    let events = tool_events(&mut c, &task.id).await;
    assert_eq!(events.len(), 6, "{events:?}");
    let calls: Vec<&AgentEvent> = events
        .iter()
        .filter(|e| e.kind == AgentEventKind::TaskToolCall as i32)
        .collect();
    let names: Vec<String> = calls.iter().map(|e| detail(e, "name")).collect();
    assert_eq!(names, ["memory_put", "lookup", "memory_get"]);
    for call in calls {
        let id = detail(call, "call_id");
        let result = events
            .iter()
            .find(|e| e.kind == AgentEventKind::TaskToolResult as i32 && detail(e, "call_id") == id)
            .unwrap_or_else(|| panic!("no result event for {id}"));
        assert!(result.id > call.id);
        assert_eq!(result.agent_id, agent.id);
        assert_eq!(detail(result, "is_error"), "false");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_tool_call_survives_its_worker_and_ends_with_its_query() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake, true).await;
    let mut c = agents(server.channel().await);
    register(
        &mut c,
        vec![
            lookup(None),
            ToolDefinition {
                name: "slow".into(),
                worker_capability: "nobody".into(),
                timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..lookup(None)
            },
        ],
    )
    .await;
    let agent = spawn(&mut c, "researcher", 1).await.remove(0);

    // A worker that dies holding the call loses it to another: attempt 2.
    let mut first = worker(&server).await;
    let task = submit(&mut c, to_agent(&agent.id, "call lookup {\"q\":\"a\"}")).await;
    let lease = first.assignment().await.task.unwrap();
    assert_eq!(lease.attempt, 1);
    let mut second = worker(&server).await;
    drop(first);
    let again = second.assignment().await.task.unwrap();
    assert_eq!((again.id.clone(), again.attempt), (lease.id.clone(), 2));
    assert!(
        answer(&mut second, &again, serde_json::json!({"r": "second"}))
            .await
            .accepted
    );
    let done = task_when(&mut c, &task.id, ended).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    let info = query_info(query_client(server.channel().await), &done.query_id, false).await;
    assert_eq!(info.tool_calls[0].result, r#"{"r":"second"}"#);

    // No worker has the capability: the call's timeout answers it with an
    // error, its task is cancelled, and the model goes on.
    let task = submit(&mut c, to_agent(&agent.id, "call slow {\"q\":\"b\"}")).await;
    let done = task_when(&mut c, &task.id, ended).await;
    assert_eq!(done.state, TaskState::Succeeded as i32, "{done:?}");
    assert_eq!(done.output_text, *ANSWER);
    let info = query_info(query_client(server.channel().await), &done.query_id, false).await;
    assert!(info.tool_calls[0].is_error);
    assert!(
        info.tool_calls[0].result.contains("no result within 1 s"),
        "{:?}",
        info.tool_calls[0]
    );
    let child = task_when(&mut c, &done.child_task_ids[0], |t| {
        t.state == TaskState::Cancelled as i32
    })
    .await;
    assert_eq!(child.tool_call.unwrap().name, "slow");

    // The task is cancelled while its call runs on a worker: the query
    // ends, and the worker is told to stop the call.
    let task = submit(&mut c, to_agent(&agent.id, "call lookup {\"q\":\"c\"}")).await;
    let lease = second.assignment().await.task.unwrap();
    c.cancel_task(CancelTaskRequest {
        id: task.id.clone(),
        reason: "changed my mind".into(),
    })
    .await
    .expect("CancelTask");
    loop {
        match second.next().await.expect("stream open") {
            Directive::Cancel(cancel) => {
                assert_eq!(cancel.task_id, lease.id);
                break;
            }
            Directive::Ack(_) => continue,
            other => panic!("expected the call's cancellation, got {other:?}"),
        }
    }
    let parent = task_when(&mut c, &task.id, ended).await;
    assert_eq!(parent.state, TaskState::Cancelled as i32, "{parent:?}");
    task_when(&mut c, &lease.id, |t| {
        t.state == TaskState::Cancelled as i32
    })
    .await;
    let late = answer(&mut second, &lease, serde_json::json!({"r": "late"})).await;
    assert!(!late.accepted, "a cancelled call's result is refused");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_tools_are_checked_when_its_spec_is_registered() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake, true).await;
    let mut c = agents(server.channel().await);
    let spec = |model: &str, tools: Vec<ToolDefinition>| RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: "bad".into(),
            model: model.into(),
            tools,
            ..Default::default()
        }),
    };
    let client_tool = ToolDefinition {
        name: "ask_user".into(),
        description: "Asks the user.".into(),
        ..Default::default()
    };
    let no_capability = ToolDefinition {
        worker_capability: String::new(),
        ..lookup(None)
    };
    let err = c
        .register_spec(spec(
            "oa",
            vec![client_tool, server_tool("memory_nuke"), no_capability],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.tools[0].location",
            "spec.tools[1].name",
            "spec.tools[2].worker_capability"
        ],
        "{err:?}"
    );
    let err = c
        .register_spec(spec("oa-no-tools", vec![lookup(None)]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["spec.model"], "{err:?}");
    let err = c
        .register_spec(spec("", vec![lookup(None)]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["spec.tools"], "{err:?}");
    let err = c
        .register_spec(RegisterSpecRequest {
            spec: Some(AgentSpec {
                name: "bad".into(),
                model: "oa".into(),
                max_turns: 101,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["spec.max_turns"], "{err:?}");
    // A valid spec reads back with its tools.
    register(&mut c, vec![server_tool("memory_search"), lookup(None)]).await;
    let got = c
        .get_spec(GetSpecRequest {
            name: "researcher".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .spec
        .unwrap();
    assert_eq!(got.tools.len(), 2);
    assert_eq!(got.tools[1].worker_capability, "search");
    assert_eq!(got.max_turns, 5);
    server.stop().await.unwrap();

    // Without the Agent service, a query cannot offer a worker tool.
    let (server, _keys) = start_server(&fake, false).await;
    let worker_tool = StartCommand {
        tools: vec![lookup(None)],
        messages: vec![user("hi")],
        ..start("oa")
    };
    let err = Session::open(server.channel().await, worker_tool)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("Agent service"), "{err:?}");
    server.stop().await.unwrap();
}
