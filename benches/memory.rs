//! Vector collections: agentd over gRPC against raw faiss in-process, on the
//! same vectors and queries in the same run.
//!
//! For a random-normal and a clustered set of 100k × 384 vectors:
//! - durable upsert throughput (UpsertStream, 1,000 points a message, each
//!   batch committed to SQLite with fsync before the next is read);
//! - index build time in agentd (the first CollectionStats loads the index:
//!   read from the store, HNSW build, snapshot written) and in raw faiss;
//! - the smallest efSearch at which raw faiss reaches recall@10 ≥ 0.98, then
//!   Search p50/p99 at that efSearch for one query at a time: raw faiss
//!   `search` in-process vs agentd's Search RPC from a client in this
//!   process to the server in its own process; the difference is the
//!   service overhead (gRPC, validation, locking, the hand-off to faiss).
//!   Twice: on the index as built, and after 10% more points were added
//!   and deleted again, so both carry the same tombstones (raw faiss skips
//!   them with the same position bitmap agentd uses). Raw faiss, agentd and
//!   the gRPC floor (a Search answered from agentd's result cache) take
//!   turns in blocks of 50 queries, so all three see the same moments of a
//!   noisy shared machine;
//! - resident memory of the server holding the collection (after a restart,
//!   so only what loading the snapshot allocates), for no quantization, SQ8
//!   and SQ4, against faiss's own serialised size of the same index;
//! - many clients searching one collection at once, with and without a
//!   writer beside them ([`parallel`]).
//!
//! `cargo bench --bench memory` (about 15 minutes on 2 cores). Set
//! `AGENTD_BENCH_POINTS` for another size, `AGENTD_BENCH_ONLY=search`,
//! `=clustered` (its search part only), `=memory` or `=parallel` for one
//! part; `=peer` is agentd's side of the Chroma comparison
//! (`scripts/bench-memory` runs both sides); `=million` loads, searches and
//! restarts a 1M-point SQ8 collection ([`million`], about 15 minutes). Under `cargo test` (no `--bench` argument) it runs 2,000 points
//! and 20 queries, so CI keeps it working.

#[path = "../tests/suite/common/binary.rs"]
mod binary;
#[path = "memory/million.rs"]
mod million;
#[path = "memory/parallel.rs"]
mod parallel;
#[path = "memory/peer.rs"]
mod peer;

use std::time::{Duration, Instant};

use agentd::memory::{LivePositions, Tuning, search_live};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use binary::Binary;
use faiss::index::autotune::ParameterSpace;
use faiss::{Idx, Index, MetricType, index_factory};
use tonic::transport::Channel;

const DIMS: usize = 384;
const K: usize = 10;
/// The server's default HNSW (what `create_default` gets).
const M: u32 = 16;
const EF_CONSTRUCTION: u32 = 100;
const BATCH: usize = 1000;
/// Queries per block when raw faiss and agentd take turns.
const BLOCK: usize = 50;

/// Seeded normal variates (xorshift64* and Box-Muller).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// `n` vectors back to back: random normal, or around 100 normal centres.
fn dataset(kind: &str, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Normal(seed);
    let mut centres = Normal(7);
    let centres: Vec<f32> = (0..100 * DIMS).map(|_| centres.next()).collect();
    let mut out = Vec::with_capacity(n * DIMS);
    for i in 0..n {
        for d in 0..DIMS {
            let noise = rng.next();
            out.push(match kind {
                "clustered" => centres[(i % 100) * DIMS + d] + 0.35 * noise,
                _ => noise,
            });
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn recall(truth: &[Vec<i64>], got: &[Vec<i64>]) -> f64 {
    let hits: usize = truth
        .iter()
        .zip(got)
        .map(|(t, g)| t.iter().filter(|x| g.contains(x)).count())
        .sum();
    hits as f64 / (truth.len() * K) as f64
}

/// Exact k nearest by label, with faiss's flat index.
fn exact(data: &[f32], queries: &[f32]) -> Vec<Vec<i64>> {
    let mut flat = index_factory(DIMS as u32, "Flat", MetricType::L2).unwrap();
    flat.add(data).unwrap();
    let found = flat.search(queries, K).unwrap();
    found
        .labels
        .chunks(K)
        .map(|c| c.iter().map(|l| l.get().unwrap() as i64).collect())
        .collect()
}

async fn upload(c: &mut MemoryServiceClient<Channel>, name: &str, data: &[f32]) -> f64 {
    let n = data.len() / DIMS;
    let messages: Vec<UpsertStreamRequest> = data
        .chunks(BATCH * DIMS)
        .enumerate()
        .map(|(b, chunk)| UpsertStreamRequest {
            collection: name.into(),
            points: vector_points(chunk, "", b * BATCH),
        })
        .collect();
    let started = Instant::now();
    let totals = c
        .upsert_stream(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(totals.points_upserted, n as u64);
    n as f64 / started.elapsed().as_secs_f64()
}

async fn create(c: &mut MemoryServiceClient<Channel>, name: &str, m: u32, q: QuantizationType) {
    c.create_collection(CreateCollectionRequest {
        name: name.into(),
        dimensions: DIMS as u32,
        metric: Metric::L2 as i32,
        index: Some(IndexSpec {
            kind: Some(index_spec::Kind::Hnsw(HnswIndex {
                m,
                ef_construction: EF_CONSTRUCTION,
                ef_search: 64,
            })),
        }),
        quantization: Some(Quantization {
            r#type: q as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Points `{prefix}{first}`, `{prefix}{first + 1}`, … for the vectors
/// in `data` (back to back), without payloads.
fn vector_points(data: &[f32], prefix: &str, first: usize) -> Vec<PointInput> {
    data.chunks(DIMS)
        .enumerate()
        .map(|(i, v)| PointInput {
            id: format!("{prefix}{}", first + i),
            data: Some(point_input::Data::Vector(Vector { values: v.to_vec() })),
            payload: None,
        })
        .collect()
}

/// A k-nearest search of `collection` for `q` (the collection's efSearch
/// unless `ef_search`).
fn vector_search(collection: &str, q: &[f32], ef_search: Option<u32>) -> SearchRequest {
    SearchRequest {
        collection: collection.into(),
        query: Some(search_request::Query::Vector(Vector { values: q.to_vec() })),
        k: K as u32,
        ef_search,
        ..Default::default()
    }
}

/// Every query once, one at a time: each one's latency (sorted) and result
/// ids (in query order). `rescore` and `ef_search` as SearchRequest's
/// (None: the server's default).
async fn one_by_one(
    c: &mut MemoryServiceClient<Channel>,
    collection: &str,
    queries: &[f32],
    rescore: Option<bool>,
    ef_search: Option<u32>,
) -> (Vec<Duration>, Vec<Vec<i64>>) {
    let (mut times, mut got) = (Vec::new(), Vec::new());
    for q in queries.chunks(DIMS) {
        let t = Instant::now();
        let r = c
            .search(SearchRequest {
                rescore,
                ..vector_search(collection, q, ef_search)
            })
            .await
            .unwrap()
            .into_inner();
        times.push(t.elapsed());
        got.push(result_ids(&r));
    }
    times.sort();
    (times, got)
}

/// `n` clients, each on its own connection to `addr`.
async fn clients(addr: std::net::SocketAddr, n: usize) -> Vec<MemoryServiceClient<Channel>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(MemoryServiceClient::new(channel));
    }
    clients
}

/// The ids of a search's results (the bench's ids are point numbers).
fn result_ids(r: &SearchResponse) -> Vec<i64> {
    r.results.iter().map(|p| p.id.parse().unwrap()).collect()
}

/// A collection on the server's defaults: HNSW, no quantization, L2.
async fn create_default(c: &mut MemoryServiceClient<Channel>, name: &str) {
    c.create_collection(CreateCollectionRequest {
        name: name.into(),
        dimensions: DIMS as u32,
        metric: Metric::L2 as i32,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn stats(c: &mut MemoryServiceClient<Channel>, name: &str) -> CollectionStatsResponse {
    c.collection_stats(CollectionStatsRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

struct Run {
    n: usize,
    queries: usize,
    /// How long each phase of the parallel part searches.
    phase: Duration,
}

fn print_row(label: &str, agentd: String, faiss: String, note: String) {
    println!("| {label} | {agentd} | {faiss} | {note} |");
}

/// Upload, build, search: agentd vs raw faiss on one dataset.
async fn search_run(kind: &str, run: &Run) {
    let data = dataset(kind, run.n, 1);
    let queries = dataset(kind, run.queries, 2);
    let truth = exact(&data, &queries);

    // Raw faiss, in-process, the same structure and parameters (wrapped in
    // an id map as agentd's is, which costs nothing measurable, so that the
    // tombstone run below can use the same filtered search).
    let started = Instant::now();
    let mut raw =
        index_factory(DIMS as u32, format!("IDMap,HNSW{M},Flat"), MetricType::L2).unwrap();
    let space = ParameterSpace::new().unwrap();
    space
        .set_index_parameter(&raw, "efConstruction", EF_CONSTRUCTION)
        .unwrap();
    let labels: Vec<Idx> = (0..run.n as u64).map(Idx::new).collect();
    raw.add_with_ids(&data, &labels).unwrap();
    let raw_build = started.elapsed().as_secs_f64();
    // The smallest efSearch reaching recall 0.98 (and its recall), and the
    // recall at the collection default's efSearch (64), for the README's
    // trade-off table.
    let mut reached: Option<(u32, f64)> = None;
    let mut recall_at_default = 0.0;
    for candidate in [
        16u32, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
    ] {
        space
            .set_index_parameter(&raw, "efSearch", candidate)
            .unwrap();
        let found = raw.search(&queries, K).unwrap();
        let got: Vec<Vec<i64>> = found
            .labels
            .chunks(K)
            .map(|c| c.iter().filter_map(|l| l.get()).map(|l| l as i64).collect())
            .collect();
        let r = recall(&truth, &got);
        if candidate == 64 {
            recall_at_default = r;
        }
        if reached.is_none() && (r >= 0.98 || candidate == 4096) {
            reached = Some((candidate, r));
        }
        if reached.is_some() && candidate >= 64 {
            break;
        }
    }
    let (ef, raw_recall) = reached.expect("the last candidate always counts");
    // The timed queries with the caches flushed between queries (64 MiB written), as
    // they are between two searches that a server answers over the network.
    let mut scratch = vec![0u8; 64 << 20];
    let mut cold_times = Vec::with_capacity(run.queries);
    for (i, q) in queries.chunks(DIMS).enumerate() {
        scratch.fill(i as u8);
        std::hint::black_box(&scratch);
        let t = Instant::now();
        std::hint::black_box(raw.search(q, K).unwrap());
        cold_times.push(t.elapsed());
    }
    cold_times.sort();
    drop(scratch);

    // agentd, in its own process.
    let dir = tempfile::tempdir().unwrap();
    let (server, channel) = Binary::start(&dir.path().join("data")).await;
    let mut c = MemoryServiceClient::new(channel.clone());
    create(&mut c, "bench", M, QuantizationType::None).await;
    let upsert_rate = upload(&mut c, "bench", &data).await;
    let started = Instant::now();
    // The first call loads the collection (no snapshot yet: every point in
    // the fresh segment, searched exactly) and the graph builds behind it.
    stats(&mut c, "bench").await;
    let first_answer = started.elapsed().as_secs_f64();
    settled(&mut c, "bench").await;
    let build = started.elapsed().as_secs_f64();

    let request = |q: &[f32]| vector_search("bench", q, Some(ef));
    // Store labels start at 1 for point "0"; the raw index's at 0.
    let truth_labels: Vec<Vec<i64>> = truth
        .iter()
        .map(|t| t.iter().map(|l| l + 1).collect())
        .collect();
    // Warm the connection with other queries (distinct, so no cache hits).
    for q in dataset(kind, 20, 4).chunks(DIMS) {
        c.search(request(q)).await.unwrap();
    }
    let clean = interleaved(&mut c, &queries, &request, |q| {
        std::hint::black_box(raw.search(q, K).unwrap());
    })
    .await;
    let agentd_recall = recall(&truth_labels, &clean.got);

    // Upserts into the loaded index pay for HNSW insertion.
    let extra = dataset(kind, run.n / 10, 3);
    let mut inserts = c.clone();
    let started = Instant::now();
    for (b, chunk) in extra.chunks(BATCH * DIMS).enumerate() {
        let points = vector_points(chunk, "x", b * BATCH);
        inserts
            .upsert(UpsertRequest {
                collection: "bench".into(),
                points,
            })
            .await
            .unwrap();
    }
    let loaded_rate = (extra.len() / DIMS) as f64 / started.elapsed().as_secs_f64();
    // Then in the graph: the background merge done.
    settled(&mut c, "bench").await;
    let merged_rate = (extra.len() / DIMS) as f64 / started.elapsed().as_secs_f64();
    let gone: Vec<String> = (0..extra.len() / DIMS).map(|i| format!("x{i}")).collect();
    for ids in gone.chunks(10_000) {
        c.delete_points(DeletePointsRequest {
            collection: "bench".into(),
            selector: Some(delete_points_request::Selector::Ids(PointIds {
                ids: ids.to_vec(),
            })),
        })
        .await
        .unwrap();
    }
    // Time the steady state: wait for the periodic snapshot of these writes
    // (up to a minute; it copies the index under the collection's lock and
    // writes it out) and for a compaction, should the deletes trigger one.
    loop {
        let s = stats(&mut c, "bench").await;
        if !s.rebuilding
            && s.fresh_points == 0
            && s.last_snapshot_sequence >= s.last_applied_sequence
        {
            assert!(
                s.deleted_not_compacted > 0,
                "the timed index holds tombstones"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Raw faiss with the same tombstones: the extra points added, then
    // skipped through a bitmap of live positions.
    let extra_labels: Vec<Idx> = (0..(extra.len() / DIMS) as u64)
        .map(|i| Idx::new(run.n as u64 + i))
        .collect();
    raw.add_with_ids(&extra, &extra_labels).unwrap();
    let mut live = LivePositions::default();
    (0..run.n).for_each(|_| live.push(true));
    extra_labels.iter().for_each(|_| live.push(false));
    let dead = interleaved(&mut c, &queries, &request, |q| {
        std::hint::black_box(search_live(&raw, Some(&live), q, K, Tuning::Default).unwrap());
    })
    .await;
    assert!(recall(&truth_labels, &dead.got) >= agentd_recall - 0.02);
    let cache = stats(&mut c, "bench").await;
    assert_eq!(
        (cache.cache_misses, cache.cache_hits),
        (2 * run.queries as u64 + 22, 2 * run.queries as u64),
        "every timed query reaches the index, every floor query hits the cache"
    );

    drop(raw);
    server.stop();

    let p50 = percentile(&clean.agentd, 0.5);
    println!(
        "\n### {kind}: {} x {DIMS}, HNSW{M} efConstruction {EF_CONSTRUCTION}, {} queries, k = {K}\n",
        run.n, run.queries
    );
    println!("| measure | agentd (gRPC, own process) | raw faiss (in-process) | note |");
    println!("|---|---|---|---|");
    print_row(
        "durable upsert (points/s)",
        format!("{upsert_rate:.0}"),
        "—".into(),
        format!("UpsertStream, {BATCH} a message, fsync per message"),
    );
    print_row(
        "upsert into the loaded index, acknowledged (points/s)",
        format!("{loaded_rate:.0}"),
        "—".into(),
        format!(
            "Upsert, {BATCH} a call, {} points: durable and searchable (fresh segment)",
            extra.len() / DIMS
        ),
    );
    print_row(
        "the same, until merged into the graph (points/s)",
        format!("{merged_rate:.0}"),
        "—".into(),
        "background merge, one thread, beside the searches".into(),
    );
    print_row(
        "first answer after the upload (s)",
        format!("{first_answer:.2}"),
        "—".into(),
        "CollectionStats; searches answer from then on (exactly, until built)".into(),
    );
    print_row(
        "index build (s)",
        format!("{build:.1}"),
        format!("{raw_build:.1}"),
        "agentd: from the upload's end until built, snapshot included".into(),
    );
    print_row(
        "recall@10 at efSearch 64",
        "—".into(),
        format!("{recall_at_default:.3}"),
        String::new(),
    );
    print_row(
        &format!("recall@10 at efSearch {ef}"),
        format!("{agentd_recall:.3}"),
        format!("{raw_recall:.3}"),
        "smallest efSearch with raw recall ≥ 0.98".into(),
    );
    print_row(
        "raw faiss p50 with caches flushed between queries (ms)",
        "—".into(),
        format!("{:.3}", percentile(&cold_times, 0.5)),
        format!(
            "overhead against it {:.0} µs",
            (p50 - percentile(&cold_times, 0.5)) * 1e3
        ),
    );
    print_phase("", &clean);
    print_phase(" with 10% tombstones", &dead);
}

/// Waits until the collection's graph holds every point and no build runs.
async fn settled(c: &mut MemoryServiceClient<Channel>, name: &str) {
    loop {
        let s = stats(c, name).await;
        if !s.rebuilding && s.fresh_points == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rows of one search phase: p50 and p99 of agentd and raw faiss, and
/// the gRPC floor measured alongside.
fn print_phase(label: &str, t: &Timed) {
    let (p50, r50, f50) = (
        percentile(&t.agentd, 0.5),
        percentile(&t.raw, 0.5),
        percentile(&t.floor, 0.5),
    );
    print_row(
        &format!("search p50{label} (ms)"),
        format!("{p50:.3}"),
        format!("{r50:.3}"),
        format!(
            "overhead {:.0} µs, of which the gRPC floor {:.0} µs",
            (p50 - r50) * 1e3,
            f50 * 1e3
        ),
    );
    print_row(
        &format!("search p99{label} (ms)"),
        format!("{:.3}", percentile(&t.agentd, 0.99)),
        format!("{:.3}", percentile(&t.raw, 0.99)),
        String::new(),
    );
    print_row(
        &format!("gRPC floor{label}: cached Search p50 / p99 (ms)"),
        format!("{f50:.3} / {:.3}", percentile(&t.floor, 0.99)),
        "—".into(),
        "timed alongside: gRPC between processes, no faiss".into(),
    );
}

/// Timings of one search phase (each sorted).
struct Timed {
    /// agentd's Search RPCs.
    agentd: Vec<Duration>,
    /// The same queries on raw faiss in-process.
    raw: Vec<Duration>,
    /// Search RPCs answered from agentd's result cache: the gRPC floor.
    floor: Vec<Duration>,
    /// agentd's result labels per query, as store labels (point id + 1).
    got: Vec<Vec<i64>>,
}

/// Queries timed in alternating blocks: [`BLOCK`] on raw faiss, the same
/// on agentd, then as many repeats of one cached query (the floor), and so
/// on, so that all three see the same moments of a shared, noisy machine.
async fn interleaved(
    c: &mut MemoryServiceClient<Channel>,
    queries: &[f32],
    request: &impl Fn(&[f32]) -> SearchRequest,
    mut raw: impl FnMut(&[f32]),
) -> Timed {
    let n = queries.len() / DIMS;
    let (mut times, mut raw_times) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut floor = Vec::with_capacity(n);
    let mut got = Vec::with_capacity(n);
    // A query of its own (offset, so no timed query equals it), cached now.
    let cached: Vec<f32> = queries[..DIMS].iter().map(|x| x + 0.5).collect();
    c.search(request(&cached)).await.unwrap();
    for block in queries.chunks(BLOCK * DIMS) {
        for q in block.chunks(DIMS) {
            let t = Instant::now();
            raw(q);
            raw_times.push(t.elapsed());
        }
        for q in block.chunks(DIMS) {
            let t = Instant::now();
            let r = c.search(request(q)).await.unwrap().into_inner();
            times.push(t.elapsed());
            got.push(result_ids(&r).into_iter().map(|id| id + 1).collect());
        }
        for _ in block.chunks(DIMS) {
            let t = Instant::now();
            c.search(request(&cached)).await.unwrap();
            floor.push(t.elapsed());
        }
    }
    times.sort();
    raw_times.sort();
    floor.sort();
    Timed {
        agentd: times,
        raw: raw_times,
        floor,
        got,
    }
}

/// Server RSS holding one collection, per quantization and HNSW M, after a
/// restart. Memory does not depend on the distribution, so this uses the
/// clustered set, whose HNSW builds take a sixth of the time.
async fn memory_run(run: &Run) {
    let data = dataset("clustered", run.n, 1);
    let empty_dir = tempfile::tempdir().unwrap();
    let (empty, _) = Binary::start(&empty_dir.path().join("data")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = empty.rss_bytes();
    empty.stop();

    println!(
        "\n### server memory holding {} x {DIMS}, after a restart (empty server: {:.1} MB)\n",
        run.n,
        baseline as f64 / 1e6
    );
    println!(
        "| index | RSS over an empty server (MB) | faiss index file (MB) | RSS / file | vs none |"
    );
    println!("|---|---|---|---|---|");
    for m in [M, 16] {
        let mut none_rss = 0.0;
        for (label, q) in [
            ("none", QuantizationType::None),
            ("sq8", QuantizationType::Sq8),
            ("sq4", QuantizationType::Sq4),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let data_dir = dir.path().join("data");
            let (server, channel) = Binary::start(&data_dir).await;
            let mut c = MemoryServiceClient::new(channel);
            create(&mut c, "bench", m, q).await;
            upload(&mut c, "bench", &data).await;
            stats(&mut c, "bench").await;
            server.stop();
            let (server, channel) = Binary::start(&data_dir).await;
            let mut c = MemoryServiceClient::new(channel);
            let s = stats(&mut c, "bench").await;
            assert_eq!(s.points_count, run.n as u64);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = server.rss_bytes().saturating_sub(baseline) as f64 / 1e6;
            let file = snapshot_bytes(&data_dir) as f64 / 1e6;
            server.stop();
            if label == "none" {
                none_rss = rss;
            }
            println!(
                "| HNSW{m}, {label} | {rss:.1} | {file:.1} | {:.2}x | {:.2}x |",
                rss / file,
                rss / none_rss
            );
        }
    }
}

/// Bytes of the `.faiss` snapshot files under a data directory.
fn snapshot_bytes(data_dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for dir in std::fs::read_dir(data_dir.join("indexes"))
        .unwrap()
        .flatten()
    {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "faiss") {
                total += f.metadata().unwrap().len();
            }
        }
    }
    total
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let run = if full {
        Run {
            n: std::env::var("AGENTD_BENCH_POINTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100_000),
            queries: 500,
            phase: Duration::from_secs(8),
        }
    } else {
        Run {
            n: 2_000,
            queries: 20,
            phase: Duration::from_millis(300),
        }
    };
    // One thread: the client sends one request at a time, and a
    // multi-threaded client adds a hop between threads to every call that
    // is the client's cost, not the service's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // AGENTD_BENCH_ONLY=search, =clustered, =memory, =parallel, =peer or
    // =million runs one part.
    let only = std::env::var("AGENTD_BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        if only == "clustered" {
            search_run("clustered", &run).await;
            return;
        }
        if only == "parallel" {
            parallel::parallel_run(&run).await;
            return;
        }
        if only == "million" {
            million::million_run(&run).await;
            return;
        }
        // agentd's side of the Chroma comparison: scripts/bench-memory.
        if only == "peer" || !full {
            peer::peer_run(&run).await;
            if full {
                return;
            }
        }
        if only != "memory" {
            search_run("normal", &run).await;
            if full {
                search_run("clustered", &run).await;
            }
        }
        if only != "search" {
            memory_run(&run).await;
            parallel::parallel_run(&run).await;
        }
    });
}
