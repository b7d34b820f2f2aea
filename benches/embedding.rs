//! Embedding throughput and latency over gRPC with all-MiniLM-L6-v2.
//!
//! Starts agentd in-process on 127.0.0.1:0 and drives it with the generated
//! Rust client: batches of 1, 8 and 32 short texts from one client, 100
//! concurrent single-text clients, the latency of one short text, and the
//! latency of a cache hit. Prints a table and writes JSON to the path in
//! `$AGENTD_BENCH_OUT` (if set) for `scripts/bench-embedding`, which runs
//! sentence-transformers on the same texts in the same session and reports
//! the ratios.
//!
//! `cargo bench --bench embedding` (needs `scripts/fetch-models`).
//! Under `cargo test` (no `--bench` argument) it runs a few requests only, so
//! CI keeps it compiling and working without spending minutes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentd::config::Config;
use agentd::embed::{DEFAULT_EMBEDDING_TUNING, EmbeddingConfig};
use agentd::embed::{ModelKind, ModelSpec};
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::{EmbedRequest, ListModelsRequest, ModelState};
use tonic::transport::{Channel, Endpoint};

/// The short texts both sides embed: ~10 tokens each, all distinct.
/// scripts/python/bench_embedding_peer.py builds the same list.
fn corpus(n: usize) -> Vec<String> {
    const SUBJECTS: [&str; 8] = [
        "The agent",
        "A user",
        "The server",
        "My cat",
        "The model",
        "Our team",
        "A robot",
        "The index",
    ];
    const VERBS: [&str; 8] = [
        "reads",
        "writes",
        "searches",
        "remembers",
        "forgets",
        "updates",
        "ranks",
        "embeds",
    ];
    const OBJECTS: [&str; 8] = [
        "the notes",
        "a vector",
        "old memories",
        "the logs",
        "a query",
        "new facts",
        "the answer",
        "its tasks",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {} number {i}.",
                SUBJECTS[i % 8],
                VERBS[(i / 8) % 8],
                OBJECTS[(i / 64) % 8]
            )
        })
        .collect()
}

fn model_dir() -> PathBuf {
    std::env::var_os("AGENTD_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/all-MiniLM-L6-v2"
            ))
        })
}

async fn start(
    cache_bytes: u64,
) -> (
    EmbeddingServiceClient<Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut tuning = DEFAULT_EMBEDDING_TUNING;
    tuning.cache_bytes = cache_bytes;
    let config = Config {
        data_dir: dir.keep().join("data"),
        embedding: EmbeddingConfig {
            models: vec![ModelSpec {
                id: "all-MiniLM-L6-v2".into(),
                kind: ModelKind::Bert,
                path: Some(model_dir()),
                dimensions: None,
                backend: Default::default(),
            }],
            default_model: "all-MiniLM-L6-v2".into(),
            tuning,
            ..EmbeddingConfig::default()
        },
        metrics_listen: None,
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(agentd::server::run(config, listener, async {
        let _ = rx.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EmbeddingServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let models = client
            .list_models(ListModelsRequest {})
            .await
            .unwrap()
            .into_inner()
            .models;
        if models[0].state == ModelState::Ready as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "model did not load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (client, tx)
}

async fn embed(client: &mut EmbeddingServiceClient<Channel>, texts: &[String]) {
    let answer = client
        .embed(EmbedRequest {
            inputs: texts.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.embeddings.len(), texts.len());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[derive(serde::Serialize)]
struct Results {
    texts_per_s_batch_1: f64,
    texts_per_s_batch_8: f64,
    texts_per_s_batch_32: f64,
    texts_per_s_100_clients: f64,
    one_text_p50_ms: f64,
    one_text_p99_ms: f64,
    cache_hit_p50_ms: f64,
    cache_hit_p99_ms: f64,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 64 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let texts = corpus(4096);
        let (mut client, stop) = start(0).await;
        // Warm-up: first passes allocate and fault in the weights.
        embed(&mut client, &texts[..32]).await;

        let mut throughput = Vec::new();
        for batch in [1usize, 8, 32] {
            let total = (if batch == 1 { 512 } else { 2048 }) / scale;
            let started = Instant::now();
            for chunk in texts[..total.max(batch)].chunks(batch) {
                embed(&mut client, chunk).await;
            }
            throughput.push(total.max(batch) as f64 / started.elapsed().as_secs_f64());
        }

        let clients = 100;
        let per_client = 20 / scale.min(20);
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let mut client = client.clone();
                let mine: Vec<String> = texts[c * per_client..(c + 1) * per_client].to_vec();
                tokio::spawn(async move {
                    for t in mine {
                        embed(&mut client, std::slice::from_ref(&t)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let concurrent = (clients * per_client) as f64 / started.elapsed().as_secs_f64();

        let mut single = Vec::new();
        for t in texts[2048..2048 + 300 / scale].iter() {
            let started = Instant::now();
            embed(&mut client, std::slice::from_ref(t)).await;
            single.push(started.elapsed());
        }
        single.sort();
        let _ = stop.send(());

        let (mut cached_client, stop) = start(DEFAULT_EMBEDDING_TUNING.cache_bytes).await;
        let text = vec![texts[0].clone()];
        embed(&mut cached_client, &text).await;
        let mut hits = Vec::new();
        for _ in 0..2000 / scale {
            let started = Instant::now();
            embed(&mut cached_client, &text).await;
            hits.push(started.elapsed());
        }
        hits.sort();
        let _ = stop.send(());

        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Results {
            texts_per_s_batch_1: throughput[0],
            texts_per_s_batch_8: throughput[1],
            texts_per_s_batch_32: throughput[2],
            texts_per_s_100_clients: concurrent,
            one_text_p50_ms: ms(percentile(&single, 0.5)),
            one_text_p99_ms: ms(percentile(&single, 0.99)),
            cache_hit_p50_ms: ms(percentile(&hits, 0.5)),
            cache_hit_p99_ms: ms(percentile(&hits, 0.99)),
        }
    });
    println!(
        "agentd embedding over gRPC ({})",
        if full { "full run" } else { "smoke run" }
    );
    println!(
        "  batch 1:          {:8.1} texts/s",
        results.texts_per_s_batch_1
    );
    println!(
        "  batch 8:          {:8.1} texts/s",
        results.texts_per_s_batch_8
    );
    println!(
        "  batch 32:         {:8.1} texts/s",
        results.texts_per_s_batch_32
    );
    println!(
        "  100 clients x 1:  {:8.1} texts/s",
        results.texts_per_s_100_clients
    );
    println!(
        "  one text:         p50 {:.2} ms, p99 {:.2} ms",
        results.one_text_p50_ms, results.one_text_p99_ms
    );
    println!(
        "  cache hit:        p50 {:.3} ms, p99 {:.3} ms",
        results.cache_hit_p50_ms, results.cache_hit_p99_ms
    );
    if let Some(path) = std::env::var_os("AGENTD_BENCH_OUT") {
        std::fs::write(path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    }
}
