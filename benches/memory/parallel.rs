//! Many clients on one collection, with and without a writer beside them
//! (`AGENTD_BENCH_ONLY=parallel`, also part of the full run).
//!
//! One loaded, merged HNSW collection (clustered vectors, the server's
//! default index) and timed phases (`Run::phase` each): one client, then
//! 16 concurrent clients (each its own connection), each alone and then
//! again while a writer upserts [`WRITE_BATCH`]-point batches paced at each
//! of [`WRITE_RATES`] points/s into the same collection. The result cache is
//! off, so the clients cycle through a fixed set of distinct queries and
//! every search reaches the index. The CPU time of this process (the
//! clients and the writer) and of the server are read from /proc around
//! each phase, so the table says how the two cores were shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;

use super::binary::{Binary, ConfigFile};
use super::{
    DIMS, K, Run, create_default, dataset, percentile, settled, stats, upload, vector_points,
    vector_search,
};

/// Concurrent clients in the parallel phases.
const CLIENTS: usize = 16;
/// The writer's paces, points per second: one the background merge keeps
/// up with on 2 cores beside the searches, and the 5,000.
const WRITE_RATES: [usize; 2] = [1_000, 5_000];
/// Points per Upsert of the writer.
const WRITE_BATCH: usize = 100;

/// One search as the client timed it, then as the server did (queue,
/// compute, total).
type Sample = [Duration; 4];

/// What one phase measured.
struct Phase {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server's own account (SearchResponse.timing), p99 in ms: time
    /// waiting for a thread and the collection's lock, computing, and from
    /// receiving the request to sending the answer.
    queue_p99_ms: f64,
    compute_p99_ms: f64,
    total_p99_ms: f64,
    /// Cores used by this process (clients, writer) and by the server.
    client_cores: f64,
    server_cores: f64,
    /// Points the writer had acknowledged per second, and the most points
    /// the server's fresh segment held at one look.
    written_rate: f64,
    most_fresh: u64,
}

pub async fn parallel_run(run: &Run) {
    let data = dataset("clustered", run.n, 1);
    let queries = dataset("clustered", 4_000.min(run.n), 7);
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigFile::new()
        .raw("[memory]\nsearch_cache_bytes = 0")
        .write(dir.path());
    let config = config.to_str().unwrap();
    let (server, channel) = Binary::start_with(
        &dir.path().join("data"),
        &["--disable", "embedding,query,agents", "--config", config],
    )
    .await;
    let mut c = MemoryServiceClient::new(channel.clone());
    create_default(&mut c, "bench").await;
    upload(&mut c, "bench", &data).await;
    settled(&mut c, "bench").await;
    // Warm the connection and the index's pages.
    for q in queries.chunks(DIMS).take(200) {
        c.search(vector_search("bench", q, None)).await.unwrap();
    }

    let phase = |clients, rate| timed(&server, &channel, &queries, run.phase, clients, rate);
    let mut rows = Vec::new();
    for clients in [1, CLIENTS] {
        let label = if clients == 1 {
            "1 client".to_owned()
        } else {
            format!("{clients} clients")
        };
        // Each phase starts with the graph holding every point.
        settled(&mut c, "bench").await;
        rows.push((label.clone(), phase(clients, None).await));
        for rate in WRITE_RATES {
            settled(&mut c, "bench").await;
            rows.push((
                format!("{label}, writer at {rate}/s"),
                phase(clients, Some(rate)).await,
            ));
        }
    }
    let s = stats(&mut c, "bench").await;
    server.stop();

    println!(
        "\n### parallel: {} x {DIMS} clustered, the default HNSW, k = {K}, \
         {:.1}-second phases, result cache off\n",
        run.n,
        run.phase.as_secs_f64()
    );
    println!(
        "| phase | searches/s | p50 (ms) | p99 (ms) | server's p99: queue / compute / total (ms) | \
         cores: clients + writer / server | writer (points/s acknowledged) | most fresh points seen |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, p) in &rows {
        println!(
            "| {label} | {:.0} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} | {:.2} / {:.2} | {} | {} |",
            p.qps,
            p.p50_ms,
            p.p99_ms,
            p.queue_p99_ms,
            p.compute_p99_ms,
            p.total_p99_ms,
            p.client_cores,
            p.server_cores,
            if p.written_rate > 0.0 {
                format!("{:.0}", p.written_rate)
            } else {
                "—".into()
            },
            p.most_fresh
        );
    }
    let per = WRITE_RATES.len() + 1;
    let (one, many) = (&rows[0].1, &rows[per].1);
    println!(
        "\n{CLIENTS} clients / 1 client: {:.2}x searches/s; {} points at the end",
        many.qps / one.qps,
        s.points_count
    );
    for (i, rate) in WRITE_RATES.iter().enumerate() {
        println!(
            "p99 with the writer at {rate}/s / without: {:.2}x (1 client), {:.2}x ({CLIENTS} clients)",
            rows[1 + i].1.p99_ms / one.p99_ms,
            rows[per + 1 + i].1.p99_ms / many.p99_ms,
        );
    }
}

/// Own CPU time (this process: clients and writer), user and system.
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// One phase: `clients` connections searching in a loop for `phase`,
/// with the writer beside them at `write_rate` points/s if given.
async fn timed(
    server: &Binary,
    channel: &Channel,
    queries: &[f32],
    phase: Duration,
    clients: usize,
    write_rate: Option<usize>,
) -> Phase {
    let connections = if clients == 1 {
        vec![MemoryServiceClient::new(channel.clone())]
    } else {
        super::clients(server.addr, clients).await
    };
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let most_fresh = Arc::new(AtomicU64::new(0));
    // The writer is another agent: its own connection (on the searching
    // client's, the searches' frames could queue behind its 150 KB
    // Upserts) and its own thread (on the clients' one thread, each
    // Upsert's encoding held the searches' answers back: ~2 ms of the
    // clients' p99 beside a 1,000 points/s writer that the server's own
    // timing did not see).
    let writing = write_rate.map(|rate| {
        let (done, written, most_fresh) = (done.clone(), written.clone(), most_fresh.clone());
        let addr = server.addr;
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(write_paced(
                    addr,
                    clients,
                    rate,
                    &done,
                    &written,
                    &most_fresh,
                ))
        })
    });
    let (client_before, server_before) = (own_cpu(), server.cpu_time());
    let started = Instant::now();
    let n = queries.len() / DIMS;
    let times: Vec<Vec<Sample>> =
        futures::future::join_all(connections.into_iter().enumerate().map(|(i, mut c)| {
            // Each client starts at its own place in the query set.
            let start = i * n / clients;
            async move {
                let mut times = Vec::new();
                let mut at = start;
                while started.elapsed() < phase {
                    let q = &queries[(at % n) * DIMS..(at % n + 1) * DIMS];
                    let t = Instant::now();
                    let r = c
                        .search(vector_search("bench", q, None))
                        .await
                        .unwrap()
                        .into_inner();
                    let took = t.elapsed();
                    let timing = r.timing.unwrap_or_default();
                    let ms = |d: Option<prost_types::Duration>| {
                        d.and_then(|d| Duration::try_from(d).ok())
                            .unwrap_or_default()
                    };
                    times.push([took, ms(timing.queue), ms(timing.compute), ms(timing.total)]);
                    at += 1;
                }
                times
            }
        }))
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (client_cpu, server_cpu) = (own_cpu() - client_before, server.cpu_time() - server_before);
    done.store(true, Ordering::Relaxed);
    if let Some(w) = writing {
        w.join().unwrap();
    }
    let times: Vec<Sample> = times.into_iter().flatten().collect();
    let sorted = |at: usize| {
        let mut v: Vec<Duration> = times.iter().map(|t| t[at]).collect();
        v.sort();
        v
    };
    let (total, queue, compute, server) = (sorted(0), sorted(1), sorted(2), sorted(3));
    Phase {
        qps: times.len() as f64 / elapsed,
        p50_ms: percentile(&total, 0.5),
        p99_ms: percentile(&total, 0.99),
        queue_p99_ms: percentile(&queue, 0.99),
        compute_p99_ms: percentile(&compute, 0.99),
        total_p99_ms: percentile(&server, 0.99),
        client_cores: client_cpu.as_secs_f64() / elapsed,
        server_cores: server_cpu.as_secs_f64() / elapsed,
        written_rate: written.load(Ordering::Relaxed) as f64 / elapsed,
        most_fresh: most_fresh.load(Ordering::Relaxed),
    }
}

/// The writer of a phase: [`WRITE_BATCH`]-point Upserts paced at `rate`
/// points/s until `done`, counting the points acknowledged and the most
/// fresh points seen.
async fn write_paced(
    addr: std::net::SocketAddr,
    clients: usize,
    rate: usize,
    done: &AtomicBool,
    written: &AtomicU64,
    most_fresh: &AtomicU64,
) {
    let mut c = super::clients(addr, 1).await.pop().unwrap();
    let extra = dataset("clustered", WRITE_BATCH * 50, 9);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(WRITE_BATCH as f64 / rate as f64));
    // Behind after a slow call: catch up at once, as a steady producer
    // would (its queue grew meanwhile).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut batch = 0usize;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let first = (batch % 50) * WRITE_BATCH;
        // New ids each batch and phase: the collection grows, as an
        // agent's memory does.
        let points = vector_points(
            &extra[first * DIMS..(first + WRITE_BATCH) * DIMS],
            &format!("w{clients}-{rate}-"),
            batch * WRITE_BATCH,
        );
        c.upsert(UpsertRequest {
            collection: "bench".into(),
            points,
        })
        .await
        .unwrap();
        written.fetch_add(WRITE_BATCH as u64, Ordering::Relaxed);
        batch += 1;
        if batch.is_multiple_of(10) {
            let s = stats(&mut c, "bench").await;
            most_fresh.fetch_max(s.fresh_points, Ordering::Relaxed);
        }
    }
}
