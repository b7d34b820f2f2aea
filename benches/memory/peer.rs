//! agentd's side of the comparison with Chroma (`AGENTD_BENCH_ONLY=peer`;
//! `scripts/bench-memory` runs it, then Chroma's side,
//! `scripts/python/bench_chroma_peer.py`, on the files this writes, and
//! prints the table).
//!
//! Clustered vectors, cosine, k = 10, each side's default HNSW. Writes
//! `data.f32`, `queries.f32` and the exact answers `truth.i64` (raw
//! little-endian) and `agentd.json` to `AGENTD_BENCH_OUT` (a temporary
//! directory if unset). Steps, the same on both sides: create the
//! collection and use it once (it exists and is loaded); add the points in
//! Upserts of 1,000 from one client (the acknowledged ingest rate); search
//! right after the last one (time from the first write to the first
//! answer); every query once from one client (p50/p99, recall@10); the same
//! queries from 16 concurrent clients. agentd's result cache is off, as
//! Chroma has none, so every search reaches the index.

use std::io::Write;
use std::time::{Duration, Instant};

use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use faiss::{Index, MetricType, index_factory};

use super::binary::{Binary, ConfigFile};
use super::{
    BATCH, DIMS, K, Run, clients, dataset, one_by_one, percentile, recall, settled, stats,
    vector_points, vector_search,
};

pub async fn peer_run(run: &Run) {
    let data = dataset("clustered", run.n, 1);
    let queries = dataset("clustered", run.queries * 4, 2);
    let truth = exact_cosine(&data, &queries);
    let scratch = tempfile::tempdir().unwrap();
    let out = std::env::var_os("AGENTD_BENCH_OUT")
        .map_or_else(|| scratch.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&out).unwrap();
    write_raw(&out.join("data.f32"), data.iter().map(|x| x.to_le_bytes()));
    write_raw(
        &out.join("queries.f32"),
        queries.iter().map(|x| x.to_le_bytes()),
    );
    write_raw(
        &out.join("truth.i64"),
        truth.iter().flatten().map(|x| x.to_le_bytes()),
    );

    let dir = tempfile::tempdir().unwrap();
    let config = ConfigFile::new()
        .raw("[memory]\nsearch_cache_bytes = 0")
        .write(dir.path());
    let (server, channel) = Binary::start_with(
        &dir.path().join("data"),
        &[
            "--disable",
            "embedding,query,agents",
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await;
    let mut c = MemoryServiceClient::new(channel.clone());
    c.create_collection(CreateCollectionRequest {
        name: "peer".into(),
        dimensions: DIMS as u32,
        metric: Metric::Cosine as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    stats(&mut c, "peer").await;

    let started = Instant::now();
    for (b, chunk) in data.chunks(BATCH * DIMS).enumerate() {
        c.upsert(UpsertRequest {
            collection: "peer".into(),
            points: vector_points(chunk, "", b * BATCH),
        })
        .await
        .unwrap();
    }
    let ingest = started.elapsed().as_secs_f64();
    c.search(vector_search("peer", &queries[..DIMS], None))
        .await
        .unwrap();
    let first_answer = started.elapsed().as_secs_f64();
    settled(&mut c, "peer").await;
    let built = started.elapsed().as_secs_f64();

    let (times, got) = one_by_one(&mut c, "peer", &queries, None, None).await;
    let qps_1 = times.len() as f64 / times.iter().sum::<Duration>().as_secs_f64();
    let (qps_16, mut times_16) = concurrent(server.addr, &queries).await;
    times_16.sort();
    let s = stats(&mut c, "peer").await;
    assert_eq!(s.points_count, run.n as u64);
    let rss_mb = server.rss_bytes() as f64 / 1e6;
    server.stop();

    let json = serde_json::json!({
        "points": run.n,
        "queries": queries.len() / DIMS,
        "ingest_points_per_s": run.n as f64 / ingest,
        "first_answer_s": first_answer,
        "built_s": built,
        "p50_ms": percentile(&times, 0.5),
        "p99_ms": percentile(&times, 0.99),
        "qps_1": qps_1,
        "recall": recall(&truth, &got),
        "qps_16": qps_16,
        "p50_16_ms": percentile(&times_16, 0.5),
        "p99_16_ms": percentile(&times_16, 0.99),
        "rss_mb": rss_mb,
    });
    std::fs::write(out.join("agentd.json"), json.to_string()).unwrap();
    println!("\n### agentd's side of the Chroma comparison\n\n{json:#}");
}

/// Every query once, split over 16 clients with their own connections:
/// searches per second and every search's latency.
async fn concurrent(addr: std::net::SocketAddr, queries: &[f32]) -> (f64, Vec<Duration>) {
    let clients = clients(addr, 16).await;
    let per = (queries.len() / DIMS).div_ceil(16);
    let started = Instant::now();
    let times: Vec<Duration> =
        futures::future::join_all(clients.into_iter().zip(queries.chunks(per * DIMS)).map(
            |(mut c, mine)| async move {
                let mut times = Vec::new();
                for q in mine.chunks(DIMS) {
                    let t = Instant::now();
                    c.search(vector_search("peer", q, None)).await.unwrap();
                    times.push(t.elapsed());
                }
                times
            },
        ))
        .await
        .into_iter()
        .flatten()
        .collect();
    (times.len() as f64 / started.elapsed().as_secs_f64(), times)
}

/// The exact `K` nearest by cosine similarity, as point indexes.
fn exact_cosine(data: &[f32], queries: &[f32]) -> Vec<Vec<i64>> {
    let normalized = |v: &[f32]| -> Vec<f32> {
        v.chunks(DIMS)
            .flat_map(|x| {
                let norm = x.iter().map(|a| a * a).sum::<f32>().sqrt();
                x.iter().map(move |a| a / norm)
            })
            .collect()
    };
    let mut flat = index_factory(DIMS as u32, "Flat", MetricType::InnerProduct).unwrap();
    flat.add(&normalized(data)).unwrap();
    let found = flat.search(&normalized(queries), K).unwrap();
    found
        .labels
        .chunks(K)
        .map(|c| c.iter().map(|l| l.get().unwrap() as i64).collect())
        .collect()
}

fn write_raw<const N: usize>(path: &std::path::Path, values: impl Iterator<Item = [u8; N]>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for v in values {
        f.write_all(&v).unwrap();
    }
    f.flush().unwrap();
}
