//! `/metrics` of the real binary: scraped after traffic, the counters,
//! histograms and gauges move with what was done.

use std::path::Path;

use agentd::pb::v1 as pb;
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;

use crate::common::binary::{Binary, ConfigFile};
use crate::common::points::{points_from, search, vectors};

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the sample whose line starts with `series` (name and
/// labels as rendered), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn start(dir: &Path, metrics: &str) -> (Binary, tonic::transport::Channel) {
    let config = ConfigFile::new().hash_embeddings().write(dir);
    Binary::start_with(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--metrics-listen",
            metrics,
        ],
    )
    .await
}

#[tokio::test]
async fn metrics_follow_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let (_server, channel) = start(dir.path(), &addr).await;
    let url = format!("http://{addr}/metrics");

    let mut memory = MemoryServiceClient::new(channel.clone());
    memory
        .create_collection(pb::CreateCollectionRequest {
            name: "docs".into(),
            dimensions: 8,
            metric: pb::Metric::L2 as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let v = vectors(50, 8, 11);
    memory
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: points_from(0, &v),
        })
        .await
        .unwrap();
    let nearest = |i: usize| search("docs", &v[i], 3);
    memory.search(nearest(0)).await.unwrap();
    let missing = memory
        .get_collection(pb::GetCollectionRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut embedding = EmbeddingServiceClient::new(channel.clone());
    for _ in 0..2 {
        embedding
            .embed(pb::EmbedRequest {
                inputs: vec!["the same text".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let first = scrape(&url).await;
    let search_ok =
        r#"agentd_rpc_requests_total{method="/agentd.v1.MemoryService/Search",code="OK"}"#;
    assert_eq!(sample(&first, search_ok), Some(1.0), "{first}");
    let not_found = r#"agentd_rpc_requests_total{method="/agentd.v1.MemoryService/GetCollection",code="NOT_FOUND"}"#;
    assert_eq!(sample(&first, not_found), Some(1.0));
    assert!(
        first.contains("# TYPE agentd_rpc_duration_seconds histogram"),
        "{first}"
    );
    let search_buckets =
        r#"agentd_rpc_duration_seconds_count{method="/agentd.v1.MemoryService/Search"}"#;
    assert_eq!(sample(&first, search_buckets), Some(1.0));
    assert_eq!(
        sample(
            &first,
            r#"agentd_memory_search_seconds_count{collection="docs"}"#
        ),
        Some(1.0)
    );
    let points = |text: &str, segment: &str| {
        sample(
            text,
            &format!(r#"agentd_memory_points{{collection="docs",segment="{segment}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        points(&first, "graph") + points(&first, "fresh"),
        50.0,
        "{first}"
    );
    assert!(sample(&first, r#"agentd_memory_index_bytes{collection="docs"}"#).unwrap() > 0.0);
    // Two Embed calls of the same text: one forward pass, one cache hit.
    assert_eq!(
        sample(
            &first,
            r#"agentd_embedding_cache_lookups_total{model="hash",result="hit"}"#
        ),
        Some(1.0),
        "{first}"
    );
    assert!(
        sample(
            &first,
            r#"agentd_embedding_batch_inputs_count{model="hash"}"#
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(&first, r#"agentd_query_sessions{state="running"}"#),
        Some(0.0)
    );
    assert!(sample(&first, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(
        first.contains("# HELP agentd_rpc_requests_total"),
        "help texts"
    );

    // The counters move with more traffic.
    memory.search(nearest(1)).await.unwrap();
    memory.search(nearest(2)).await.unwrap();
    let second = scrape(&url).await;
    assert_eq!(sample(&second, search_ok), Some(3.0));

    // Probes for orchestrators whose gRPC probes speak no TLS.
    for probe in ["healthz", "readyz"] {
        let answer = reqwest::get(format!("http://{addr}/{probe}"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{probe}");
    }
    // Only those, only GET.
    assert_eq!(
        reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .status(),
        404
    );
    let post = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn a_taken_metrics_port_fails_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let config = ConfigFile::new().hash_embeddings().write(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &addr,
        ])
        .args(["--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics address") && stderr.contains("off"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_default_metrics_port_taken_only_turns_metrics_off() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // As if it were the default address (nobody asked for it).
    let (mut config, dir) = crate::common::test_config();
    config.metrics_listen = Some(addr);
    config.metrics_listen_explicit = false;
    let server = crate::common::TestServer::start_with(config, dir, |s| s).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // Asked for explicitly, the same address fails the start.
    let (mut config, _dir) = crate::common::test_config();
    config.metrics_listen = Some(addr);
    config.metrics_listen_explicit = true;
    let err = agentd::server::Server::new(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("metrics address"), "{err:#}");
}
