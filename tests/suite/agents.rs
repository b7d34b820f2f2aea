//! AgentService through the gRPC API: specs and their versions, spawning
//! (bulk, all or none, idempotent), listing, stopping, and the activity
//! log (ListEvents, WatchEvents replaying then following), across a
//! restart.

use std::collections::HashSet;
use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::agents::{agents as client, spawn};
use crate::common::fake_llm::FakeLlm;
use crate::common::sessions::{aliases, start_server};
use crate::common::{TestServer, violated_fields};

fn spec(name: &str, model: &str, capabilities: &[&str]) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        description: format!("{name} agent"),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        model: model.into(),
        system_prompt: "You are careful.".into(),
        memory_top_k: 3,
        ..Default::default()
    }
}

async fn register(c: &mut AgentServiceClient<Channel>, s: AgentSpec) -> RegisterSpecResponse {
    c.register_spec(RegisterSpecRequest { spec: Some(s) })
        .await
        .expect("RegisterSpec")
        .into_inner()
}

async fn all_agents(c: &mut AgentServiceClient<Channel>, spec_name: &str) -> Vec<Agent> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_agents(ListAgentsRequest {
                spec_name: spec_name.into(),
                page_size: 300,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.agents);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

async fn all_events(c: &mut AgentServiceClient<Channel>, filter: EventFilter) -> Vec<AgentEvent> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_events(ListEventsRequest {
                filter: Some(filter.clone()),
                page_size: 500,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_are_versioned_checked_and_guarded() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = client(server.channel().await);

    let first = register(&mut c, spec("coder", "oa", &["code"])).await;
    assert!(first.created);
    let v1 = first.spec.unwrap();
    assert_eq!(v1.version, 1);
    assert!(v1.updated_at.is_some());
    let mut changed = spec("coder", "an", &["code", "review"]);
    changed.fallback_models = vec!["oa".into()];
    let second = register(&mut c, changed).await;
    assert!(!second.created);
    assert_eq!(second.spec.as_ref().unwrap().version, 2);
    let got = c
        .get_spec(GetSpecRequest {
            name: "coder".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .spec
        .unwrap();
    assert_eq!((got.version, got.model.as_str()), (2, "an"));
    assert_eq!(got.memory_top_k, 3);

    // Unknown aliases and bad fields, each named; nothing registered.
    let mut bad = spec("bad name!", "ghost", &["Code"]);
    bad.fallback_models = vec!["nope".into()];
    bad.memory_top_k = 1000;
    let err = c
        .register_spec(RegisterSpecRequest { spec: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.capabilities[0]",
            "spec.fallback_models[0]",
            "spec.memory_top_k",
            "spec.model",
            "spec.name",
        ]
    );

    // Listing by capability, a page at a time, in name order.
    for name in ["a-writer", "b-writer", "c-writer"] {
        register(&mut c, spec(name, "oa", &["write"])).await;
    }
    let page = c
        .list_specs(ListSpecsRequest {
            capability: "write".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = page.specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a-writer", "b-writer"]);
    let rest = c
        .list_specs(ListSpecsRequest {
            capability: "write".into(),
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.specs.len(), 1);
    assert!(rest.next_page_token.is_empty());

    // Agents keep the version they were spawned with; the spec cannot go
    // while they are not stopped.
    let agents = spawn(&mut c, "coder", 2).await;
    assert!(agents.iter().all(|a| a.spec_version == 2));
    register(&mut c, spec("coder", "oa", &["code"])).await;
    let kept = c
        .get_agent(GetAgentRequest {
            id: agents[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(kept.spec_version, 2);
    let refused = c
        .delete_spec(DeleteSpecRequest {
            name: "coder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    for a in &agents {
        let stopped = c
            .stop_agent(StopAgentRequest {
                id: a.id.clone(),
                cancel_tasks: false,
            })
            .await
            .unwrap()
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(stopped.state, AgentState::Stopped as i32);
    }
    let deleted = c
        .delete_spec(DeleteSpecRequest {
            name: "coder".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    let gone = c
        .get_spec(GetSpecRequest {
            name: "coder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = c
        .delete_spec(DeleteSpecRequest {
            name: "coder".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.deleted);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_are_bulk_all_or_nothing_and_idempotent() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut c = client(server.channel().await);
    register(&mut c, spec("worker", "oa", &["code"])).await;
    register(&mut c, spec("external", "", &["browse"])).await;

    let five = spawn(&mut c, "worker", 5).await;
    let ids: HashSet<&str> = five.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "five distinct agents");
    assert!(five.iter().all(|a| a.state == AgentState::Idle as i32
        && a.kind == AgentKind::Internal as i32
        && a.created_at.is_some()));
    let external = spawn(&mut c, "external", 1).await;
    assert_eq!(external[0].kind, AgentKind::Worker as i32);

    // A thousand in one call, paged through in spawn order.
    let thousand = spawn(&mut c, "worker", 1000).await;
    assert_eq!(thousand.len(), 1000);
    let listed = all_agents(&mut c, "worker").await;
    assert_eq!(listed.len(), 1005);
    let listed_ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    let spawned_ids: Vec<&str> = five
        .iter()
        .chain(&thousand)
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(listed_ids, spawned_ids, "oldest first, every agent once");

    // Bad counts and unknown specs are named; a batch is all or none.
    for (count, field) in [(0, "count"), (1001, "count")] {
        let err = c
            .spawn(SpawnRequest {
                spec_name: "worker".into(),
                count,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), [field]);
    }
    let missing = c
        .spawn(SpawnRequest {
            spec_name: "ghost".into(),
            count: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let batch = c
        .spawn_batch(SpawnBatchRequest {
            requests: vec![
                SpawnRequest {
                    spec_name: "worker".into(),
                    count: 3,
                    ..Default::default()
                },
                SpawnRequest {
                    spec_name: "ghost".into(),
                    count: 1,
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(batch.code(), Code::NotFound);
    assert_eq!(
        all_agents(&mut c, "worker").await.len(),
        1005,
        "nothing spawned"
    );
    let made = c
        .spawn_batch(SpawnBatchRequest {
            requests: vec![
                SpawnRequest {
                    spec_name: "worker".into(),
                    count: 2,
                    ..Default::default()
                },
                SpawnRequest {
                    spec_name: "external".into(),
                    count: 1,
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.results[0].agents.len(), 2);
    assert_eq!(made.results[1].agents.len(), 1);

    // A retried spawn of 1,000 does not make 2,000.
    let keyed = SpawnRequest {
        spec_name: "external".into(),
        count: 1000,
        idempotency_key: "deploy-42".into(),
        ..Default::default()
    };
    let first = c.spawn(keyed.clone()).await.unwrap().into_inner().agents;
    let retry = c.spawn(keyed.clone()).await.unwrap().into_inner().agents;
    assert_eq!(first, retry, "the same agents");
    assert_eq!(all_agents(&mut c, "external").await.len(), 1002);
    let reused = c
        .spawn(SpawnRequest { count: 3, ..keyed })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&reused), ["idempotency_key"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_log_is_listed_watched_and_kept_across_a_restart() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, keys) = start_server(&fake).await;
    let mut c = client(server.channel().await);
    register(&mut c, spec("scout", "oa", &["search"])).await;
    let early = spawn(&mut c, "scout", 3).await;

    // Watchers from the start, from an id, and of one agent only.
    let watch = |request: WatchEventsRequest| {
        let mut c = c.clone();
        async move { c.watch_events(request).await.unwrap().into_inner() }
    };
    let mut watchers = Vec::new();
    for _ in 0..20 {
        watchers.push(
            watch(WatchEventsRequest {
                from_start: true,
                ..Default::default()
            })
            .await,
        );
    }
    let mut of_one = watch(WatchEventsRequest {
        filter: Some(EventFilter {
            agent_id: early[1].id.clone(),
            ..Default::default()
        }),
        from_start: true,
        ..Default::default()
    })
    .await;
    let mut after_two = watch(WatchEventsRequest {
        after_id: 2,
        ..Default::default()
    })
    .await;

    // More activity while they watch.
    let later = spawn(&mut c, "scout", 50).await;
    c.stop_agent(StopAgentRequest {
        id: early[1].id.clone(),
        cancel_tasks: false,
    })
    .await
    .unwrap();

    let listed = all_events(&mut c, EventFilter::default()).await;
    assert_eq!(listed.len(), 1 + 3 + 50 + 1);
    assert!(listed.windows(2).all(|w| w[1].id == w[0].id + 1), "no gaps");
    assert_eq!(listed[0].kind, AgentEventKind::SpecRegistered as i32);
    assert_eq!(listed[0].spec_name, "scout");
    assert_eq!(
        listed.last().unwrap().kind,
        AgentEventKind::AgentStopped as i32
    );
    let spawned = listed
        .iter()
        .filter(|e| e.kind == AgentEventKind::AgentSpawned as i32)
        .count();
    assert_eq!(spawned, early.len() + later.len());

    async fn take(stream: &mut tonic::Streaming<WatchEventsResponse>, n: usize) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            out.push(m.event.unwrap());
        }
        out
    }
    for w in &mut watchers {
        assert_eq!(take(w, listed.len()).await, listed, "identical, gap-free");
    }
    let mine = take(&mut of_one, 2).await;
    assert_eq!(
        mine.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            AgentEventKind::AgentSpawned as i32,
            AgentEventKind::AgentStopped as i32
        ]
    );
    let tail = take(&mut after_two, listed.len() - 2).await;
    assert_eq!(tail, listed[2..]);

    // A bad filter is named.
    let err = c
        .list_events(ListEventsRequest {
            filter: Some(EventFilter {
                kinds: vec![999],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["filter.kinds[0]"]);

    // Everything acknowledged is there after a restart, and the log goes
    // on from where it was.
    let data = server.stop_keeping_data().await;
    let mut config = crate::common::test_config().0;
    config.data_dir = data.path().join("data");
    config.query.models = Some(aliases(&fake, &keys.path().join("anthropic.key")));
    let server = TestServer::start_with(config, data, |s| s).await;
    let mut c = client(server.channel().await);
    assert_eq!(all_events(&mut c, EventFilter::default()).await, listed);
    assert_eq!(all_agents(&mut c, "scout").await.len(), 53);
    let stopped = c
        .get_agent(GetAgentRequest {
            id: early[1].id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(stopped.state, AgentState::Stopped as i32);
    spawn(&mut c, "scout", 1).await;
    let next = all_events(&mut c, EventFilter::default()).await;
    assert_eq!(next.last().unwrap().id, listed.last().unwrap().id + 1);
    server.stop().await.unwrap();
}
