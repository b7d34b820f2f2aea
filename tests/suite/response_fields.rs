//! Every field of every answer agentd serves is filled by some call.
//!
//! A field the contract promises and the code never sets (issue #11
//! found `SearchResponse.cached` always false and `timing` always empty)
//! is invisible to tests that only check what they expect. This test walks
//! the descriptors of every response message of the served services, runs
//! one scenario that reaches every feature, and records which fields came
//! back with a value other than the default (proto3 sends nothing for a
//! default). A field never seen fails the test unless [`NEVER_SET_HERE`]
//! says why the scenario cannot set it, and an entry there that the
//! scenario does set fails it too, so the list cannot go stale.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agentd::embed::{ModelKind, ModelSpec};
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::common::fake_llm::FakeLlm;
use crate::common::sessions::{Session, client, start, user};
use crate::common::{TestServer, minilm_dir};

/// Fields the scenario cannot set, and why.
const NEVER_SET_HERE: &[(&str, &str)] = &[
    (
        "agentd.v1.CollectionStatsResponse.rebuilding",
        "true only while a background rebuild runs (memory_indexes watches it)",
    ),
    (
        "agentd.v1.CollectionStatsResponse.fresh_points",
        "non-zero only while the background merge lags behind the writes (memory_fresh \
         kills the process in such a moment)",
    ),
    (
        "agentd.v1.EmbeddingModel.matryoshka_dimensions",
        "no served model (MiniLM, hash) was trained for shorter vectors",
    ),
    (
        "agentd.v1.Message.tool_calls",
        "answers carry a Message only in InjectedEvent, and Inject takes user or system \
         messages: the tool fields are for requests (a Start with tool history)",
    ),
    ("agentd.v1.Message.tool_call_id", "as Message.tool_calls"),
    ("agentd.v1.Message.is_error", "as Message.tool_calls"),
];

/// The services whose answers are checked: the ones with an engine.
const SERVICES: [&str; 4] = [
    "agentd.v1.EmbeddingService",
    "agentd.v1.MemoryService",
    "agentd.v1.QueryControlService",
    "agentd.v1.AgentService",
];

/// The descriptors of the agentd messages, by full name.
struct Descriptors {
    messages: BTreeMap<String, DescriptorProto>,
    outputs: BTreeSet<String>,
}

impl Descriptors {
    fn load() -> Descriptors {
        let set = FileDescriptorSet::decode(agentd::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut messages = BTreeMap::new();
        let mut outputs = BTreeSet::new();
        fn add(prefix: &str, m: &DescriptorProto, out: &mut BTreeMap<String, DescriptorProto>) {
            let name = format!("{prefix}.{}", m.name());
            for nested in &m.nested_type {
                add(&name, nested, out);
            }
            out.insert(name, m.clone());
        }
        for file in &set.file {
            let package = file.package();
            for m in &file.message_type {
                add(package, m, &mut messages);
            }
            for service in &file.service {
                if SERVICES.contains(&format!("{package}.{}", service.name()).as_str()) {
                    for method in &service.method {
                        outputs.insert(method.output_type().trim_start_matches('.').to_owned());
                    }
                }
            }
        }
        Descriptors { messages, outputs }
    }

    /// The agentd message a field holds, if it holds one (map entries are
    /// left out: their keys and values are the map's content).
    fn message_of<'a>(&'a self, field: &'a prost_types::FieldDescriptorProto) -> Option<&'a str> {
        if field.r#type() != Type::Message {
            return None;
        }
        let name = field.type_name().trim_start_matches('.');
        if !name.starts_with("agentd.") {
            // Well-known types (Timestamp, Struct, ...): set or not as a whole.
            return None;
        }
        let m = self.messages.get(name)?;
        let map_entry = m.options.as_ref().is_some_and(|o| o.map_entry());
        (!map_entry).then_some(name)
    }

    /// Every field of every message reachable from a served RPC's answer,
    /// as "Message.field".
    fn reachable_fields(&self) -> BTreeSet<String> {
        let mut todo: Vec<String> = self.outputs.iter().cloned().collect();
        let mut done = BTreeSet::new();
        let mut fields = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !done.insert(name.clone()) {
                continue;
            }
            let m = &self.messages[&name];
            for f in &m.field {
                fields.insert(format!("{name}.{}", f.name()));
                if let Some(inner) = self.message_of(f) {
                    todo.push(inner.to_owned());
                }
            }
        }
        fields
    }
}

/// The fields seen set in answers.
pub struct Seen<'a> {
    descriptors: &'a Descriptors,
    fields: BTreeSet<String>,
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    value
}

impl Seen<'_> {
    /// Records the fields set in `message`, an answer of type `name`.
    pub fn record(&mut self, name: &str, message: &impl prost::Message) {
        self.walk(name, &message.encode_to_vec());
    }

    fn walk(&mut self, name: &str, bytes: &[u8]) {
        let descriptor = &self.descriptors.messages[name];
        let mut at = 0;
        while at < bytes.len() {
            let key = varint(bytes, &mut at);
            let (number, wire) = ((key >> 3) as i32, key & 7);
            let field = descriptor.field.iter().find(|f| f.number() == number);
            let value = match wire {
                0 => {
                    varint(bytes, &mut at);
                    None
                }
                1 => {
                    at += 8;
                    None
                }
                5 => {
                    at += 4;
                    None
                }
                2 => {
                    let len = varint(bytes, &mut at) as usize;
                    let value = &bytes[at..at + len];
                    at += len;
                    Some(value)
                }
                other => panic!("wire type {other} in {name}"),
            };
            let Some(field) = field else { continue };
            self.fields.insert(format!("{name}.{}", field.name()));
            if let (Some(inner), Some(value)) = (self.descriptors.message_of(field), value) {
                self.walk(inner, value);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_every_answer_is_set_by_some_call() {
    let descriptors = Descriptors::load();
    let mut seen = Seen {
        descriptors: &descriptors,
        fields: BTreeSet::new(),
    };
    let fake = FakeLlm::start(Duration::from_millis(2)).await;
    let (server, _keys) = start_server_with_models(&fake).await;
    let channel = server.channel().await;

    embedding_calls(&mut seen, &mut EmbeddingServiceClient::new(channel.clone())).await;
    memory_calls(&mut seen, &mut MemoryServiceClient::new(channel.clone())).await;
    query_calls(&mut seen, channel.clone()).await;
    crate::response_fields_agents::agent_calls(&mut seen, channel.clone()).await;

    let reachable = descriptors.reachable_fields();
    let excused: BTreeMap<&str, &str> = NEVER_SET_HERE.iter().copied().collect();
    let missing: Vec<&String> = reachable
        .iter()
        .filter(|f| !seen.fields.contains(*f) && !excused.contains_key(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "answer fields no call set (fill them, or say in NEVER_SET_HERE why not): {missing:#?}"
    );
    for field in excused.keys() {
        assert!(reachable.contains(*field), "{field} is not an answer field");
        assert!(
            !seen.fields.contains(*field),
            "{field} was set after all: take it out of NEVER_SET_HERE"
        );
    }
    server.stop().await.unwrap();
}

/// The query test server, plus MiniLM (special tokens) and a model that
/// fails to load (a model's error) beside the default hash model.
async fn start_server_with_models(fake: &FakeLlm) -> (TestServer, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("anthropic.key");
    std::fs::write(&key_file, "test-key-123\n").unwrap();
    let (mut config, dir) = crate::common::test_config();
    let mut models = crate::common::sessions::aliases(fake, &key_file);
    models.push(crate::query_local::local_alias("local"));
    config.query.models = Some(models);
    config.query.local_threads = 1;
    config.query.retry_backoff = Duration::from_millis(5);
    config.query.max_retries = 1;
    config.query.cooldown = Duration::ZERO;
    config.memory.snapshot_interval = Duration::from_secs(1);
    config.embedding.models.push(ModelSpec {
        id: "all-MiniLM-L6-v2".into(),
        kind: ModelKind::Bert,
        path: Some(minilm_dir()),
        dimensions: None,
        backend: Default::default(),
    });
    config.embedding.models.push(ModelSpec {
        id: "broken".into(),
        kind: ModelKind::Bert,
        path: Some("/nonexistent/model".into()),
        dimensions: None,
        backend: Default::default(),
    });
    let server = TestServer::start_with(config, dir, |s| s).await;
    (server, keys)
}

async fn embedding_calls(
    seen: &mut Seen<'_>,
    c: &mut EmbeddingServiceClient<tonic::transport::Channel>,
) {
    // MiniLM loads in the background.
    for _ in 0..600 {
        let m = c
            .get_model(GetModelRequest {
                id: "all-MiniLM-L6-v2".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if m.model.unwrap().state == ModelState::Ready as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let long = "w ".repeat(9000);
    let embed = EmbedRequest {
        inputs: vec!["hello world".into(), long.clone()],
        ..Default::default()
    };
    let first = c.embed(embed.clone()).await.unwrap().into_inner();
    seen.record("agentd.v1.EmbedResponse", &first);
    let again = c.embed(embed).await.unwrap().into_inner();
    assert!(again.embeddings[0].cached && again.embeddings[1].truncated);
    seen.record("agentd.v1.EmbedResponse", &again);

    let items = vec![
        EmbedStreamRequest {
            request_id: "ok".into(),
            request: Some(EmbedRequest {
                inputs: vec!["a".into()],
                ..Default::default()
            }),
        },
        EmbedStreamRequest {
            request_id: "x".repeat(200),
            request: None,
        },
    ];
    let mut stream = c
        .embed_stream(futures::stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = stream.message().await.unwrap() {
        seen.record("agentd.v1.EmbedStreamResponse", &m);
    }

    let tokens = c
        .tokenize(TokenizeRequest {
            model: "all-MiniLM-L6-v2".into(),
            inputs: vec!["hello world".into(), "w ".repeat(300)],
            add_special_tokens: None,
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.TokenizeResponse", &tokens);
    let models = c
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListModelsResponse", &models);
    let one = c
        .get_model(GetModelRequest { id: String::new() })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetModelResponse", &one);
}

async fn memory_calls(seen: &mut Seen<'_>, c: &mut MemoryServiceClient<tonic::transport::Channel>) {
    for key in ["a", "b"] {
        let put = c
            .put(PutRequest {
                namespace: "notes".into(),
                key: key.into(),
                value: b"v".to_vec(),
                content_type: "text/plain".into(),
                metadata: [("m".to_string(), "1".to_string())].into(),
                ttl: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                if_version: None,
            })
            .await
            .unwrap()
            .into_inner();
        seen.record("agentd.v1.PutResponse", &put);
    }
    let got = c
        .get(GetRequest {
            namespace: "notes".into(),
            key: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetResponse", &got);
    let page = c
        .list(ListRequest {
            namespace: "notes".into(),
            page_size: 1,
            include_values: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListResponse", &page);
    let deleted = c
        .delete(DeleteRequest {
            namespace: "notes".into(),
            key: "b".into(),
            if_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.DeleteResponse", &deleted);

    // One collection of each index kind; the text one merges duplicates.
    let kinds = [
        (
            "flat",
            index_spec::Kind::Flat(FlatIndex {}),
            QuantizationType::None,
            4,
            "",
        ),
        (
            "ivf",
            index_spec::Kind::Ivf(IvfIndex {
                nlist: 2,
                nprobe: 1,
            }),
            QuantizationType::Pq,
            8,
            "",
        ),
        (
            "texts",
            index_spec::Kind::Hnsw(HnswIndex::default()),
            QuantizationType::Sq8,
            0,
            "hash",
        ),
    ];
    for (name, kind, quantization, dimensions, model) in kinds {
        let created = c
            .create_collection(CreateCollectionRequest {
                name: name.into(),
                dimensions,
                metric: Metric::Cosine as i32,
                index: Some(IndexSpec { kind: Some(kind) }),
                quantization: Some(Quantization {
                    r#type: quantization as i32,
                    pq_subquantizers: 0,
                    pq_bits: 0,
                }),
                embedding_model: model.into(),
                dedup_threshold: (name == "texts").then_some(0.99),
            })
            .await
            .unwrap()
            .into_inner();
        seen.record("agentd.v1.CreateCollectionResponse", &created);
    }
    let text_point = |id: &str, text: &str| PointInput {
        id: id.into(),
        data: Some(point_input::Data::Text(text.into())),
        payload: Some(prost_types::Struct {
            fields: [(
                "lang".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("en".into())),
                },
            )]
            .into(),
        }),
    };
    let upserted = c
        .upsert(UpsertRequest {
            collection: "texts".into(),
            points: (0..6)
                .map(|i| {
                    text_point(
                        &format!("p{i}"),
                        &format!("note number {i} about topic {i}"),
                    )
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.UpsertResponse", &upserted);
    // A near-duplicate under a new id merges; a known id updates.
    let merged = c
        .upsert(UpsertRequest {
            collection: "texts".into(),
            points: vec![
                text_point("dup", "note number 1 about topic 1"),
                text_point("p2", "note number 2 about topic 2, revised"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.results[0].status, UpsertStatus::Merged as i32);
    seen.record("agentd.v1.UpsertResponse", &merged);
    let streamed = c
        .upsert_stream(futures::stream::iter(vec![
            UpsertStreamRequest {
                collection: "texts".into(),
                points: vec![text_point("s1", "a streamed note")],
            },
            UpsertStreamRequest {
                collection: String::new(),
                points: vec![text_point("s2", "note number 3 about topic 3")],
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.UpsertStreamResponse", &streamed);
    let points = c
        .get_points(GetPointsRequest {
            collection: "texts".into(),
            ids: vec!["p1".into()],
            with_payload: true,
            with_vector: true,
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetPointsResponse", &points);
    let search = SearchRequest {
        collection: "texts".into(),
        query: Some(search_request::Query::Text("topic 4".into())),
        k: 3,
        with_payload: true,
        with_vector: true,
        ..Default::default()
    };
    for _ in 0..2 {
        let found = c.search(search.clone()).await.unwrap().into_inner();
        seen.record("agentd.v1.SearchResponse", &found);
    }
    let batch = c
        .search_batch(SearchBatchRequest {
            collection: "texts".into(),
            searches: vec![search.clone(), search],
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SearchBatchResponse", &batch);
    let count = c
        .count(CountRequest {
            collection: "texts".into(),
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.CountResponse", &count);
    let removed = c
        .delete_points(DeletePointsRequest {
            collection: "texts".into(),
            selector: Some(delete_points_request::Selector::Ids(PointIds {
                ids: vec!["p0".into()],
            })),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.DeletePointsResponse", &removed);
    // The periodic snapshot (every second here) takes the writes.
    let mut stats = CollectionStatsResponse::default();
    for _ in 0..100 {
        stats = c
            .collection_stats(CollectionStatsRequest {
                name: "texts".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if stats.last_snapshot_sequence == stats.last_applied_sequence
            && !stats.rebuilding
            && stats.fresh_points == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.record("agentd.v1.CollectionStatsResponse", &stats);
    let one = c
        .get_collection(GetCollectionRequest {
            name: "texts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.GetCollectionResponse", &one);
    let listed = c
        .list_collections(ListCollectionsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListCollectionsResponse", &listed);
    let dropped = c
        .delete_collection(DeleteCollectionRequest {
            name: "flat".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.DeleteCollectionResponse", &dropped);
}

fn record_events(seen: &mut Seen<'_>, events: &[SessionEvent]) {
    for event in events {
        let response = SessionResponse {
            event: Some(event.clone()),
        };
        seen.record("agentd.v1.SessionResponse", &response);
    }
}

async fn query_calls(seen: &mut Seen<'_>, channel: tonic::transport::Channel) {
    let mut q = client(channel.clone());

    // A session that a rule moves to another model, is paused (twice: the
    // second is refused), resumed on a model, given a message, and
    // completes; the same request again is a cache hit.
    let mut cached = start("oa");
    cached.cache = Some(CachePolicy {
        mode: CacheMode::Semantic as i32,
        similarity_threshold: 0.5,
        ..Default::default()
    });
    cached.labels = [("team".to_string(), "a".to_string())].into();
    cached.params = Some(GenerationParams {
        max_tokens: 40,
        ..Default::default()
    });
    let mut ruled = cached.clone();
    ruled.rules = vec![Rule {
        name: "long".into(),
        trigger: Some(rule::Trigger::OutputTokensExceed(5)),
        switch_to_model: "an".into(),
    }];
    let mut s = Session::open(channel.clone(), ruled).await.unwrap();
    s.until(|k| matches!(k, Kind::ModelSwitched(_))).await;
    s.send(Command::Pause(PauseCommand {})).await;
    s.until(|k| matches!(k, Kind::Paused(_))).await;
    s.send(Command::Pause(PauseCommand {})).await;
    s.until(|k| matches!(k, Kind::CommandRejected(_))).await;
    s.send(Command::Resume(ResumeCommand { model: "oa".into() }))
        .await;
    s.until(|k| matches!(k, Kind::Resumed(_))).await;
    s.send(Command::Inject(InjectCommand {
        message: Some(user("go on")),
    }))
    .await;
    let events = s.finish().await;
    assert!(matches!(
        events.last().unwrap().kind,
        Some(Kind::Completed(_))
    ));
    record_events(seen, &events);
    let ruled_id = events[0].query_id.clone();

    let mut plain = Session::open(channel.clone(), cached.clone())
        .await
        .unwrap();
    let events = plain.finish().await;
    record_events(seen, &events);
    let mut again = Session::open(channel.clone(), cached.clone())
        .await
        .unwrap();
    let events = again.finish().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::CacheHit(_))))
    );
    record_events(seen, &events);
    let mut similar = cached.clone();
    similar.messages = vec![user("count!")];
    let mut near = Session::open(channel.clone(), similar).await.unwrap();
    record_events(seen, &near.finish().await);

    // Two queries on the local model, which runs one at a time: the
    // second waits in its queue.
    let mut local = start("local");
    local.params = Some(GenerationParams {
        max_tokens: 24,
        ..Default::default()
    });
    let mut first = Session::open(channel.clone(), local.clone()).await.unwrap();
    first.until(|k| matches!(k, Kind::Delta(_))).await;
    let mut second = Session::open(channel.clone(), local).await.unwrap();
    let events = second.finish().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Queued(_)))),
        "{events:?}"
    );
    record_events(seen, &events);
    first.finish().await;

    // A query no model can answer fails.
    let mut failing = Session::open(channel.clone(), start("oa-bad"))
        .await
        .unwrap();
    let events = failing.finish().await;
    assert!(matches!(events.last().unwrap().kind, Some(Kind::Failed(_))));
    record_events(seen, &events);
    let failed_id = events[0].query_id.clone();

    // A tool loop: two client calls and one with arguments that are not
    // JSON (answered by agentd with an error); one result by the unary
    // call, one on the stream.
    let weather = ToolDefinition {
        name: "weather".into(),
        description: "The weather in a city.".into(),
        parameters: Some(prost_types::Struct {
            fields: [(
                "type".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("object".into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let mut tools = start("oa");
    tools.messages = vec![user(
        "say Let me look.\ncall weather {\"city\": \"Paris\"}\ncall weather {\"city\": \"Rome\"}\ncall weather {\"city\": ",
    )];
    tools.tools = vec![weather];
    let mut looped = Session::open(channel.clone(), tools).await.unwrap();
    looped.until(|k| matches!(k, Kind::ToolResult(_))).await;
    let calls: Vec<ToolCallEvent> = looped
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolCall(c)) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let stats = q
        .get_query_stats(GetQueryStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.awaiting_tools >= 1, "{stats:?}");
    seen.record("agentd.v1.GetQueryStatsResponse", &stats);
    let submitted = q
        .submit_tool_result(SubmitToolResultRequest {
            query_id: looped.query_id(),
            call_id: calls[0].call_id.clone(),
            outcome: Some(submit_tool_result_request::Outcome::Result("sun".into())),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SubmitToolResultResponse", &submitted);
    looped
        .send(Command::ToolResult(ToolResultCommand {
            call_id: calls[1].call_id.clone(),
            outcome: Some(tool_result_command::Outcome::Error("no data".into())),
        }))
        .await;
    let events = looped.finish().await;
    assert!(matches!(
        events.last().unwrap().kind,
        Some(Kind::Completed(_))
    ));
    record_events(seen, &events);
    let tools_id = events[0].query_id.clone();

    // Unary controls on a slow query, one paused and one running for the
    // stats, then terminated.
    let mut slow = Session::open(channel.clone(), start("oa-slow"))
        .await
        .unwrap();
    slow.until(|k| matches!(k, Kind::Delta(d) if d.seq >= 2))
        .await;
    let slow_id = slow.query_id();
    let paused = q
        .pause(PauseRequest {
            query_id: slow_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.PauseResponse", &paused);
    let mut running = Session::open(channel.clone(), start("an-slow"))
        .await
        .unwrap();
    running.until(|k| matches!(k, Kind::Delta(_))).await;
    let stats = q
        .get_query_stats(GetQueryStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.running >= 1 && stats.paused >= 1, "{stats:?}");
    seen.record("agentd.v1.GetQueryStatsResponse", &stats);
    let resumed = q
        .resume(ResumeRequest {
            query_id: slow_id.clone(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ResumeResponse", &resumed);
    slow.until(|k| matches!(k, Kind::Delta(d) if d.seq >= 4))
        .await;
    let switched = q
        .switch_model(SwitchModelRequest {
            query_id: slow_id.clone(),
            model: "an-slow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.SwitchModelResponse", &switched);
    let terminated = q
        .terminate(TerminateRequest {
            query_id: slow_id.clone(),
            reason: "enough".into(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.TerminateResponse", &terminated);
    record_events(seen, &slow.finish().await);
    q.terminate(TerminateRequest {
        query_id: running.query_id(),
        reason: String::new(),
    })
    .await
    .unwrap();
    running.finish().await;

    let mut attach = q
        .attach(AttachRequest {
            query_id: ruled_id.clone(),
            from_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = attach.message().await.unwrap() {
        seen.record("agentd.v1.AttachResponse", &m);
    }
    for id in [ruled_id, failed_id, slow_id, tools_id] {
        let info = q
            .get_query(GetQueryRequest {
                query_id: id,
                include_text: true,
            })
            .await
            .unwrap()
            .into_inner();
        seen.record("agentd.v1.GetQueryResponse", &info);
    }
    let listed = q
        .list_queries(ListQueriesRequest {
            state: 0,
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListQueriesResponse", &listed);
    let models = q
        .list_query_models(ListQueryModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    seen.record("agentd.v1.ListQueryModelsResponse", &models);
}
