//! EmbeddingService through the gRPC API, with the real all-MiniLM-L6-v2.

use std::time::Duration;

use crate::common::{TestServer, minilm_config};
use agentd::embed::BertBackend;
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::*;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn request(inputs: &[&str]) -> EmbedRequest {
    EmbedRequest {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Starts a server with MiniLM and waits until health says it is loaded.
async fn minilm_server() -> (TestServer, EmbeddingServiceClient<Channel>) {
    let (config, dir) = minilm_config();
    minilm_server_with(config, dir).await
}

async fn minilm_server_with(
    config: agentd::config::Config,
    dir: tempfile::TempDir,
) -> (TestServer, EmbeddingServiceClient<Channel>) {
    let server = TestServer::start_with(config, dir, |s| s).await;
    let channel = server.channel().await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "agentd.v1.EmbeddingService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(update) = watch.message().await.unwrap() {
            if update.status == ServingStatus::Serving as i32 {
                return;
            }
        }
    })
    .await
    .expect("MiniLM loads within 60 s");
    (server, EmbeddingServiceClient::new(channel))
}

#[tokio::test]
async fn minilm_is_listed_ready_and_embeds_by_meaning() {
    let (server, mut client) = minilm_server().await;
    let models = client
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models[0].id, "all-MiniLM-L6-v2");
    assert!(models[0].is_default);
    assert_eq!(models[0].state, ModelState::Ready as i32);
    assert_eq!(models[0].dimensions, 384);
    assert_eq!(models[0].max_input_tokens, 256);
    assert_eq!(models[0].kind, EmbeddingModelKind::Bert as i32);

    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ];
    let answer = client.embed(request(&texts)).await.unwrap().into_inner();
    assert_eq!(answer.model, "all-MiniLM-L6-v2");
    let v: Vec<&[f32]> = answer
        .embeddings
        .iter()
        .map(|e| e.values.as_slice())
        .collect();
    for e in &answer.embeddings {
        assert_eq!(e.values.len(), 384);
        let norm: f32 = e.values.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised by default: {norm}");
    }
    let near = cosine(v[0], v[1]);
    let far = cosine(v[0], v[2]);
    assert!(near > 0.6, "paraphrases: {near}");
    assert!(far < 0.3, "unrelated: {far}");
    // [CLS] a man is eating food . [SEP]
    assert_eq!(answer.embeddings[0].tokens, 8);
    assert_eq!(
        answer.usage.unwrap().input_tokens,
        answer
            .embeddings
            .iter()
            .map(|e| u64::from(e.tokens))
            .sum::<u64>()
    );
    assert!(answer.timing.unwrap().total.is_some());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_gives_the_same_vectors_as_one_by_one() {
    let (server, mut client) = minilm_server().await;
    let texts = [
        "short",
        "a somewhat longer sentence about vector databases and recall",
        "fn main() { println!(\"hello\"); }",
        "naïve café — 東京で寿司を食べる",
        "x",
        "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up.",
    ];
    let batch = client
        .embed(request(&texts))
        .await
        .unwrap()
        .into_inner()
        .embeddings;
    for (i, text) in texts.iter().enumerate() {
        let single = client
            .embed(request(&[text]))
            .await
            .unwrap()
            .into_inner()
            .embeddings;
        let c = cosine(&batch[i].values, &single[0].values);
        assert!(c > 0.99999, "{text:?}: cosine {c}");
        assert_eq!(batch[i].tokens, single[0].tokens);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn long_inputs_truncate_at_256_tokens_or_are_refused() {
    let (server, mut client) = minilm_server().await;
    let long = "word ".repeat(400);
    let answer = client.embed(request(&[&long])).await.unwrap().into_inner();
    assert!(answer.embeddings[0].truncated);
    assert_eq!(answer.embeddings[0].tokens, 256);

    let err = client
        .embed(EmbedRequest {
            truncate: Some(false),
            ..request(&["fine", &long])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let bad = err.get_error_details().bad_request().cloned().unwrap();
    assert_eq!(bad.field_violations[0].field, "inputs[1]");
    assert!(
        bad.field_violations[0].description.contains("402 tokens"),
        "{:?}",
        bad
    );
    assert!(
        bad.field_violations[0].description.contains("limit of 256"),
        "{:?}",
        bad
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tokenize_matches_the_bert_vocabulary() {
    let (server, mut client) = minilm_server().await;
    let answer = client
        .tokenize(TokenizeRequest {
            inputs: vec!["Hello world".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let tokens = &answer.results[0].tokens;
    let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids, [101, 7592, 2088, 102]);
    let texts: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["[CLS]", "hello", "world", "[SEP]"]);
    assert!(tokens[0].special && !tokens[1].special);
    assert_eq!((tokens[2].start, tokens[2].end), (6, 11));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let (server, mut client) = minilm_server().await;
    let err = client.embed(request(&[])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let bad = err.get_error_details().bad_request().cloned().unwrap();
    assert_eq!(bad.field_violations[0].field, "inputs");
    assert!(bad.field_violations[0].description.contains("1 to 256"));

    let err = client.embed(request(&["ok", ""])).await.unwrap_err();
    let bad = err.get_error_details().bad_request().cloned().unwrap();
    assert_eq!(bad.field_violations[0].field, "inputs[1]");

    let err = client
        .embed(EmbedRequest {
            model: "no-such-model".into(),
            ..request(&["a"])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("no-such-model"));

    let err = client
        .embed(EmbedRequest {
            dimensions: Some(128),
            ..request(&["a"])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("dimensions"), "{}", err.message());

    let err = client
        .get_model(GetModelRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn embed_stream_answers_every_request_and_reports_failures_in_band() {
    let (server, mut client) = minilm_server().await;
    let mut requests: Vec<EmbedStreamRequest> = (0..20)
        .map(|i| EmbedStreamRequest {
            request_id: format!("r{i}"),
            request: Some(request(&[&format!("text number {i}")])),
        })
        .collect();
    requests.push(EmbedStreamRequest {
        request_id: "bad".into(),
        request: Some(request(&[])),
    });
    let mut responses = client
        .embed_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = std::collections::HashMap::new();
    while let Some(item) = responses.next().await {
        let item = item.unwrap();
        seen.insert(item.request_id.clone(), item.result.unwrap());
    }
    assert_eq!(seen.len(), 21);
    for i in 0..20 {
        match &seen[&format!("r{i}")] {
            embed_stream_response::Result::Response(r) => {
                assert_eq!(r.embeddings[0].values.len(), 384)
            }
            other => panic!("r{i}: {other:?}"),
        }
    }
    match &seen["bad"] {
        embed_stream_response::Result::Error(e) => {
            assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
            assert_eq!(e.reason, "INVALID_FIELD");
            assert_eq!(e.field_violations[0].field, "inputs");
        }
        other => panic!("bad: {other:?}"),
    }
    server.stop().await.unwrap();
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<ReferenceCase>,
}

#[derive(serde::Deserialize)]
struct ReferenceCase {
    text: String,
    vector: Vec<f32>,
}

/// tests/fixtures/minilm_reference.json holds vectors computed by
/// sentence-transformers (scripts/python/make_embedding_fixture.py).
#[tokio::test]
async fn vectors_match_sentence_transformers() {
    let (config, dir) = minilm_config();
    assert_eq!(
        config.embedding.models[0].backend,
        BertBackend::Blas,
        "the default backend"
    );
    matches_reference(config, dir).await;
}

/// The candle backend, kept as the reference implementation, matches too.
#[tokio::test]
async fn candle_backend_vectors_match_sentence_transformers() {
    let (mut config, dir) = minilm_config();
    config.embedding.models[0].backend = BertBackend::Candle;
    matches_reference(config, dir).await;
}

async fn matches_reference(mut config: agentd::config::Config, dir: tempfile::TempDir) {
    // Every request below runs the model.
    config.embedding.tuning.cache_bytes = 0;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_reference.json"
    );
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(reference.cases.len() >= 20);
    let (server, mut client) = minilm_server_with(config, dir).await;
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    let answer = client.embed(request(&texts)).await.unwrap().into_inner();
    let mut worst = 1.0f32;
    for (case, got) in reference.cases.iter().zip(&answer.embeddings) {
        let c = cosine(&case.vector, &got.values);
        worst = worst.min(c);
        assert!(
            c >= 0.9999,
            "{:?}: cosine {c} with sentence-transformers",
            case.text
        );
    }
    assert!(
        answer.embeddings.iter().any(|e| e.truncated),
        "the fixture has inputs over 256 tokens"
    );
    // One at a time too: a pass of few tokens takes the f16-weight path of
    // the default backend, the whole batch above its f32 one.
    let mut worst_alone = 1.0f32;
    for case in &reference.cases {
        let got = client
            .embed(request(&[case.text.as_str()]))
            .await
            .unwrap()
            .into_inner();
        assert!(!got.embeddings[0].cached, "the cache is off");
        let c = cosine(&case.vector, &got.embeddings[0].values);
        worst_alone = worst_alone.min(c);
        assert!(c >= 0.9999, "{:?} alone: cosine {c}", case.text);
    }
    eprintln!("worst cosine vs sentence-transformers: {worst} in one batch, {worst_alone} alone");
    server.stop().await.unwrap();
}

/// 64 clients at once get the vectors they get alone, although the batcher
/// packs them into shared forward passes. The cache is off so that every
/// request really runs the model.
#[tokio::test]
async fn concurrent_requests_get_the_same_vectors_as_sequential_ones() {
    let (mut config, dir) = minilm_config();
    config.embedding.tuning.cache_bytes = 0;
    let (server, client) = minilm_server_with(config, dir).await;
    let texts: Vec<String> = (0..64)
        .map(|i| format!("request {i}: {}", "some words ".repeat(i % 9 + 1)))
        .collect();
    let mut sequential = Vec::new();
    for t in &texts {
        let answer = client
            .clone()
            .embed(request(&[t]))
            .await
            .unwrap()
            .into_inner();
        sequential.push(answer.embeddings[0].values.clone());
    }
    let tasks: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let mut client = client.clone();
            tokio::spawn(async move { client.embed(request(&[&t])).await.unwrap().into_inner() })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        assert!(!answer.embeddings[0].cached);
        let c = cosine(&answer.embeddings[0].values, &sequential[i]);
        assert!(
            c > 0.99999,
            "request {i}: cosine {c} between concurrent and sequential"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_texts_are_served_from_the_cache() {
    let (server, mut client) = minilm_server().await;
    let first = client
        .embed(request(&["cache me", "and me"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.cache_hits, 0);
    let second = client
        .embed(request(&["and me", "not me"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.cache_hits, 1);
    assert!(second.embeddings[0].cached && !second.embeddings[1].cached);
    assert_eq!(second.embeddings[0].values, first.embeddings[1].values);
    assert_eq!(second.embeddings[0].tokens, first.embeddings[1].tokens);
    let models = client
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!((models[0].cache_hits, models[0].cache_misses), (1, 3));
    server.stop().await.unwrap();
}

/// Past `max_concurrent_requests`, requests are refused at once with
/// RESOURCE_EXHAUSTED (reason OVERLOADED) instead of queueing without bound.
#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused() {
    let (mut config, dir) = minilm_config();
    config.embedding.limits.max_concurrent_requests = 1;
    config.embedding.tuning.cache_bytes = 0;
    let (server, client) = minilm_server_with(config, dir).await;
    let batch: Vec<String> = (0..64)
        .map(|i| format!("a longer text to keep the model busy {i}"))
        .collect();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let mut client = client.clone();
            let batch = batch.clone();
            tokio::spawn(async move {
                client
                    .embed(EmbedRequest {
                        inputs: batch,
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                let info = status.get_error_details().error_info().cloned().unwrap();
                assert_eq!(info.reason, "OVERLOADED");
                refused += 1;
            }
        }
    }
    assert!(served >= 1, "the first request is served");
    assert!(
        refused >= 1,
        "16 simultaneous requests with a limit of 1: none refused"
    );
    server.stop().await.unwrap();
}

/// EmbedStream backpressure: a client that writes but does not read is
/// slowed down. The server reads ahead only a few requests, the unread
/// answers fill the HTTP/2 windows, and then it stops pulling requests, so
/// its memory stays bounded whatever the client sends.
#[tokio::test]
async fn embed_stream_stops_reading_when_the_client_stops_reading() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let server = TestServer::start().await; // hash model: fast, no load time
    let mut client = EmbeddingServiceClient::new(server.channel().await);
    const OFFERED: usize = 200_000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let requests = futures::stream::iter(0..OFFERED).map(move |i| {
        counter.fetch_add(1, Ordering::Relaxed);
        EmbedStreamRequest {
            request_id: i.to_string(),
            request: Some(request(&["backpressure"])),
        }
    });
    let mut responses = client.embed_stream(requests).await.unwrap().into_inner();

    // Read nothing: the number of requests taken from the client must level
    // off (two samples 500 ms apart agree) far below what it offers.
    let mut later = pulled.load(Ordering::Relaxed);
    let mut stalled_at;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        stalled_at = later;
        tokio::time::sleep(Duration::from_millis(500)).await;
        later = pulled.load(Ordering::Relaxed);
        if later == stalled_at && later > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "requests kept being pulled for 20 s without reads: {later}"
        );
    }
    assert!(
        stalled_at < OFFERED / 2,
        "the server kept reading: {stalled_at} requests pulled"
    );

    // Reading again resumes the flow: answers keep coming (each one was
    // asked for), and the server pulls more requests once its buffered ones
    // are answered.
    let mut answered = 0;
    while let Some(item) = responses.next().await {
        let item = item.unwrap();
        assert!(item.result.is_some());
        answered += 1;
        if pulled.load(Ordering::Relaxed) > later {
            break;
        }
        assert!(
            answered <= later,
            "answered all {later} pulled requests without pulling more"
        );
    }
    assert!(
        pulled.load(Ordering::Relaxed) > later,
        "reading resumed the flow"
    );
    eprintln!("stalled at {stalled_at} of {OFFERED} requests; resumed after {answered} answers");
    server.stop().await.unwrap();
}
