//! Swarms through the gRPC API, on the fake provider: routing (round
//! robin, least busy, capability match), each topology's meaning (STAR
//! fans out and merges on the hub, RING passes the output round, MESH
//! routes and hands off, HIERARCHICAL plans, delegates and merges, with
//! its fallback), PARALLEL and SEQUENTIAL, and the swarm's lifecycle.

use std::collections::HashSet;
use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::agents::{agents, ended, spawn, submit, task as get_task, task_when, to_swarm};
use crate::common::fake_llm::{ANSWER, FakeLlm};
use crate::common::sessions::start_server;
use crate::common::violated_fields;

async fn register(c: &mut AgentServiceClient<Channel>, name: &str, model: &str, caps: &[&str]) {
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: name.into(),
            model: model.into(),
            capabilities: caps.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }),
    })
    .await
    .expect("RegisterSpec");
}

async fn swarm(
    c: &mut AgentServiceClient<Channel>,
    topology: SwarmTopology,
    strategy: SwarmStrategy,
    members: &[&Agent],
) -> Swarm {
    c.create_swarm(CreateSwarmRequest {
        name: format!("{topology:?}"),
        topology: topology as i32,
        max_agents: 10,
        strategy: strategy as i32,
        member_ids: members.iter().map(|a| a.id.clone()).collect(),
        ..Default::default()
    })
    .await
    .expect("CreateSwarm")
    .into_inner()
    .swarm
    .unwrap()
}

async fn done(c: &mut AgentServiceClient<Channel>, id: &str) -> Task {
    let t = task_when(c, id, ended).await;
    assert_eq!(t.state, TaskState::Succeeded as i32, "{t:?}");
    t
}

/// The text of the last user message of a request the fake received.
fn user_text(body: &serde_json::Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sent_to_a_swarm_are_routed_by_its_strategy() {
    let fake = FakeLlm::start(Duration::from_millis(1)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "coder", "oa", &["code"]).await;
    register(&mut c, "artist", "oa", &["art"]).await;
    let coders = spawn(&mut c, "coder", 3).await;
    let refs: Vec<&Agent> = coders.iter().collect();

    // ROUND_ROBIN: members in turn.
    let rr = swarm(
        &mut c,
        SwarmTopology::Mesh,
        SwarmStrategy::RoundRobin,
        &refs,
    )
    .await;
    assert_eq!(
        rr.member_ids,
        coders.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    );
    let mut order = Vec::new();
    for i in 0..6 {
        let t = submit(&mut c, to_swarm(&rr.id, &format!("task {i}"))).await;
        order.push(done(&mut c, &t.id).await.agent_id);
    }
    let ids: Vec<String> = coders.iter().map(|a| a.id.clone()).collect();
    assert_eq!(order, [&ids[..], &ids[..]].concat(), "in turn");
    c.dissolve_swarm(DissolveSwarmRequest {
        id: rr.id.clone(),
        stop_agents: false,
    })
    .await
    .unwrap();

    // LEAST_BUSY: three at once go to three members.
    let lb = swarm(&mut c, SwarmTopology::Mesh, SwarmStrategy::LeastBusy, &refs).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(submit(&mut c, to_swarm(&lb.id, &format!("busy {i}"))).await);
    }
    let mut used = HashSet::new();
    for t in &tasks {
        used.insert(done(&mut c, &t.id).await.agent_id);
    }
    assert_eq!(used.len(), 3, "each to a member not busy");
    c.dissolve_swarm(DissolveSwarmRequest {
        id: lb.id.clone(),
        stop_agents: false,
    })
    .await
    .unwrap();

    // CAPABILITY_MATCH: only members with the task's capability.
    let artist = spawn(&mut c, "artist", 1).await.remove(0);
    let cm = swarm(
        &mut c,
        SwarmTopology::Mesh,
        SwarmStrategy::CapabilityMatch,
        &[&coders[0], &artist],
    )
    .await;
    let mut r = to_swarm(&cm.id, "draw");
    r.required_capability = "art".into();
    let t = submit(&mut c, r).await;
    assert_eq!(t.required_capability, "art");
    assert_eq!(done(&mut c, &t.id).await.agent_id, artist.id);
    let err = c
        .submit_task(to_swarm(&cm.id, "anything"))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["required_capability"]);
    let err = c
        .submit_task(to_swarm("01NOSUCHSWARM000000000000", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_fans_out_to_the_members_and_merges_on_the_hub() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "coder", "oa", &["code"]).await;
    let team = spawn(&mut c, "coder", 3).await;
    let star = swarm(
        &mut c,
        SwarmTopology::Star,
        SwarmStrategy::LeastBusy,
        &team.iter().collect::<Vec<_>>(),
    )
    .await;
    let t = submit(&mut c, to_swarm(&star.id, "Review the design.")).await;
    assert_eq!(t.child_task_ids.len(), 2, "one step per spoke");
    let merged = done(&mut c, &t.id).await;
    assert_eq!(merged.agent_id, team[0].id, "the hub merges");
    assert_eq!(merged.output_text, *ANSWER);
    let mut spokes = HashSet::new();
    for id in &t.child_task_ids {
        let step = done(&mut c, id).await;
        assert_eq!(step.parent_task_id, t.id);
        spokes.insert(step.agent_id);
    }
    let want: HashSet<String> = team[1..].iter().map(|a| a.id.clone()).collect();
    assert_eq!(spokes, want);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "two spokes and the merge");
    let merge = user_text(&requests[2].body);
    assert!(merge.contains("Merge the outputs above"), "{merge}");
    for id in &t.child_task_ids {
        assert!(merge.contains(&format!("### Task {id}")), "{merge}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hands_each_output_to_the_next_member_for_its_rounds() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "coder", "oa", &["code"]).await;
    let team = spawn(&mut c, "coder", 3).await;
    let ring = c
        .create_swarm(CreateSwarmRequest {
            topology: SwarmTopology::Ring as i32,
            max_agents: 3,
            member_ids: team.iter().map(|a| a.id.clone()).collect(),
            max_rounds: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .swarm
        .unwrap();
    assert_eq!(ring.max_rounds, 2);
    let t = submit(&mut c, to_swarm(&ring.id, "Improve the text.")).await;
    assert_eq!(
        t.child_task_ids.len(),
        5,
        "six runs: five steps and the task"
    );
    let last = done(&mut c, &t.id).await;
    let mut agents_in_order = Vec::new();
    let mut previous: Option<String> = None;
    for id in &t.child_task_ids {
        let step = done(&mut c, id).await;
        if let Some(prev) = &previous {
            assert_eq!(
                step.depends_on,
                vec![prev.clone()],
                "each after the one before"
            );
        }
        previous = Some(step.id.clone());
        agents_in_order.push(step.agent_id);
    }
    assert_eq!(last.depends_on, vec![previous.unwrap()]);
    agents_in_order.push(last.agent_id);
    let ids: Vec<String> = team.iter().map(|a| a.id.clone()).collect();
    assert_eq!(
        agents_in_order,
        [&ids[..], &ids[..]].concat(),
        "round and round, twice"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 6, "never endless");
    for r in &requests[1..] {
        let text = user_text(&r.body);
        assert!(
            text.contains("Outputs of the tasks this one depends on"),
            "{text}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hierarchical_plans_on_the_coordinator_delegates_and_merges() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "lead", "oa-2", &["plan"]).await;
    register(&mut c, "coder", "oa", &["code"]).await;
    let lead = spawn(&mut c, "lead", 1).await.remove(0);
    let coders = spawn(&mut c, "coder", 2).await;
    let team = swarm(
        &mut c,
        SwarmTopology::Hierarchical,
        SwarmStrategy::LeastBusy,
        &[&lead, &coders[0], &coders[1]],
    )
    .await;
    let plan =
        r#"reply@echo-2 ["write the parser", {"prompt": "write the tests", "capability": "code"}]"#;
    let t = submit(&mut c, to_swarm(&team.id, plan)).await;
    let merged = done(&mut c, &t.id).await;
    assert_eq!(merged.agent_id, lead.id, "the coordinator merges");
    assert_eq!(
        merged.child_task_ids.len(),
        3,
        "the plan and its two subtasks"
    );
    let planned = done(&mut c, &merged.child_task_ids[0]).await;
    assert_eq!(planned.agent_id, lead.id);
    let mut prompts = Vec::new();
    for id in &merged.child_task_ids[1..] {
        let step = done(&mut c, id).await;
        assert!(
            coders.iter().any(|a| a.id == step.agent_id),
            "a member, not the coordinator"
        );
        prompts.push(step.prompt);
    }
    prompts.sort();
    assert_eq!(prompts, ["write the parser", "write the tests"]);
    let merge = user_text(&fake.requests().last().unwrap().body);
    assert!(merge.contains("Merge the outputs above"), "{merge}");
    for id in &merged.child_task_ids[1..] {
        assert!(merge.contains(id.as_str()), "{merge}");
    }

    // A plan that does not parse: the coordinator runs the task itself.
    let t = submit(
        &mut c,
        to_swarm(&team.id, "reply@echo-2 I would rather do it myself"),
    )
    .await;
    let alone = done(&mut c, &t.id).await;
    assert_eq!(alone.agent_id, lead.id);
    assert_eq!(alone.child_task_ids.len(), 1, "only the plan");
    let events = c
        .list_events(ListEventsRequest {
            filter: Some(EventFilter {
                task_id: t.id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events.iter().any(|e| e.message.contains("did not parse")),
        "{events:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_member_hands_a_task_off_by_capability() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "coder", "oa", &["code"]).await;
    register(&mut c, "artist", "oa-2", &["art"]).await;
    let coder = spawn(&mut c, "coder", 1).await.remove(0);
    let artist = spawn(&mut c, "artist", 1).await.remove(0);
    let mesh = swarm(
        &mut c,
        SwarmTopology::Mesh,
        SwarmStrategy::LeastBusy,
        &[&coder, &artist],
    )
    .await;
    let mut r = to_swarm(&mesh.id, "reply@echo HANDOFF art\nMake a logo.");
    r.required_capability = "code".into();
    let t = submit(&mut c, r).await;
    let handed = done(&mut c, &t.id).await;
    assert_eq!(handed.agent_id, artist.id);
    assert_eq!(handed.attempt, 2);
    assert_eq!(handed.output_text, *ANSWER);
    let events = c
        .list_events(ListEventsRequest {
            filter: Some(EventFilter {
                task_id: t.id.clone(),
                kinds: vec![AgentEventKind::TaskReassigned as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);
    assert!(events[0].message.contains("handed off"), "{events:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_lists_every_members_answer_and_sequential_chains_them() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "coder", "oa", &["code"]).await;
    let team = spawn(&mut c, "coder", 3).await;
    let mesh = swarm(
        &mut c,
        SwarmTopology::Mesh,
        SwarmStrategy::LeastBusy,
        &team.iter().collect::<Vec<_>>(),
    )
    .await;
    let mut r = to_swarm(&mesh.id, "Vote.");
    r.strategy = ExecutionStrategy::Parallel as i32;
    let t = submit(&mut c, r).await;
    let joined = done(&mut c, &t.id).await;
    assert_eq!(joined.strategy, ExecutionStrategy::Parallel as i32);
    assert_eq!(joined.child_task_ids.len(), 3);
    for a in &team {
        assert!(
            joined
                .output_text
                .contains(&format!("### {}\n{}", a.id, ANSWER.trim_end())),
            "{}",
            joined.output_text
        );
    }
    assert_eq!(fake.requests().len(), 3, "the join itself asks no model");

    let mut r = to_swarm(&mesh.id, "Pass it on.");
    r.strategy = ExecutionStrategy::Sequential as i32;
    let t = submit(&mut c, r).await;
    let last = done(&mut c, &t.id).await;
    assert_eq!(last.child_task_ids.len(), 2);
    assert_eq!(last.agent_id, team[2].id);
    let err = c
        .submit_task(SubmitTaskRequest {
            strategy: ExecutionStrategy::Parallel as i32,
            ..to_swarm("", "x")
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["target.swarm_id"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarms_are_checked_joined_listed_and_dissolved() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = agents(server.channel().await);
    register(&mut c, "coder", "oa", &["code"]).await;
    let team = spawn(&mut c, "coder", 2).await;

    let bad = c
        .create_swarm(CreateSwarmRequest::default())
        .await
        .unwrap_err();
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["max_agents", "topology"]);
    let unknown = c
        .create_swarm(CreateSwarmRequest {
            topology: SwarmTopology::Mesh as i32,
            max_agents: 5,
            member_ids: vec![team[0].id.clone(), "01NOSUCHAGENT000000000000".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unknown), vec!["member_ids[1]"]);

    let request = CreateSwarmRequest {
        name: "pair".into(),
        topology: SwarmTopology::Mesh as i32,
        max_agents: 3,
        member_ids: vec![team[0].id.clone()],
        idempotency_key: "pair-1".into(),
        ..Default::default()
    };
    let s = c
        .create_swarm(request.clone())
        .await
        .unwrap()
        .into_inner()
        .swarm
        .unwrap();
    let again = c
        .create_swarm(request)
        .await
        .unwrap()
        .into_inner()
        .swarm
        .unwrap();
    assert_eq!(s.id, again.id, "the key returns the first swarm");
    let taken = c
        .create_swarm(CreateSwarmRequest {
            topology: SwarmTopology::Mesh as i32,
            max_agents: 3,
            member_ids: vec![team[0].id.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&taken), vec!["member_ids[0]"]);

    // Spawning into it counts against max_agents, all or nothing.
    let joined = c
        .spawn(SpawnRequest {
            spec_name: "coder".into(),
            count: 2,
            swarm_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert!(joined.iter().all(|a| a.swarm_id == s.id));
    let full = c
        .spawn(SpawnRequest {
            spec_name: "coder".into(),
            count: 1,
            swarm_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::FailedPrecondition, "{full:?}");
    let s = c
        .get_swarm(GetSwarmRequest { id: s.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .swarm
        .unwrap();
    assert_eq!(s.member_ids.len(), 3);
    assert_eq!(s.member_ids[0], team[0].id, "join order");

    // A task no member can take waits; dissolving cancels it and frees the
    // members.
    let mut r = to_swarm(&s.id, "paint");
    r.required_capability = "art".into();
    let waiting = submit(&mut c, r).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        get_task(&mut c, &waiting.id).await.state,
        TaskState::Pending as i32
    );
    let gone = c
        .dissolve_swarm(DissolveSwarmRequest {
            id: s.id.clone(),
            stop_agents: false,
        })
        .await
        .unwrap()
        .into_inner()
        .swarm
        .unwrap();
    assert_eq!(gone.state, SwarmState::Dissolved as i32);
    let cancelled = get_task(&mut c, &waiting.id).await;
    assert_eq!(cancelled.state, TaskState::Cancelled as i32);
    let member = c
        .get_agent(GetAgentRequest {
            id: team[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(
        (member.swarm_id.as_str(), member.state),
        ("", AgentState::Idle as i32)
    );
    let err = c.submit_task(to_swarm(&s.id, "late")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let listed = c
        .list_swarms(ListSwarmsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .swarms;
    assert!(listed.is_empty(), "dissolved swarms are hidden by default");
    let all = c
        .list_swarms(ListSwarmsRequest {
            include_dissolved: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.swarms.len(), 1);
    assert!(all.next_page_token.is_empty());

    // Dissolving with stop_agents stops the members.
    let s2 = swarm(
        &mut c,
        SwarmTopology::Star,
        SwarmStrategy::LeastBusy,
        &[&team[1]],
    )
    .await;
    c.dissolve_swarm(DissolveSwarmRequest {
        id: s2.id.clone(),
        stop_agents: true,
    })
    .await
    .unwrap();
    let stopped = c
        .get_agent(GetAgentRequest {
            id: team[1].id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(stopped.state, AgentState::Stopped as i32);
    use AgentEventKind as K;
    let kinds: Vec<i32> = c
        .list_events(ListEventsRequest {
            filter: Some(EventFilter {
                swarm_id: s.id.clone(),
                kinds: vec![K::SwarmCreated as i32, K::SwarmDissolved as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![K::SwarmCreated as i32, K::SwarmDissolved as i32]
    );
    server.stop().await.unwrap();
}
