//! The AgentService part of `response_fields`: one scenario that reaches
//! every answer field of the Agent service (specs, agents, a worker's
//! stream, tasks and graphs, a swarm, events, stats).

use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::work_request::Message as Work;
use agentd::pb::v1::*;
use tonic::transport::Channel;

use crate::common::agents::{ended, task_when, to};
use crate::common::sessions::{Session, start, user};
use crate::common::structs::to_struct;
use crate::common::workers::{TestWorker, heartbeat};
use crate::response_fields::Seen;

/// The worker's next directive, recorded as the WorkResponse it came in.
async fn directive(seen: &mut Seen<'_>, w: &mut TestWorker) -> work_response::Directive {
    let d = w.next().await.expect("stream open");
    seen.record(
        "agentd.v1.WorkResponse",
        &WorkResponse {
            directive: Some(d.clone()),
        },
    );
    d
}

/// A worker tool with every field of its definition set.
fn lookup_tool() -> ToolDefinition {
    ToolDefinition {
        name: "lookup".into(),
        description: "Looks up.".into(),
        parameters: Some(to_struct(serde_json::json!({"type": "object"}))),
        location: ToolLocation::Worker as i32,
        worker_capability: "etl".into(),
        timeout: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
    }
}

async fn assignment(seen: &mut Seen<'_>, w: &mut TestWorker) -> TaskAssignment {
    loop {
        if let work_response::Directive::Assign(a) = directive(seen, w).await {
            return a;
        }
    }
}

pub async fn agent_calls(seen: &mut Seen<'_>, channel: Channel) {
    let mut c = AgentServiceClient::new(channel.clone());
    let writer = AgentSpec {
        name: "writer".into(),
        description: "Writes.".into(),
        capabilities: vec!["write".into()],
        model: "oa".into(),
        fallback_models: vec!["an".into()],
        system_prompt: "You write.".into(),
        context_window: 4096,
        concurrency_limit: 2,
        memory_namespace: "writer-memory".into(),
        labels: [("team".to_string(), "a".to_string())].into(),
        memory_top_k: 1,
        store_output: true,
        tools: vec![lookup_tool()],
        max_turns: 4,
        ..Default::default()
    };
    let r = c
        .register_spec(RegisterSpecRequest { spec: Some(writer) })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.RegisterSpecResponse", &r);
    for name in ["etl", "temp"] {
        c.register_spec(RegisterSpecRequest {
            spec: Some(AgentSpec {
                name: name.into(),
                capabilities: vec![name.into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    let r = c
        .get_spec(GetSpecRequest {
            name: "writer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetSpecResponse", &r);
    let r = c
        .list_specs(ListSpecsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListSpecsResponse", &r);
    let r = c
        .delete_spec(DeleteSpecRequest {
            name: "temp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.DeleteSpecResponse", &r);

    let labels: std::collections::HashMap<String, String> =
        [("role".to_string(), "drafting".to_string())].into();
    let r = c
        .spawn(SpawnRequest {
            spec_name: "writer".into(),
            count: 2,
            labels: labels.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SpawnResponse", &r);
    let writers = r.agents;
    let r = c
        .spawn_batch(SpawnBatchRequest {
            requests: vec![SpawnRequest {
                spec_name: "writer".into(),
                count: 1,
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SpawnBatchResponse", &r);
    let spare = r.results[0].agents[0].clone();

    // A swarm of the two writers; a task sent to it fans out and merges.
    let r = c
        .create_swarm(CreateSwarmRequest {
            name: "pair".into(),
            topology: SwarmTopology::Star as i32,
            max_agents: 4,
            strategy: SwarmStrategy::RoundRobin as i32,
            member_ids: writers.iter().map(|a| a.id.clone()).collect(),
            labels: labels.clone(),
            max_rounds: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.CreateSwarmResponse", &r);
    let swarm = r.swarm.unwrap();
    c.create_swarm(CreateSwarmRequest {
        topology: SwarmTopology::Mesh as i32,
        max_agents: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut star = to(task_target::Target::SwarmId(swarm.id.clone()), "Review.");
    star.required_capability = "write".into();
    star.max_cost_usd = Some(1.0);
    star.priority = 5;
    let mut input = prost_types::Struct::default();
    input.fields.insert(
        "draft".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("v1".into())),
        },
    );
    star.input = Some(input);
    star.labels = labels.clone();
    let star = c
        .submit_task(star)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let merged = task_when(&mut c, &star.id, ended).await;
    assert_eq!(merged.state, TaskState::Succeeded as i32, "{merged:?}");
    let r = c
        .get_task(GetTaskRequest {
            id: merged.child_task_ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetTaskResponse", &r);
    let r = c
        .get_task(GetTaskRequest {
            id: merged.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetTaskResponse", &r);
    let r = c
        .get_swarm(GetSwarmRequest {
            id: swarm.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetSwarmResponse", &r);
    let r = c
        .list_swarms(ListSwarmsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListSwarmsResponse", &r);
    let r = c
        .list_agents(ListAgentsRequest {
            swarm_id: swarm.id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListAgentsResponse", &r);
    let r = c
        .get_agent(GetAgentRequest {
            id: writers[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetAgentResponse", &r);

    // A worker: a lease with a checkpoint, progress and a structured result;
    // a task it fails; a cancellation; a refused report.
    let mut w = TestWorker::connect(channel.clone(), "etl", "").await;
    seen.record(
        "agentd.v1.WorkResponse",
        &WorkResponse {
            directive: Some(work_response::Directive::Registered(w.registered.clone())),
        },
    );
    // A query's worker tool call, leased to the worker as a task.
    let mut session = Session::open(
        channel.clone(),
        StartCommand {
            tools: vec![lookup_tool()],
            messages: vec![user("call lookup {}")],
            ..start("oa")
        },
    )
    .await
    .expect("Session");
    let call = assignment(seen, &mut w).await.task.unwrap();
    assert!(call.tool_call.is_some(), "{call:?}");
    w.send(Work::Result(TaskResult {
        task_id: call.id.clone(),
        output_text: "found".into(),
        attempt: call.attempt,
        ..Default::default()
    }));
    directive(seen, &mut w).await;
    session.finish().await;

    let graph = c
        .submit_task_graph(SubmitTaskGraphRequest {
            nodes: vec![
                TaskGraphNode {
                    name: "load".into(),
                    task: Some(to(task_target::Target::Capability("etl".into()), "load")),
                    after: vec![],
                },
                TaskGraphNode {
                    name: "check".into(),
                    task: Some(to(
                        task_target::Target::AgentId(w.agent_id.clone()),
                        "check",
                    )),
                    after: vec!["load".into()],
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SubmitTaskGraphResponse", &graph);
    let load = assignment(seen, &mut w).await.task.unwrap();
    let r = c
        .get_agent(GetAgentRequest {
            id: w.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetAgentResponse", &r);
    let mut data = prost_types::Struct::default();
    data.fields.insert(
        "rows".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(10.0)),
        },
    );
    w.send(
        heartbeat(vec![TaskCheckpoint {
            task_id: load.id.clone(),
            attempt: load.attempt,
            data: Some(data.clone()),
        }])
        .message
        .unwrap(),
    );
    directive(seen, &mut w).await;
    w.send(Work::Progress(TaskProgress {
        task_id: load.id.clone(),
        fraction: 0.5,
        message: "half".into(),
        attempt: load.attempt,
    }));
    directive(seen, &mut w).await;
    w.send(Work::Result(TaskResult {
        task_id: "01NOSUCHTASK0000000000000".into(),
        output_text: "x".into(),
        ..Default::default()
    }));
    directive(seen, &mut w).await;
    w.send(Work::Result(TaskResult {
        task_id: load.id.clone(),
        output_text: "loaded".into(),
        output: Some(data),
        attempt: load.attempt,
    }));
    let check = assignment(seen, &mut w).await.task.unwrap();
    w.send(Work::Failure(TaskFailure {
        task_id: check.id.clone(),
        message: "bad rows".into(),
        retryable: false,
        attempt: check.attempt,
    }));
    let r = c
        .get_task(GetTaskRequest {
            id: load.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetTaskResponse", &r);
    let failed = task_when(&mut c, &check.id, ended).await;
    seen.record(
        "agentd.v1.GetTaskResponse",
        &GetTaskResponse { task: Some(failed) },
    );
    let r = c
        .get_agent(GetAgentRequest {
            id: w.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetAgentResponse", &r);
    let doomed = c
        .submit_task(to(
            task_target::Target::AgentId(w.agent_id.clone()),
            "cancel me",
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assignment(seen, &mut w).await;
    let r = c
        .cancel_task(CancelTaskRequest {
            id: doomed.id.clone(),
            reason: "not needed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.CancelTaskResponse", &r);
    loop {
        if let work_response::Directive::Cancel(_) = directive(seen, &mut w).await {
            break;
        }
    }

    // Waiting tasks for the stats: one nobody can run, one after it.
    let stuck = c
        .submit_task(to(task_target::Target::Capability("nobody".into()), "wait"))
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SubmitTaskResponse", &stuck);
    let mut after = to(task_target::Target::Capability("nobody".into()), "later");
    after.depends_on = vec![stuck.task.unwrap().id];
    c.submit_task(after).await.unwrap();
    let r = c
        .get_agent_stats(GetAgentStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetAgentStatsResponse", &r);

    let r = c
        .list_tasks(ListTasksRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListTasksResponse", &r);
    let mut watch = c
        .watch_task(WatchTaskRequest {
            id: merged.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = watch.message().await.unwrap() {
        seen.record("agentd.v1.WatchTaskResponse", &m);
    }
    let r = c
        .list_events(ListEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListEventsResponse", &r);
    let mut events = c
        .watch_events(WatchEventsRequest {
            from_start: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let total = c
        .list_events(ListEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len();
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.record("agentd.v1.WatchEventsResponse", &m);
    }
    let r = c
        .dissolve_swarm(DissolveSwarmRequest {
            id: swarm.id.clone(),
            stop_agents: false,
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.DissolveSwarmResponse", &r);
    let r = c
        .stop_agent(StopAgentRequest {
            id: spare.id.clone(),
            cancel_tasks: true,
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.StopAgentResponse", &r);
}
