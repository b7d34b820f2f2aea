//! Tool calling inside query sessions, measured from a client against the
//! release binary in its own process, with the fake OpenAI-compatible
//! provider of the tests (tests/suite/common/fake_llm.rs) on loopback:
//!
//! - **tool round trip**: from the client sending a ToolResult command to
//!   the provider receiving the next turn's request (agentd's part of a
//!   client tool call: gRPC in, the driver, the history, the HTTP request
//!   out), with a unary gRPC call timed alongside as the floor;
//! - **memory_search as a server tool** over a collection of clustered
//!   points (100,000 × 384 with `--bench`): the time between the ToolCall
//!   and the ToolResult events as the client receives them, against the
//!   same searches (distinct texts, so no cache hits) over gRPC Search.
//!
//! `cargo bench --bench tools` writes JSON to `$AGENTD_BENCH_OUT` (or
//! stdout); under `cargo test` it runs a few iterations on 1,000 points.

#[path = "../tests/suite/common/binary.rs"]
mod binary;
#[path = "../tests/suite/common/fake_llm.rs"]
mod fake_llm;
#[path = "common/sessions.rs"]
mod sessions;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use binary::{Binary, ConfigFile};
use fake_llm::FakeLlm;
use serde_json::json;
use sessions::open;
use tonic::transport::Channel;

/// Dimensions of the collection (the hash embedding model's).
const DIMS: usize = 384;

/// A Start on the fake whose script calls `call` once, offering `tools`.
fn start(call: &str, tools: Vec<ToolDefinition>) -> StartCommand {
    StartCommand {
        model: "fake".into(),
        messages: vec![Message {
            role: Role::User as i32,
            content: format!("call {call}"),
            ..Default::default()
        }],
        // The final answer is cut short: only its first request matters.
        params: Some(GenerationParams {
            max_tokens: 3,
            ..Default::default()
        }),
        cache: Some(CachePolicy {
            mode: CacheMode::Off as i32,
            ..Default::default()
        }),
        tools,
        ..Default::default()
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Client tool round trips: (result sent → next request at the provider)
/// and the unary gRPC floor timed alongside, in ms.
async fn round_trips(channel: &Channel, fake: &FakeLlm, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let time = ToolDefinition {
        name: "time".into(),
        description: "The time now.".into(),
        ..Default::default()
    };
    let mut unary = QueryControlServiceClient::new(channel.clone());
    let (mut trips, mut floor) = (Vec::new(), Vec::new());
    for i in 0..runs + 3 {
        let mut s = open(channel, start("time {}", vec![time.clone()])).await;
        let call_id = loop {
            match s.next_timed().await.expect("a tool call") {
                (Kind::ToolCall(c), _) => break c.call_id,
                _ => continue,
            }
        };
        let sent = Instant::now();
        s.commands
            .send(SessionRequest {
                command: Some(Command::ToolResult(ToolResultCommand {
                    call_id,
                    outcome: Some(tool_result_command::Outcome::Result("noon".into())),
                })),
            })
            .await
            .unwrap();
        assert!(matches!(s.finish().await, Kind::Completed(_)));
        let arrived = fake.requests().last().expect("the next turn's request").at;
        let floor_start = Instant::now();
        unary
            .get_query_stats(GetQueryStatsRequest {})
            .await
            .unwrap();
        // The first runs warm the connections up.
        if i >= 3 {
            trips.push(arrived.duration_since(sent).as_secs_f64() * 1e3);
            floor.push(floor_start.elapsed().as_secs_f64() * 1e3);
        }
    }
    (trips, floor)
}

/// Clustered points: 64 centres, small noise, unit length.
fn clustered(n: usize) -> Vec<Vec<f32>> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..64)
        .map(|_| (0..DIMS).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let mut v: Vec<f32> = centres[i % 64].iter().map(|c| c + 0.1 * next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// Loads `n` points into collection `bench` and waits for its index.
async fn load(channel: &Channel, n: usize) -> f64 {
    let mut memory = MemoryServiceClient::new(channel.clone());
    memory
        .create_collection(CreateCollectionRequest {
            name: "bench".into(),
            metric: Metric::Cosine as i32,
            embedding_model: "hash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let began = Instant::now();
    for (b, chunk) in clustered(n).chunks(1000).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| PointInput {
                id: format!("p{}", b * 1000 + i),
                data: Some(point_input::Data::Vector(Vector { values: v.clone() })),
                payload: None,
            })
            .collect();
        memory
            .upsert(UpsertRequest {
                collection: "bench".into(),
                points,
            })
            .await
            .unwrap();
    }
    loop {
        let stats = memory
            .collection_stats(CollectionStatsRequest {
                name: "bench".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if stats.points_count == n as u64 && !stats.rebuilding {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    began.elapsed().as_secs_f64()
}

/// memory_search through a session (ToolCall → ToolResult as the client
/// sees them) and the same kind of search over gRPC, alternating, in ms.
async fn searches(channel: &Channel, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let tool = ToolDefinition {
        name: "memory_search".into(),
        location: ToolLocation::Server as i32,
        ..Default::default()
    };
    let mut memory = MemoryServiceClient::new(channel.clone());
    let (mut in_session, mut over_grpc) = (Vec::new(), Vec::new());
    for i in 0..runs + 3 {
        // Distinct texts: no search is a cache hit.
        let call = format!(
            "memory_search {}",
            json!({"collection": "bench", "query": format!("session topic {i}"), "k": 5})
        );
        let mut s = open(channel, start(&call, vec![tool.clone()])).await;
        let (mut called, mut answered) = (None, None);
        while let Some((kind, at)) = s.next_timed().await {
            match kind {
                Kind::ToolCall(_) => called = Some(at),
                Kind::ToolResult(r) => {
                    assert!(!r.is_error, "{}", r.content);
                    answered = Some(at);
                    break;
                }
                _ => {}
            }
        }
        s.finish().await;
        let began = Instant::now();
        let found = memory
            .search(SearchRequest {
                collection: "bench".into(),
                query: Some(search_request::Query::Text(format!("grpc topic {i}"))),
                k: 5,
                with_payload: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let grpc = began.elapsed();
        assert_eq!(found.results.len(), 5);
        if i >= 3 {
            let tool = answered.unwrap().duration_since(called.unwrap());
            in_session.push(tool.as_secs_f64() * 1e3);
            over_grpc.push(grpc.as_secs_f64() * 1e3);
        }
    }
    (in_session, over_grpc)
}

fn config(dir: &Path, fake: &FakeLlm) -> PathBuf {
    ConfigFile::new()
        .hash_embeddings()
        .fake_model("fake", &fake.openai_url())
        .write(dir)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeLlm::start(Duration::ZERO).await;
        let config = config(dir.path(), &fake);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (server, channel) = Binary::start_with(
            &data,
            &["--disable", "agents", "--config", config.to_str().unwrap()],
        )
        .await;

        let runs = if full { 300 } else { 5 };
        let (trips, floor) = round_trips(&channel, &fake, runs).await;
        eprintln!(
            "tool round trip p50 {:.3} ms, p99 {:.3} ms (unary gRPC floor p50 {:.3} ms)",
            percentile(&trips, 0.5),
            percentile(&trips, 0.99),
            percentile(&floor, 0.5)
        );

        let points = if full { 100_000 } else { 1_000 };
        let load_s = load(&channel, points).await;
        eprintln!("{points} points loaded and indexed in {load_s:.1} s");
        let (tool, grpc) = searches(&channel, if full { 200 } else { 5 }).await;
        eprintln!(
            "memory_search: as a server tool p50 {:.3} ms (p99 {:.3}), over gRPC Search p50 {:.3} ms (p99 {:.3})",
            percentile(&tool, 0.5),
            percentile(&tool, 0.99),
            percentile(&grpc, 0.5),
            percentile(&grpc, 0.99)
        );

        let out = json!({
            "tool_round_trip_p50_ms": percentile(&trips, 0.5),
            "tool_round_trip_p99_ms": percentile(&trips, 0.99),
            "grpc_floor_p50_ms": percentile(&floor, 0.5),
            "points": points,
            "load_and_index_s": load_s,
            "memory_search_tool_p50_ms": percentile(&tool, 0.5),
            "memory_search_tool_p99_ms": percentile(&tool, 0.99),
            "memory_search_grpc_p50_ms": percentile(&grpc, 0.5),
            "memory_search_grpc_p99_ms": percentile(&grpc, 0.99),
        });
        match std::env::var_os("AGENTD_BENCH_OUT") {
            Some(path) => std::fs::write(path, out.to_string()).unwrap(),
            None => println!("{out}"),
        }
        server.stop();
    });
}
