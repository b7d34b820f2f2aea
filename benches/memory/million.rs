//! A million points on this machine (`AGENTD_BENCH_ONLY=million`; the size
//! follows `AGENTD_BENCH_POINTS` when set, 1,000,000 otherwise).
//!
//! One collection of clustered 384-dimensional vectors, SQ8, the default
//! HNSW (M 16): the durable upload (UpsertStream), the first answer after
//! it (the first call loads the collection: every point in the fresh
//! segment, searched exactly, while the graph builds on every core), the
//! build until settled with the server's peak RSS sampled meanwhile, the
//! RSS holding the built index against agentd's own estimate (the one
//! `[memory] max_index_bytes` is checked against), Search p50/p99 and
//! recall@10 against exact search (also at wider efSearch), then a
//! restart: the time until the collection answers again from its
//! snapshot, and the RSS after it.

use std::time::{Duration, Instant};

use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use faiss::{Index, MetricType, index_factory};

use super::binary::Binary;
use super::{
    DIMS, K, Run, dataset, one_by_one, percentile, recall, settled, stats, upload, vector_search,
};

/// server/memory/index_memory.rs's estimate for 384 dimensions, SQ8, M 16:
/// the code (384), links (8·16 + ⌈64/15⌉ + 12), the id map's label (8) and
/// the id table (24 + 26).
const SQ8_M16_BYTES_PER_POINT: u64 = 384 + 145 + 8 + 50;

/// Wider searches than the default efSearch (100), for recall at this size.
const EF_SWEEP: [u32; 3] = [200, 400, 800];

pub async fn million_run(run: &Run) {
    let n = if run.n == 100_000 { 1_000_000 } else { run.n };
    let started = Instant::now();
    let data = dataset("clustered", n, 1);
    let queries = dataset("clustered", run.queries.min(200), 2);
    let generated = started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (server, channel) = Binary::start(&data_dir).await;
    let mut c = MemoryServiceClient::new(channel);
    c.create_collection(CreateCollectionRequest {
        name: "million".into(),
        dimensions: DIMS as u32,
        metric: Metric::L2 as i32,
        quantization: Some(Quantization {
            r#type: QuantizationType::Sq8 as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let upsert_rate = upload(&mut c, "million", &data).await;
    let baseline = server.rss_bytes();

    let started = Instant::now();
    stats(&mut c, "million").await;
    let first_answer = started.elapsed().as_secs_f64();
    // Sample the RSS while the graph builds.
    let mut peak = server.rss_bytes();
    loop {
        let s = stats(&mut c, "million").await;
        peak = peak.max(server.rss_bytes());
        if !s.rebuilding && s.fresh_points == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let built = started.elapsed().as_secs_f64();
    settled(&mut c, "million").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = server.rss_bytes();
    let s = stats(&mut c, "million").await;
    assert_eq!(s.points_count, n as u64);

    let (times, got) = one_by_one(&mut c, "million", &queries, Some(true), None).await;
    let (plain_times, plain_got) = one_by_one(&mut c, "million", &queries, None, None).await;
    // How wide a search the graph needs at this size.
    let mut wider = Vec::new();
    for ef in EF_SWEEP {
        wider.push((
            ef,
            one_by_one(&mut c, "million", &queries, None, Some(ef)).await,
        ));
    }
    server.stop();

    // Restart: the snapshot written after the build (and at shutdown).
    let restarted = Instant::now();
    let (server, channel) = Binary::start(&data_dir).await;
    let mut c = MemoryServiceClient::new(channel);
    c.search(vector_search("million", &queries[..DIMS], None))
        .await
        .unwrap();
    let restart = restarted.elapsed().as_secs_f64();
    let s_after = stats(&mut c, "million").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_restart = server.rss_bytes();
    server.stop();

    // Ground truth last: a flat index of a million vectors is 1.5 GB.
    let truth = {
        let mut flat = index_factory(DIMS as u32, "Flat", MetricType::L2).unwrap();
        flat.add(&data).unwrap();
        let found = flat.search(&queries, K).unwrap();
        found
            .labels
            .chunks(K)
            .map(|c| {
                c.iter()
                    .map(|l| l.get().unwrap() as i64)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "\n### {n} x {DIMS} clustered, SQ8, default HNSW (M 16, efConstruction 100, efSearch 100)\n"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| vectors generated in the bench (s) | {generated:.1} |");
    println!("| durable upload, UpsertStream 1,000 a message (points/s) | {upsert_rate:.0} |");
    println!("| first answer after the upload (s) | {first_answer:.2} |");
    println!("| graph built, from the first call (s) | {built:.1} |");
    println!(
        "| server RSS: after the upload / peak while building / built (MB) | {:.0} / {:.0} / {:.0} |",
        mb(baseline),
        mb(peak),
        mb(held)
    );
    println!(
        "| CollectionStats index_memory_bytes / the estimate max_index_bytes is checked against (MB) | {:.0} / {:.0} |",
        mb(s.index_memory_bytes),
        mb(SQ8_M16_BYTES_PER_POINT * n as u64)
    );
    println!(
        "| Search p50 / p99, one client, efSearch 100, rescored / not (the default) (ms) | {:.3} / {:.3}; {:.3} / {:.3} |",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&plain_times, 0.5),
        percentile(&plain_times, 0.99)
    );
    println!(
        "| recall@10, rescored (4 candidates a result) / not | {:.3} / {:.3} |",
        recall(&truth, &got),
        recall(&truth, &plain_got)
    );
    for (ef, (times, got)) in &wider {
        println!(
            "| efSearch {ef}, not rescored: recall@10; p50 / p99 (ms) | {:.3}; {:.3} / {:.3} |",
            recall(&truth, got),
            percentile(times, 0.5),
            percentile(times, 0.99)
        );
    }
    println!("| restart until the first Search answers (s) | {restart:.2} |");
    println!(
        "| server RSS after the restart (MB); points indexed / fresh | {:.0}; {} / {} |",
        mb(after_restart),
        s_after.indexed_points,
        s_after.fresh_points
    );
}
