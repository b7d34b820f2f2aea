//! Writes that do not wait for the graph, and searches in parallel: a
//! point is found by the first search after its Upsert returns and a
//! deleted one never again, while other clients search and the background
//! merger moves points into the graph; searches during merges are exact on
//! a Flat collection; parallel searches answer what sequential ones do; a
//! kill during a merge loses nothing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::binary::{Binary, ConfigFile};
use crate::common::points::{
    create_collection, delete_ids, exact, ids, point, points_from, search, settled, stats, vectors,
};
use crate::common::{TestServer, test_config};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;

const DIMS: usize = 16;

async fn create(c: &mut MemoryServiceClient<Channel>, name: &str, kind: index_spec::Kind) {
    create_collection(c, name, DIMS, kind, QuantizationType::None).await;
}

fn hnsw() -> index_spec::Kind {
    index_spec::Kind::Hnsw(HnswIndex::default())
}

#[tokio::test]
async fn a_write_is_found_by_the_next_search_and_a_delete_never_again() {
    let (mut config, dir) = test_config();
    // Small, so the writer also runs into the merger's back-pressure.
    config.memory.fresh_segment_max_points = 64;
    let server = TestServer::start_with(config, dir, |s| s).await;
    let channel = server.channel().await;
    let mut c = MemoryServiceClient::new(channel.clone());
    create(&mut c, "ryw", hnsw()).await;
    let base = vectors(2_000, DIMS, 3);
    c.upsert(UpsertRequest {
        collection: "ryw".into(),
        points: points_from(0, &base),
    })
    .await
    .unwrap();

    // Searchers on other connections: never an error, never a point whose
    // delete was acknowledged before the search was sent.
    let deleted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut searchers = Vec::new();
    for s in 0..4u64 {
        let (deleted, stop) = (Arc::clone(&deleted), Arc::clone(&stop));
        let mut c = MemoryServiceClient::new(channel.clone());
        searchers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let q = vectors(1, DIMS, 10_000 + s * 1_000_000 + n).remove(0);
                let gone = deleted.lock().unwrap().clone();
                let got = ids(c.search(search("ryw", &q, 10)).await.unwrap().into_inner());
                assert_eq!(got.len(), 10);
                assert!(got.iter().all(|id| !gone.contains(id)), "deleted: {got:?}");
                n += 1;
            }
            n
        }));
    }

    let exact_enough = |v: &[f32]| {
        let mut r = search("ryw", v, 1);
        // Wide enough that the graph finds a point at distance 0.
        r.ef_search = Some(256);
        r
    };
    for n in 0..300u64 {
        // Mostly single points, sometimes a batch larger than the fresh
        // segment's limit.
        let batch = if n % 25 == 0 { 100 } else { 1 };
        let vs = vectors(batch, DIMS, 5_000_000 + n);
        let points: Vec<PointInput> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| point(format!("w{n}-{i}"), v, 0.0))
            .collect();
        c.upsert(UpsertRequest {
            collection: "ryw".into(),
            points,
        })
        .await
        .unwrap();
        for (i, v) in vs.iter().enumerate().step_by(17) {
            let got = ids(c.search(exact_enough(v)).await.unwrap().into_inner());
            assert_eq!(got, [format!("w{n}-{i}")], "write {n} not read back");
        }
        if n % 3 == 2 {
            let victim = format!("w{}-0", n - 1);
            let victim_vector = vectors(1, DIMS, 5_000_000 + n - 1).remove(0);
            c.delete_points(delete_ids("ryw", vec![victim.clone()]))
                .await
                .unwrap();
            deleted.lock().unwrap().insert(victim.clone());
            let got = ids(c
                .search(exact_enough(&victim_vector))
                .await
                .unwrap()
                .into_inner());
            assert!(!got.contains(&victim), "deleted {victim} found");
        }
    }
    stop.store(true, Ordering::Release);
    let mut searched = 0;
    for s in searchers {
        searched += s.await.unwrap();
    }
    assert!(searched > 0);
    let s = settled(&mut c, "ryw").await;
    assert_eq!(s.indexed_points, s.points_count, "{s:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn flat_searches_during_merges_equal_an_exact_search_of_what_was_written() {
    const BATCH: usize = 250;
    const BATCHES: usize = 40;
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut c = MemoryServiceClient::new(channel.clone());
    create(&mut c, "flat", index_spec::Kind::Flat(FlatIndex {})).await;
    let all = vectors(BATCH * BATCHES, DIMS, 7);
    // Load the index first so the writes below go through the fresh
    // segment and the merger.
    c.upsert(UpsertRequest {
        collection: "flat".into(),
        points: points_from(0, &all[..BATCH]),
    })
    .await
    .unwrap();
    stats(&mut c, "flat").await;

    let acked = Arc::new(AtomicUsize::new(1));
    let writer = {
        let (acked, all) = (Arc::clone(&acked), all.clone());
        let mut c = MemoryServiceClient::new(channel.clone());
        tokio::spawn(async move {
            for b in 1..BATCHES {
                c.upsert(UpsertRequest {
                    collection: "flat".into(),
                    points: points_from(b * BATCH, &all[b * BATCH..(b + 1) * BATCH]),
                })
                .await
                .unwrap();
                acked.store(b + 1, Ordering::Release);
            }
        })
    };
    let mut checked = 0;
    let mut n = 0u64;
    while acked.load(Ordering::Acquire) < BATCHES || checked < 50 {
        let q = vectors(1, DIMS, 900_000 + n).remove(0);
        n += 1;
        let before = acked.load(Ordering::Acquire);
        let got = ids(c.search(search("flat", &q, 10)).await.unwrap().into_inner());
        let after = acked.load(Ordering::Acquire);
        // Every batch acknowledged before the search is in; one committed
        // but not yet acknowledged may be too.
        let candidates: Vec<usize> = (before..=(after + 1).min(BATCHES)).collect();
        assert!(
            candidates
                .iter()
                .any(|b| got == exact(&all[..b * BATCH], &q, 10)),
            "search {n} with {before}..={after} batches acknowledged: {got:?}"
        );
        checked += 1;
    }
    writer.await.unwrap();
    eprintln!("{checked} searches checked against exact search during the writes");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn parallel_searches_answer_what_sequential_ones_do() {
    let (mut config, dir) = test_config();
    // Every search reaches the index.
    config.memory.search_cache_bytes = 0;
    let server = TestServer::start_with(config, dir, |s| s).await;
    let channel = server.channel().await;
    let mut c = MemoryServiceClient::new(channel.clone());
    create_collection(&mut c, "par", DIMS, hnsw(), QuantizationType::Sq8).await;
    let points = vectors(5_000, DIMS, 11);
    c.upsert(UpsertRequest {
        collection: "par".into(),
        points: points_from(0, &points),
    })
    .await
    .unwrap();
    settled(&mut c, "par").await;
    let queries = vectors(64, DIMS, 12);
    // Different efSearch per query: per-call parameters must not leak
    // between concurrent searches.
    let request = |i: usize| {
        let mut r = search("par", &queries[i], 10);
        r.ef_search = Some([16, 64, 200][i % 3]);
        r
    };
    let mut sequential = Vec::new();
    for i in 0..queries.len() {
        sequential.push(c.search(request(i)).await.unwrap().into_inner().results);
    }
    let sequential = Arc::new(sequential);
    let mut clients = Vec::new();
    for t in 0..16 {
        let sequential = Arc::clone(&sequential);
        let mut c = MemoryServiceClient::new(channel.clone());
        let requests: Vec<SearchRequest> = (0..queries.len()).map(&request).collect();
        clients.push(tokio::spawn(async move {
            for round in 0..3 {
                for j in 0..requests.len() {
                    let i = (j * 7 + t * 5 + round) % requests.len();
                    let got = c.search(requests[i].clone()).await.unwrap().into_inner();
                    assert_eq!(got.results, sequential[i], "query {i} in parallel");
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    // SearchBatch answers each search as a Search would.
    let batch = c
        .search_batch(SearchBatchRequest {
            collection: "par".into(),
            searches: (0..queries.len()).map(request).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    for (i, r) in batch.results.into_iter().enumerate() {
        assert_eq!(r.results, sequential[i], "query {i} in a batch");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_kill_during_a_background_merge_loses_nothing() {
    const BATCH: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Room for everything written, so the kill lands with most of it
    // still waiting for the merger.
    let config = ConfigFile::new()
        .raw("[memory]\nfresh_segment_max_points = 100000")
        .write(dir.path());
    let config = config.to_str().unwrap().to_owned();
    let args = ["--disable", "embedding,query,agents", "--config", &config];
    let (server, channel) = Binary::start_with(&data, &args).await;
    let mut c = MemoryServiceClient::new(channel);
    // The slower build settings, so the merge is still going at the kill.
    let slow = index_spec::Kind::Hnsw(HnswIndex {
        m: 32,
        ef_construction: 200,
        ef_search: 0,
    });
    create(&mut c, "kill", slow).await;
    let all = vectors(30 * BATCH, DIMS, 17);
    for b in 0..20 {
        c.upsert(UpsertRequest {
            collection: "kill".into(),
            points: points_from(b * BATCH, &all[b * BATCH..(b + 1) * BATCH]),
        })
        .await
        .unwrap();
    }
    // Loaded and built, so the writes below go to the fresh segment, and
    // fewer than the graph holds, so the merger takes them (more would
    // call for a rebuild instead).
    settled(&mut c, "kill").await;
    for b in 20..30 {
        c.upsert(UpsertRequest {
            collection: "kill".into(),
            points: points_from(b * BATCH, &all[b * BATCH..(b + 1) * BATCH]),
        })
        .await
        .unwrap();
    }
    let s = stats(&mut c, "kill").await;
    assert!(s.fresh_points > 0, "the merger already finished: {s:?}");
    server.kill();

    let (server, channel) = Binary::start_with(&data, &args).await;
    let mut c = MemoryServiceClient::new(channel);
    let s = stats(&mut c, "kill").await;
    assert_eq!(s.points_count, all.len() as u64);
    assert_eq!(s.indexed_points + s.fresh_points, s.points_count, "{s:?}");
    // Found by their own vectors, from the fresh segment or the graph.
    for i in (0..all.len()).step_by(97) {
        let mut r = search("kill", &all[i], 1);
        r.ef_search = Some(256);
        assert_eq!(
            ids(c.search(r).await.unwrap().into_inner()),
            [format!("p{i}")]
        );
    }
    let s = settled(&mut c, "kill").await;
    assert_eq!(s.indexed_points, all.len() as u64, "{s:?}");
    drop(server);
}

#[tokio::test]
async fn a_bulk_load_into_a_small_graph_rebuilds_it_instead_of_merging() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A small fresh segment: merging would hold the writers back at once.
    let config = ConfigFile::new()
        .raw("[memory]\nfresh_segment_max_points = 64")
        .write(dir.path());
    let config = config.to_str().unwrap().to_owned();
    let args = ["--disable", "embedding,query,agents", "--config", &config];
    let log_path = dir.path().join("agentd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (server, channel) = Binary::start_logging(&data, &args, log).await;
    let mut c = MemoryServiceClient::new(channel);
    create(&mut c, "bulk", hnsw()).await;
    stats(&mut c, "bulk").await; // loaded: an empty graph
    let all = vectors(6_000, DIMS, 23);
    for b in 0..2 {
        c.upsert(UpsertRequest {
            collection: "bulk".into(),
            points: points_from(b * 3_000, &all[b * 3_000..(b + 1) * 3_000]),
        })
        .await
        .unwrap();
    }
    let s = settled(&mut c, "bulk").await;
    assert_eq!(s.indexed_points, 6_000, "{s:?}");
    for i in (0..all.len()).step_by(101) {
        assert_eq!(
            ids(c
                .search(search("bulk", &all[i], 1))
                .await
                .unwrap()
                .into_inner()),
            [format!("p{i}")]
        );
    }
    server.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("index rebuilt") && l.contains("fresh points outnumber the graph")),
        "no rebuild for the bulk load:\n{log}"
    );
}
