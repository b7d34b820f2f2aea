//! Reliability of the real binary under load, faults and shutdown
//! (issue #12): the local model refuses what its queue cannot hold at Start
//! and gives its CPU and threads back when work ends; SIGTERM exits within
//! the grace period with every query persisted; a full disk refuses writes
//! with STORAGE_FULL, says so in health, and recovers; SIGKILL loses no
//! acknowledged write; many clients on every service see no unexpected
//! error, and memory stays flat.
//!
//! These run in the test command at a small scale. `scripts/soak` runs them
//! at full scale (`AGENTD_SOAK=1`: 300 local sessions, a ten-minute soak)
//! and prints the figures RELIABILITY.md records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::common::binary::{Binary, ConfigFile};
use crate::common::connect;
use crate::common::fake_llm::FakeLlm;
use crate::common::sessions::{Session, start as fake_start};

/// Full scale when `AGENTD_SOAK` is set (scripts/soak).
fn soak() -> bool {
    std::env::var_os("AGENTD_SOAK").is_some()
}

fn gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(agentd::query::DEFAULT_LOCAL_MODEL)
}

/// An agentd.toml in `dir` with the local model (at most `max_queued`
/// waiting) and, given a fake, an OpenAI-compatible alias `oa` on it.
fn config_file(dir: &Path, max_queued: usize, fake: Option<&FakeLlm>) -> PathBuf {
    let mut config = ConfigFile::new()
        .raw(&format!(
            "[query]\nlocal_threads = 1\nlocal_max_queued = {max_queued}"
        ))
        .local_model("local", &gguf());
    if let Some(fake) = fake {
        config = config.fake_model("oa", &fake.openai_url());
    }
    config.write(dir)
}

fn local_start(max_tokens: u32) -> StartCommand {
    let mut start = fake_start("local");
    start.params = Some(GenerationParams {
        max_tokens,
        temperature: Some(0.0),
        ..Default::default()
    });
    start
}

/// How a session ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Completed,
    RefusedAtStart,
}

/// Runs one session to its end; anything but completing or a refusal at
/// Start with OVERLOADED panics (a late failure).
async fn session_to_end(channel: Channel, start: StartCommand) -> Ended {
    match Session::open(channel, start).await {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, "OVERLOADED", "{status:?}");
            Ended::RefusedAtStart
        }
        Ok(mut s) => {
            let events = s.finish().await;
            match events.last().and_then(|e| e.kind.as_ref()) {
                Some(Kind::Completed(_)) => Ended::Completed,
                other => panic!("a late failure: {other:?}"),
            }
        }
    }
}

/// Waits until the process's CPU use over `window` is under `limit` of
/// one core, within `within`; returns the last measured share.
async fn wait_idle(binary: &Binary, window: Duration, limit: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let before = binary.cpu_time();
        tokio::time::sleep(window).await;
        let share = (binary.cpu_time() - before).as_secs_f64() / window.as_secs_f64();
        if share < limit || Instant::now() > deadline {
            return share;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_overload_is_refused_at_start_and_the_process_returns_to_idle() {
    let (sessions, max_queued): (usize, usize) = if soak() { (300, 64) } else { (40, 8) };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), max_queued, None);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--disable",
        "memory,agents",
    ];
    let (binary, channel) = Binary::start_with(&dir.path().join("data"), &args).await;
    // The model loads in the background: one answer first.
    assert_eq!(
        session_to_end(channel.clone(), local_start(2)).await,
        Ended::Completed
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_threads = binary.threads();

    let began = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..sessions.div_ceil(50) {
        channels.push(connect(binary.addr).await.unwrap());
    }
    let tasks: Vec<_> = (0..sessions)
        .map(|i| tokio::spawn(session_to_end(channels[i / 50].clone(), local_start(8))))
        .collect();
    let mut peak_threads = 0;
    let (mut completed, mut refused) = (0, 0);
    for task in tasks {
        peak_threads = peak_threads.max(binary.threads());
        match task.await.expect("no session failed late") {
            Ended::Completed => completed += 1,
            Ended::RefusedAtStart => refused += 1,
        }
    }
    let took = began.elapsed();
    assert_eq!(completed + refused, sessions);
    // Those admitted before the model takes its first call fill the
    // queue; one more is admitted each time it takes the next.
    assert!(completed >= max_queued, "{completed} completed");
    drop(channels);

    // Within 2 s of the last session: the decode loop is idle and the
    // threads are back to where they were.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let threads = binary.threads();
    let cpu = wait_idle(&binary, Duration::from_secs(1), 0.05, Duration::ZERO).await;
    eprintln!(
        "local overload: {sessions} sessions, {completed} completed, {refused} refused at Start, \
         none failed late, in {took:?}; threads {baseline_threads} before, {peak_threads} at peak, \
         {threads} 2 s after; CPU {:.1}% of a core over the next second",
        cpu * 100.0
    );
    assert!(
        threads <= baseline_threads + 2,
        "threads {threads}, baseline {baseline_threads}"
    );
    assert!(
        cpu < 0.05,
        "CPU {:.1}% of a core after the load",
        cpu * 100.0
    );
    drop(channel);
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_running_and_queued_queries_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path(), 16, None);
    let grace = Duration::from_secs(2);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--disable",
        "memory,agents",
        "--shutdown-grace",
        "2s",
    ];
    let (binary, channel) = Binary::start_with(&data, &args).await;
    assert_eq!(
        session_to_end(channel.clone(), local_start(2)).await,
        Ended::Completed
    );
    // One answering, five waiting in the local model's queue.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let mut s = Session::open(channel.clone(), local_start(2000))
            .await
            .unwrap();
        s.until(|k| matches!(k, Kind::Delta(_) | Kind::Queued(_)))
            .await;
        sessions.push(s);
    }
    let ids: Vec<String> = sessions.iter().map(Session::query_id).collect();
    let (took, status) = tokio::task::spawn_blocking(move || binary.terminate_timed())
        .await
        .unwrap();
    eprintln!(
        "SIGTERM with 1 running and 5 queued local queries: exited in {took:?} (grace {grace:?})"
    );
    assert!(status.success(), "{status}");
    assert!(
        took <= grace + Duration::from_secs(1),
        "exited after {took:?}"
    );
    drop(sessions);
    drop(channel);

    // Each query was persisted as terminated by the shutdown.
    let (binary, channel) = Binary::start_with(&data, &args).await;
    let mut q = QueryControlServiceClient::new(channel.clone());
    for id in ids {
        let info = q
            .get_query(GetQueryRequest {
                query_id: id.clone(),
                include_text: false,
            })
            .await
            .unwrap()
            .into_inner()
            .query
            .unwrap();
        assert_eq!(info.state, QueryState::Terminated as i32, "{id}");
        let mut replay = q
            .attach(AttachRequest {
                query_id: id.clone(),
                from_seq: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(m) = replay.message().await.unwrap() {
            last = m.event.and_then(|e| e.kind);
        }
        match last {
            Some(Kind::Terminated(t)) => assert_eq!(t.reason, "shutdown", "{id}"),
            other => panic!("{id} ended with {other:?}"),
        }
    }
    drop((q, channel));
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (as root, else with passwordless sudo).
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mount = |sudo: bool| {
            let mut command = std::process::Command::new(if sudo { "sudo" } else { "mount" });
            if sudo {
                command.args(["-n", "mount"]);
            }
            command
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            mount(false) || mount(true),
            "the full-disk test mounts a small tmpfs: run the tests as root or with passwordless sudo"
        );
        // Writable by whoever runs the test.
        let _ = std::process::Command::new("chmod")
            .args(["777"])
            .arg(dir.path())
            .status();
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("sudo")
                .args(["-n", "umount"])
                .arg(self.dir.path())
                .status();
        }
    }
}

async fn memory_health(channel: &Channel) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "agentd.v1.MemoryService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_storage_full_and_recovers() {
    let disk = Tmpfs::mount(8 << 20);
    let data = disk.path().join("data");
    // Room the test gives back later.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 2 << 20]).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("agentd.log");
    let args = ["--disable", "embedding,query,agents"];
    let (binary, channel) =
        Binary::start_logging(&data, &args, std::fs::File::create(&log_path).unwrap()).await;
    let mut memory = MemoryServiceClient::new(channel.clone());
    let put = |key: String| PutRequest {
        namespace: "fill".into(),
        key,
        value: vec![7u8; 128 << 10],
        ..Default::default()
    };
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        match memory.put(put(format!("k{i}"))).await {
            Ok(_) => acknowledged.push(format!("k{i}")),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "STORAGE_FULL");
    // More writes are refused the same way; reads go on.
    for i in 0..5 {
        let again = memory.put(put(format!("again{i}"))).await.unwrap_err();
        assert_eq!(again.code(), Code::ResourceExhausted);
    }
    let first = memory
        .get(GetRequest {
            namespace: "fill".into(),
            key: acknowledged[0].clone(),
        })
        .await
        .unwrap();
    assert_eq!(first.into_inner().entry.unwrap().value.len(), 128 << 10);
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(memory_health(&channel).await, not_serving);

    // Space comes back: health follows within the probe interval and
    // writes are accepted again.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while memory_health(&channel).await != serving {
        assert!(
            Instant::now() < deadline,
            "health still NOT_SERVING with space free"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    memory.put(put("after".into())).await.unwrap();
    acknowledged.push("after".into());
    drop(memory);
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        log.matches("storage is full").count(),
        1,
        "one error line for the episode, however many writes failed:\n{log}"
    );
    assert!(log.contains("storage has space again"), "{log}");

    // Every acknowledged write is there after a restart.
    let (binary, channel) = Binary::start_with(&data, &args).await;
    let mut memory = MemoryServiceClient::new(channel);
    for key in &acknowledged {
        memory
            .get(GetRequest {
                namespace: "fill".into(),
                key: key.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged {key} lost: {e:?}"));
    }
    eprintln!(
        "full disk: {} writes acknowledged before STORAGE_FULL, all kept; recovered after space was freed",
        acknowledged.len() - 1
    );
    drop(memory);
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_key_value_writes_and_query_persistence_loses_nothing_acknowledged() {
    let fake = FakeLlm::start(Duration::from_millis(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path(), 8, Some(&fake));
    let args = ["--config", config.to_str().unwrap(), "--disable", "agents"];
    let (binary, channel) = Binary::start_with(&data, &args).await;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let finished_queries = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (channel, acknowledged) = (channel.clone(), Arc::clone(&acknowledged));
        writers.push(tokio::spawn(async move {
            let mut memory = MemoryServiceClient::new(channel);
            for i in 0.. {
                let key = format!("w{w}-{i}");
                let put = PutRequest {
                    namespace: "crash".into(),
                    key: key.clone(),
                    value: key.as_bytes().to_vec(),
                    ..Default::default()
                };
                if memory.put(put).await.is_err() {
                    return;
                }
                acknowledged.lock().unwrap().push(key);
            }
        }));
    }
    for _ in 0..2 {
        let (channel, finished) = (channel.clone(), Arc::clone(&finished_queries));
        writers.push(tokio::spawn(async move {
            let mut q = QueryControlServiceClient::new(channel);
            // Queries run to their end, one after another, until the kill
            // cuts the connection (the stream then errs: no panic here).
            loop {
                let mut short = fake_start("oa");
                short.params = Some(GenerationParams {
                    max_tokens: 5,
                    ..Default::default()
                });
                let request = SessionRequest {
                    command: Some(session_request::Command::Start(short)),
                };
                let Ok(response) = q.session(futures::stream::iter(vec![request])).await else {
                    return;
                };
                let mut events = response.into_inner();
                loop {
                    match events.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                finished.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || binary.kill())
        .await
        .unwrap();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    drop(channel);

    let (binary, channel) = Binary::start_with(&data, &args).await;
    let mut memory = MemoryServiceClient::new(channel.clone());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "only {} writes before the kill",
        acknowledged.len()
    );
    for key in &acknowledged {
        let got = memory
            .get(GetRequest {
                namespace: "crash".into(),
                key: key.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged {key} lost: {e:?}"))
            .into_inner();
        assert_eq!(got.entry.unwrap().value, key.as_bytes());
    }
    // Every query the store holds is whole: readable, finished, its log
    // ending in its final event.
    let mut q = QueryControlServiceClient::new(channel.clone());
    let listed = q
        .list_queries(ListQueriesRequest {
            state: 0,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    for info in &listed.queries {
        assert_ne!(info.state, QueryState::Running as i32, "{info:?}");
    }
    eprintln!(
        "SIGKILL: {} acknowledged writes all kept; {} queries finished before the kill, {} persisted, all whole",
        acknowledged.len(),
        finished_queries.load(Ordering::Relaxed),
        listed.queries.len()
    );
    drop((memory, q, channel));
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_on_every_service_see_no_unexpected_error_and_memory_stays_flat() {
    let (clients, seconds) = if soak() {
        (
            64,
            std::env::var("AGENTD_SOAK_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(600),
        )
    } else {
        (16, 6)
    };
    let fake = FakeLlm::start(Duration::from_millis(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), 8, Some(&fake));
    let args = ["--config", config.to_str().unwrap()];
    let (binary, channel) = Binary::start_with(&dir.path().join("data"), &args).await;
    let mut memory = MemoryServiceClient::new(channel.clone());
    memory
        .create_collection(CreateCollectionRequest {
            name: "load".into(),
            dimensions: 0,
            metric: Metric::Cosine as i32,
            embedding_model: "hash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = connect(binary.addr).await.unwrap();
        let (calls, errors) = (Arc::clone(&calls), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut embedding = EmbeddingServiceClient::new(channel.clone());
            let mut memory = MemoryServiceClient::new(channel.clone());
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let key = format!("c{c}-{}", n % 50);
                let result: Result<(), tonic::Status> = match n % 5 {
                    0 => embedding
                        .embed(EmbedRequest {
                            inputs: vec![format!("text {c} {n}")],
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    1 => memory
                        .put(PutRequest {
                            namespace: "load".into(),
                            key,
                            value: vec![1; 256],
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    2 => memory
                        .upsert(UpsertRequest {
                            collection: "load".into(),
                            points: vec![PointInput {
                                id: key,
                                data: Some(point_input::Data::Text(format!("note {c} {n}"))),
                                payload: None,
                            }],
                        })
                        .await
                        .map(drop),
                    3 => memory
                        .search(SearchRequest {
                            collection: "load".into(),
                            query: Some(search_request::Query::Text(format!("note {n}"))),
                            k: 5,
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    _ => {
                        let mut short = fake_start("oa");
                        short.params = Some(GenerationParams {
                            max_tokens: 4,
                            ..Default::default()
                        });
                        match Session::open(channel.clone(), short).await {
                            Ok(mut s) => {
                                let events = s.finish().await;
                                match events.last().and_then(|e| e.kind.as_ref()) {
                                    Some(Kind::Completed(_)) => Ok(()),
                                    other => Err(tonic::Status::internal(format!("{other:?}"))),
                                }
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = result {
                    errors.lock().unwrap().push(format!("{e:?}"));
                }
            }
        }));
    }
    let mut rss = Vec::new();
    let began = Instant::now();
    while Instant::now() < stop_at {
        rss.push((began.elapsed().as_secs(), binary.rss_bytes() / (1 << 20)));
        tokio::time::sleep(Duration::from_secs(if soak() { 10 } else { 1 })).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    rss.push((began.elapsed().as_secs(), binary.rss_bytes() / (1 << 20)));
    let errors = errors.lock().unwrap().clone();
    let calls = calls.load(Ordering::Relaxed);
    eprintln!(
        "load: {clients} clients, {seconds} s, {calls} calls ({:.0}/s) on Embed, Put, Upsert, Search, Session; \
         {} errors; RSS MiB over time (s, MiB): {rss:?}",
        calls as f64 / seconds as f64,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "unexpected errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(calls > clients as u64 * 10, "{calls} calls");
    if soak() {
        // Flat once the bounded caches (embeddings, searches, finished
        // queries) have filled: over the last third of the run, RSS grows
        // by at most 5% (a leak of a few MiB a second would show).
        let last = rss.last().unwrap().1;
        let at = rss.last().unwrap().0 * 2 / 3;
        let then = rss.iter().find(|(t, _)| *t >= at).map_or(last, |s| s.1);
        assert!(
            last as f64 <= then as f64 * 1.05 + 16.0,
            "RSS grew from {then} MiB at {at} s to {last} MiB"
        );
    }
    drop((memory, channel));
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();
}
