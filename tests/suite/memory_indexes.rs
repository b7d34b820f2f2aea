//! Collection indexes through the gRPC API: recall of HNSW and HNSW+SQ8
//! against exact search, rescoring of quantized searches, quantized and IVF collections that train once they
//! have enough points, CollectionStats (tombstones, background compaction,
//! cache hits), the search cache never serving stale results, restart from
//! snapshots, periodic snapshots, near-duplicate merging, and UpsertStream.

use std::time::{Duration, Instant};

use crate::common::points::{
    create_collection, delete_ids, exact, ids, overlap, point, points_from, search, settled, stats,
    vectors,
};
use crate::common::{TestServer, test_config, violated_fields};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;

const DIMS: usize = 32;

async fn create(
    c: &mut MemoryServiceClient<Channel>,
    name: &str,
    kind: index_spec::Kind,
    quantization: QuantizationType,
) {
    create_collection(c, name, DIMS, kind, quantization).await;
}

/// HNSW M 16, efConstruction 100, efSearch 64.
fn hnsw16() -> index_spec::Kind {
    index_spec::Kind::Hnsw(HnswIndex {
        m: 16,
        ef_construction: 100,
        ef_search: 64,
    })
}

async fn upsert_all(c: &mut MemoryServiceClient<Channel>, name: &str, points: &[Vec<f32>]) {
    for (n, chunk) in points.chunks(1000).enumerate() {
        c.upsert(UpsertRequest {
            collection: name.into(),
            points: points_from(n * 1000, chunk),
        })
        .await
        .unwrap();
    }
}

async fn recall(
    c: &mut MemoryServiceClient<Channel>,
    name: &str,
    points: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> f64 {
    let mut total = 0.0;
    for q in queries {
        let got = ids(c.search(search(name, q, 10)).await.unwrap().into_inner());
        total += overlap(&exact(points, q, 10), &got);
    }
    total / queries.len() as f64
}

#[tokio::test]
async fn hnsw_and_hnsw_sq8_recall_against_exact_search() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let points = vectors(4000, DIMS, 11);
    let queries = vectors(60, DIMS, 12);
    let hnsw = hnsw16();
    create(&mut c, "hnsw", hnsw, QuantizationType::None).await;
    create(&mut c, "sq8", hnsw, QuantizationType::Sq8).await;
    upsert_all(&mut c, "hnsw", &points).await;
    upsert_all(&mut c, "sq8", &points).await;
    let plain = recall(&mut c, "hnsw", &points, &queries).await;
    let sq8 = recall(&mut c, "sq8", &points, &queries).await;
    eprintln!("recall@10 on 4000x{DIMS}: HNSW {plain:.3}, HNSW+SQ8 {sq8:.3}");
    assert!(plain >= 0.95, "HNSW recall@10 {plain}");
    assert!(sq8 >= 0.90, "HNSW+SQ8 recall@10 {sq8}");
    // SQ8 codes are a byte per dimension instead of four; the graph is the
    // same.
    settled(&mut c, "hnsw").await;
    settled(&mut c, "sq8").await;
    let (a, b) = (stats(&mut c, "hnsw").await, stats(&mut c, "sq8").await);
    assert_eq!(
        a.index_memory_bytes - b.index_memory_bytes,
        4000 * DIMS as u64 * 3
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn quantized_and_ivf_collections_are_exact_until_trained_then_approximate() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let ivf = index_spec::Kind::Ivf(IvfIndex {
        nlist: 16,
        nprobe: 8,
    });
    create(&mut c, "ivfpq", ivf, QuantizationType::Pq).await;
    // Too few points to train PQ (8 bits: 39 × 256): searched exactly.
    let few = vectors(300, DIMS, 21);
    upsert_all(&mut c, "ivfpq", &few).await;
    for q in vectors(10, DIMS, 22) {
        let got = ids(c.search(search("ivfpq", &q, 5)).await.unwrap().into_inner());
        assert_eq!(got, exact(&few, &q, 5), "exact while untrained");
    }
    // Enough to train: a background rebuild trains IVF16,PQ8x8.
    let more = vectors(10_000, DIMS, 23);
    let mut all = few.clone();
    all.extend(more.iter().cloned());
    for (n, chunk) in more.chunks(1000).enumerate() {
        c.upsert(UpsertRequest {
            collection: "ivfpq".into(),
            points: points_from(300 + n * 1000, chunk),
        })
        .await
        .unwrap();
    }
    settled(&mut c, "ivfpq").await;
    let s = stats(&mut c, "ivfpq").await;
    assert_eq!(s.points_count, 10_300);
    // PQ8x8 codes: 8 bytes a vector instead of 128, so the whole index
    // (lists, ids, labels) takes less than the float vectors alone.
    assert!(s.index_memory_bytes < 10_300 * 128, "{s:?}");
    let queries = vectors(30, DIMS, 24);
    let r = recall(&mut c, "ivfpq", &all, &queries).await;
    eprintln!("IVF16,PQ8x8 recall@10 (nprobe 8) on 10300x{DIMS}: {r:.3}");
    assert!(r >= 0.3, "trained IVF-PQ recall@10 {r}");
    // nprobe overrides are checked against nlist.
    let mut bad = search("ivfpq", &queries[0], 5);
    bad.nprobe = Some(17);
    let err = c.search(bad).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["nprobe"]);
    let mut wide = search("ivfpq", &queries[0], 10);
    wide.nprobe = Some(16);
    assert_eq!(ids(c.search(wide).await.unwrap().into_inner()).len(), 10);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn quantized_searches_asked_to_rescore_rank_candidates_by_their_stored_vectors() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let hnsw = hnsw16();
    // SQ4: 16 levels a dimension, coarse enough that the codes misorder
    // near neighbours.
    create(&mut c, "sq4", hnsw, QuantizationType::Sq4).await;
    let points = vectors(3000, DIMS, 41);
    upsert_all(&mut c, "sq4", &points).await;
    settled(&mut c, "sq4").await;
    let queries = vectors(40, DIMS, 42);
    let exact_score = |id: &str, q: &[f32]| -> f32 {
        let i: usize = id[1..].parse().unwrap();
        points[i]
            .iter()
            .zip(q)
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let (mut rescored, mut quantized, mut off_scores) = (0.0, 0.0, 0);
    for q in &queries {
        let want = exact(&points, q, 10);
        // Asked to, the candidates are ranked by their full vectors: the
        // scores are the exact squared distances.
        let mut rescoring = search("sq4", q, 10);
        rescoring.rescore = Some(true);
        let r = c.search(rescoring).await.unwrap().into_inner();
        for hit in &r.results {
            let exact = exact_score(&hit.id, q);
            assert!(
                (hit.score - exact).abs() <= 1e-4 * exact.max(1.0),
                "{hit:?} vs {exact}"
            );
        }
        rescored += overlap(&want, &ids(r));
        // By default, the index's own ranking and quantized scores.
        let r = c.search(search("sq4", q, 10)).await.unwrap().into_inner();
        off_scores += r
            .results
            .iter()
            .filter(|hit| (hit.score - exact_score(&hit.id, q)).abs() > 1e-3)
            .count();
        quantized += overlap(&want, &ids(r));
    }
    let (rescored, quantized) = (rescored / 40.0, quantized / 40.0);
    eprintln!("HNSW+SQ4 recall@10 on 3000x{DIMS}: rescored {rescored:.3}, not {quantized:.3}");
    assert!(off_scores > 0, "SQ4 scores are not exact");
    assert!(rescored >= 0.95, "rescored recall@10 {rescored}");
    assert!(rescored > quantized, "rescored {rescored} vs {quantized}");
    // One candidate a result: the index's own ten, ranked exactly.
    for q in &queries[..5] {
        let mut one = search("sq4", q, 10);
        one.rescore = Some(true);
        one.oversampling = Some(1);
        let mut rescored = ids(c.search(one).await.unwrap().into_inner());
        let mut plain = ids(c.search(search("sq4", q, 10)).await.unwrap().into_inner());
        rescored.sort();
        plain.sort();
        assert_eq!(rescored, plain);
    }
    // Oversampling is checked.
    for bad in [0, 17] {
        let mut wide = search("sq4", &queries[0], 10);
        wide.oversampling = Some(bad);
        let err = c.search(wide).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["oversampling"]);
    }
    server.stop().await.unwrap();
}

async fn wait_until(
    c: &mut MemoryServiceClient<Channel>,
    name: &str,
    done: impl Fn(&CollectionStatsResponse) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats(c, name).await;
        if done(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tombstones_are_compacted_in_the_background_and_stats_add_up() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let hnsw = index_spec::Kind::Hnsw(HnswIndex::default());
    create(&mut c, "docs", hnsw, QuantizationType::None).await;
    let points = vectors(1000, DIMS, 31);
    upsert_all(&mut c, "docs", &points).await;
    settled(&mut c, "docs").await;
    let s = stats(&mut c, "docs").await;
    assert_eq!((s.points_count, s.deleted_not_compacted), (1000, 0));
    assert!(s.disk_bytes >= 1000 * DIMS as u64 * 4, "{s:?}");
    assert!(s.index_memory_bytes >= 1000 * DIMS as u64 * 4, "{s:?}");
    assert_eq!(s.last_applied_sequence, 1);
    assert_eq!(s.last_snapshot_sequence, 1, "built indexes are snapshotted");

    // Delete 400: tombstones pass the rebuild threshold.
    let gone: Vec<String> = (0..400).map(|i| format!("p{i}")).collect();
    let deleted = c
        .delete_points(delete_ids("docs", gone.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 400);
    wait_until(&mut c, "docs", |s| {
        !s.rebuilding && s.deleted_not_compacted == 0
    })
    .await;
    let s = stats(&mut c, "docs").await;
    assert_eq!((s.points_count, s.last_applied_sequence), (600, 2));
    assert_eq!(
        s.last_snapshot_sequence, 2,
        "rebuilt indexes are snapshotted"
    );
    let live = &points[400..];
    for q in vectors(20, DIMS, 32) {
        let got = ids(c.search(search("docs", &q, 10)).await.unwrap().into_inner());
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|id| !gone.contains(id)), "{got:?}");
        let truth: Vec<String> = exact(live, &q, 10)
            .into_iter()
            .map(|id| format!("p{}", id[1..].parse::<usize>().unwrap() + 400))
            .collect();
        assert!(overlap(&truth, &got) >= 0.8, "{got:?} vs {truth:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_searches_hit_the_cache_and_writes_invalidate_it() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    create(
        &mut c,
        "docs",
        index_spec::Kind::Flat(FlatIndex {}),
        QuantizationType::None,
    )
    .await;
    let points = vectors(100, DIMS, 41);
    upsert_all(&mut c, "docs", &points).await;
    // Scores computed by faiss and by the fresh segment's scan may differ
    // in the last bit; compare results the graph gave both times.
    settled(&mut c, "docs").await;
    let q = vectors(1, DIMS, 42).remove(0);
    let first = c.search(search("docs", &q, 3)).await.unwrap().into_inner();
    assert!(!first.cached);
    for _ in 0..4 {
        let again = c.search(search("docs", &q, 3)).await.unwrap().into_inner();
        assert_eq!(again.results, first.results);
        assert!(again.cached, "a repeated search is answered from the cache");
    }
    let s = stats(&mut c, "docs").await;
    assert_eq!((s.cache_hits, s.cache_misses), (4, 1));
    assert!((s.cache_hit_rate - 0.8).abs() < 1e-9);

    // A point exactly at the query: the next search must see it.
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points: vec![point("new", &q, 0.0)],
    })
    .await
    .unwrap();
    let after = ids(c.search(search("docs", &q, 3)).await.unwrap().into_inner());
    assert_eq!(after[0], "new", "stale cached result served: {after:?}");
    // And a delete too.
    c.delete_points(delete_ids("docs", vec!["new".into()]))
        .await
        .unwrap();
    let after = c.search(search("docs", &q, 3)).await.unwrap().into_inner();
    assert_eq!(after.results, first.results);
    assert!(!after.cached, "a write makes cached results unreachable");
    let s = stats(&mut c, "docs").await;
    assert_eq!((s.cache_hits, s.cache_misses), (4, 3));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn restart_loads_the_snapshot_and_replays_later_writes() {
    let (config, dir) = test_config();
    let server = TestServer::start_with(config.clone(), dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let hnsw = index_spec::Kind::Hnsw(HnswIndex::default());
    create(&mut c, "docs", hnsw, QuantizationType::Sq8).await;
    let points = vectors(3000, DIMS, 51);
    upsert_all(&mut c, "docs", &points).await;
    wait_until(&mut c, "docs", |s| !s.rebuilding && s.points_count == 3000).await;
    let queries = vectors(20, DIMS, 52);
    let mut before = Vec::new();
    for q in &queries {
        before.push(ids(c
            .search(search("docs", q, 10))
            .await
            .unwrap()
            .into_inner()));
    }
    let dir = server.stop_keeping_data().await;
    let snapshots = dir.path().join("data").join("indexes");
    assert!(
        std::fs::read_dir(&snapshots).unwrap().count() == 1,
        "a snapshot directory under {}",
        snapshots.display()
    );

    let server = TestServer::start_with(config.clone(), dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    for (q, expected) in queries.iter().zip(&before) {
        let got = ids(c.search(search("docs", q, 10)).await.unwrap().into_inner());
        assert_eq!(&got, expected, "same index after a restart");
    }
    // Writes after the snapshot: replayed on the next start.
    c.delete_points(delete_ids("docs", vec![before[0][0].clone()]))
        .await
        .unwrap();
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points: vec![point("late", &queries[1], 0.0)],
    })
    .await
    .unwrap();
    let s = stats(&mut c, "docs").await;
    let dir = server.stop_keeping_data().await;

    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let got = ids(c
        .search(search("docs", &queries[0], 10))
        .await
        .unwrap()
        .into_inner());
    assert!(!got.contains(&before[0][0]), "deleted point back: {got:?}");
    let got = ids(c
        .search(search("docs", &queries[1], 1))
        .await
        .unwrap()
        .into_inner());
    assert_eq!(got, ["late"]);
    let again = stats(&mut c, "docs").await;
    assert_eq!(again.points_count, 3000);
    assert_eq!(again.last_applied_sequence, s.last_applied_sequence);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn near_duplicates_merge_into_the_existing_point() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    c.create_collection(CreateCollectionRequest {
        name: "facts".into(),
        dimensions: 4,
        metric: Metric::Cosine as i32,
        dedup_threshold: Some(0.99),
        ..Default::default()
    })
    .await
    .unwrap();
    let with = |id: &str, v: [f32; 4], key: &str, value: &str| PointInput {
        id: id.into(),
        data: Some(point_input::Data::Vector(Vector { values: v.to_vec() })),
        payload: Some(prost_types::Struct {
            fields: [(
                key.to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(value.into())),
                },
            )]
            .into(),
        }),
    };
    c.upsert(UpsertRequest {
        collection: "facts".into(),
        points: vec![
            with("a", [1.0, 0.0, 0.0, 0.0], "source", "chat"),
            with("b", [0.0, 1.0, 0.0, 0.0], "source", "chat"),
        ],
    })
    .await
    .unwrap();
    let r = c
        .upsert(UpsertRequest {
            collection: "facts".into(),
            points: vec![
                // Nearly a: merged, its payload fields added to a's.
                with("a2", [1.0, 0.01, 0.0, 0.0], "topic", "weather"),
                // Far from both: created.
                with("c", [0.0, 0.0, 1.0, 0.0], "source", "doc"),
                // An existing id is an explicit update, never merged.
                with("b", [0.0, 1.0, 0.001, 0.0], "source", "edited"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<(String, i32, String)> = r
        .results
        .into_iter()
        .map(|u| (u.id, u.status, u.merged_into))
        .collect();
    assert_eq!(
        statuses,
        [
            ("a2".into(), UpsertStatus::Merged as i32, "a".into()),
            ("c".into(), UpsertStatus::Created as i32, String::new()),
            ("b".into(), UpsertStatus::Updated as i32, String::new()),
        ]
    );
    let got = c
        .get_points(GetPointsRequest {
            collection: "facts".into(),
            ids: vec!["a".into(), "a2".into()],
            with_payload: true,
            with_vector: true,
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    assert_eq!(got.len(), 1, "a2 was not stored on its own");
    let payload = got[0].payload.clone().unwrap().fields;
    assert_eq!(payload.len(), 2, "{payload:?}");
    assert_eq!(got[0].vector.as_ref().unwrap().values, [1.0, 0.0, 0.0, 0.0]);
    let count = c
        .count(CountRequest {
            collection: "facts".into(),
            filter: None,
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 3);
    server.stop().await.unwrap();
}

fn batch(collection: &str, first: usize, vectors: &[Vec<f32>]) -> UpsertStreamRequest {
    UpsertStreamRequest {
        collection: collection.into(),
        points: points_from(first, vectors),
    }
}

#[tokio::test]
async fn upsert_stream_commits_batch_by_batch_and_names_the_bad_message() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let flat = index_spec::Kind::Flat(FlatIndex {});
    create(&mut c, "bulk", flat, QuantizationType::None).await;
    let points = vectors(2500, DIMS, 61);
    let messages: Vec<UpsertStreamRequest> = points
        .chunks(500)
        .enumerate()
        .map(|(n, chunk)| {
            // The collection may be left empty after the first message.
            batch(if n == 0 { "bulk" } else { "" }, n * 500, chunk)
        })
        .collect();
    let totals = c
        .upsert_stream(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            totals.points_upserted,
            totals.batches_committed,
            totals.points_merged
        ),
        (2500, 5, 0)
    );
    assert_eq!(totals.sequence, 5);
    assert_eq!(stats(&mut c, "bulk").await.points_count, 2500);

    // A bad third message: the first two stay committed, the error names it.
    let fresh = vectors(30, DIMS, 62);
    let mut bad = batch("bulk", 10_000, &fresh[20..]);
    bad.points[3].data = Some(point_input::Data::Vector(Vector {
        values: vec![1.0; 3],
    }));
    let messages = vec![
        batch("bulk", 10_000, &fresh[..10]),
        batch("bulk", 10_010, &fresh[10..20]),
        bad,
    ];
    let err = c
        .upsert_stream(futures::stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["messages[2].points[3].vector"]);
    assert_eq!(stats(&mut c, "bulk").await.points_count, 2520);

    // Another collection mid-stream, or none at all, is refused.
    let err = c
        .upsert_stream(futures::stream::iter(vec![
            batch("bulk", 20_000, &fresh[..1]),
            batch("other", 20_001, &fresh[1..2]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["messages[1].collection"]);
    let err = c
        .upsert_stream(futures::stream::iter(vec![batch("", 0, &fresh[..1])]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["messages[0].collection"]);
    let err = c
        .upsert_stream(futures::stream::iter(vec![batch("nope", 0, &fresh[..1])]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn changed_indexes_are_snapshotted_periodically() {
    let (mut config, dir) = test_config();
    config.memory.snapshot_interval = Duration::from_secs(1);
    let root = config.data_dir.join("indexes");
    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let flat = index_spec::Kind::Flat(FlatIndex {});
    create(&mut c, "docs", flat, QuantizationType::None).await;
    let points = vectors(20, DIMS, 71);
    upsert_all(&mut c, "docs", &points[..10]).await;
    // Loading builds the index in the background and snapshots it.
    assert_eq!(stats(&mut c, "docs").await.last_applied_sequence, 1);
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points: points_from(10, &points[10..]),
    })
    .await
    .unwrap();
    let metas = || -> Vec<String> {
        let mut names = Vec::new();
        // None yet while the first build runs.
        for d in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                names.push(f.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    };
    // The snapshot at seq 2 is written (meta last), then the older one is
    // removed: in the end only its complete files remain.
    let newest = [format!("{:020}.faiss", 2), format!("{:020}.meta", 2)];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = metas();
        if names == newest {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lone snapshot at seq 2: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn collection_stats_count_what_mixed_writes_left_and_keep_it_across_a_restart() {
    let (config, dir) = test_config();
    let server = TestServer::start_with(config.clone(), dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let hnsw = index_spec::Kind::Hnsw(HnswIndex::default());
    create(&mut c, "mixed", hnsw, QuantizationType::None).await;
    let vs = vectors(600, DIMS, 61);
    upsert_all(&mut c, "mixed", &vs[..500]).await;
    let mut live: std::collections::BTreeSet<String> = (0..500).map(|i| format!("p{i}")).collect();
    // Replacements (another bucket), new points, deletions of present and
    // absent ids.
    let replaced: Vec<PointInput> = (0..100)
        .map(|i| point(format!("p{i}"), &vs[i + 500], 7.0))
        .chain((500..550).map(|i| point(format!("p{i}"), &vs[i], 1.0)))
        .collect();
    c.upsert(UpsertRequest {
        collection: "mixed".into(),
        points: replaced,
    })
    .await
    .unwrap();
    live.extend((500..550).map(|i| format!("p{i}")));
    let gone: Vec<String> = (50..200)
        .map(|i| format!("p{i}"))
        .chain(["absent".into()])
        .collect();
    c.delete_points(delete_ids("mixed", gone.clone()))
        .await
        .unwrap();
    for id in &gone {
        live.remove(id);
    }
    let count = |c: &mut MemoryServiceClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.count(CountRequest {
                collection: "mixed".into(),
                filter: None,
            })
            .await
            .unwrap()
            .into_inner()
            .count
        }
    };
    settled(&mut c, "mixed").await;
    let s = stats(&mut c, "mixed").await;
    assert_eq!(s.points_count, live.len() as u64);
    assert_eq!(count(&mut c).await, live.len() as u64);
    let dir = server.stop_keeping_data().await;

    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let again = stats(&mut c, "mixed").await;
    assert_eq!(again.points_count, live.len() as u64);
    assert_eq!(again.disk_bytes, s.disk_bytes, "sizes kept with the writes");
    assert_eq!(count(&mut c).await, live.len() as u64);
    server.stop().await.unwrap();
}
