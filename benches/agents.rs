//! The agents engine, measured from a client against the release binary in
//! its own process, with the fake OpenAI-compatible provider of the tests
//! (tests/suite/common/fake_llm.rs) on loopback:
//!
//! - **spawn 5**: Spawn of 5 agents over gRPC (p50/p99), and Spawn of
//!   1,000 in one call: the client's time, and the server's (its handler's
//!   time from its JSON debug log, on a server of its own);
//! - **spawn 5 and give each a task**: from the Spawn call to the provider
//!   receiving the fifth task's request (the first token follows at once);
//! - **dispatch to an idle worker**: SubmitTask sent → the assignment
//!   received on an idle worker's Work stream (p50/p99);
//! - **throughput with 100 workers**: one process holding 100 Work streams
//!   that answer each lease at once; tasks submitted by 16 clients; tasks
//!   per second from the first submission to the last acknowledged result
//!   (each task durable: submitted, assigned and ended in the store);
//! - **1,000 tasks over 100 internal agents** (concurrency 10 each) on the
//!   fake (300 words, 2 ms apart), against the same 1,000 Sessions run
//!   directly as queries, same server, same run;
//! - **event fan-out**: 100 WatchEvents streams while a worker's progress
//!   reports make 1,000 events/s; each watcher's lag (its receive time
//!   against the event's time) and gaps in its ids.
//!
//! `cargo bench --bench agents` writes JSON to `$AGENTD_BENCH_OUT` (or
//! stdout); under `cargo test` it runs each part briefly.

#[path = "../tests/suite/common/binary.rs"]
mod binary;
#[path = "../tests/suite/common/fake_llm.rs"]
mod fake_llm;
#[path = "common/sessions.rs"]
mod sessions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::work_request::Message;
use agentd::pb::v1::work_response::Directive;
use agentd::pb::v1::*;
use binary::{Binary, ConfigFile};
use fake_llm::{ANSWER, FakeLlm};
use serde_json::json;
use tokio::sync::mpsc;
use tonic::transport::Channel;

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn client(channel: &Channel) -> AgentServiceClient<Channel> {
    AgentServiceClient::new(channel.clone())
}

async fn register(c: &mut AgentServiceClient<Channel>, name: &str, model: &str, limit: u32) {
    c.register_spec(RegisterSpecRequest {
        spec: Some(AgentSpec {
            name: name.into(),
            model: model.into(),
            capabilities: vec![name.into()],
            concurrency_limit: limit,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
}

fn to_agent(id: &str, prompt: &str) -> SubmitTaskRequest {
    SubmitTaskRequest {
        target: Some(TaskTarget {
            target: Some(task_target::Target::AgentId(id.into())),
        }),
        prompt: prompt.into(),
        ..Default::default()
    }
}

/// A worker stream driven by hand.
struct Stream {
    tx: mpsc::UnboundedSender<WorkRequest>,
    rx: tonic::Streaming<WorkResponse>,
    agent_id: String,
}

async fn connect_worker(channel: &Channel, spec: &str) -> Stream {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tx.send(WorkRequest {
        message: Some(Message::Hello(WorkerHello {
            spec_name: spec.into(),
            ..Default::default()
        })),
    })
    .unwrap();
    let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut responses = client(channel).work(requests).await.unwrap().into_inner();
    let Some(Directive::Registered(r)) = responses.message().await.unwrap().unwrap().directive
    else {
        panic!("not registered")
    };
    Stream {
        tx,
        rx: responses,
        agent_id: r.agent_id,
    }
}

impl Stream {
    async fn assignment(&mut self) -> Task {
        loop {
            match self.rx.message().await.unwrap().unwrap().directive.unwrap() {
                Directive::Assign(a) => return a.task.unwrap(),
                _ => continue,
            }
        }
    }

    fn result(&self, task: &Task) {
        let _ = self.tx.send(WorkRequest {
            message: Some(Message::Result(TaskResult {
                task_id: task.id.clone(),
                attempt: task.attempt,
                output_text: "ok".into(),
                ..Default::default()
            })),
        });
    }
}

async fn spawn_latency(channel: &Channel, runs: usize) -> (Vec<f64>, f64) {
    let mut c = client(channel);
    register(&mut c, "spawned", "fake", 1).await;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        c.spawn(SpawnRequest {
            spec_name: "spawned".into(),
            count: 5,
            ..Default::default()
        })
        .await
        .unwrap();
        samples.push(ms(t.elapsed()));
    }
    let t = Instant::now();
    let many = c
        .spawn(SpawnRequest {
            spec_name: "spawned".into(),
            count: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(many.len(), 1000);
    (samples, ms(t.elapsed()))
}

/// Spawn of 1,000 agents in one call, `runs` times, on a server that logs
/// each RPC's time in its handler (JSON, debug): (client ms, server ms).
async fn spawn_1000_server_side(fake: &FakeLlm, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), fake);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let log_path = dir.path().join("agentd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--log-format",
        "json",
        "--log",
        "agentd=debug",
    ];
    let (server, channel) = Binary::start_logging(&data, &args, log).await;
    let mut c = client(&channel);
    register(&mut c, "many", "fake", 1).await;
    let mut client_ms = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let made = c
            .spawn(SpawnRequest {
                spec_name: "many".into(),
                count: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .agents;
        client_ms.push(ms(t.elapsed()));
        assert_eq!(made.len(), 1000);
    }
    drop(c);
    drop(channel);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let server_ms: Vec<f64> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"] == "rpc finished" && v["span"]["method"] == "/agentd.v1.AgentService/Spawn"
        })
        .filter_map(|v| v["elapsed_ms"].as_f64())
        .collect();
    assert_eq!(server_ms.len(), runs, "one logged Spawn per call");
    (client_ms, server_ms)
}

/// Spawn 5 and give each a task: Spawn sent → the provider has all 5
/// requests.
async fn spawn_and_run(channel: &Channel, fake: &FakeLlm, runs: usize) -> Vec<f64> {
    let mut c = client(channel);
    register(&mut c, "runner", "fake", 1).await;
    let mut samples = Vec::new();
    for run in 0..runs {
        let before = fake.requests().len();
        let t = Instant::now();
        let agents = c
            .spawn(SpawnRequest {
                spec_name: "runner".into(),
                count: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .agents;
        let mut submits = Vec::new();
        for a in &agents {
            let mut c = c.clone();
            let r = to_agent(&a.id, &format!("run {run}"));
            submits.push(tokio::spawn(async move { c.submit_task(r).await.unwrap() }));
        }
        for s in submits {
            s.await.unwrap();
        }
        loop {
            let received = fake.requests();
            if received.len() >= before + 5 {
                samples.push(ms(received[before + 4].at.duration_since(t)));
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        for a in agents {
            c.stop_agent(StopAgentRequest {
                id: a.id,
                cancel_tasks: true,
            })
            .await
            .unwrap();
        }
    }
    samples
}

async fn dispatch_latency(channel: &Channel, runs: usize) -> Vec<f64> {
    let mut c = client(channel);
    register(&mut c, "idle", "", 1).await;
    let mut w = connect_worker(channel, "idle").await;
    let mut samples = Vec::new();
    for i in 0..runs + 5 {
        let t = Instant::now();
        c.submit_task(to_agent(&w.agent_id, &format!("t{i}")))
            .await
            .unwrap();
        let task = w.assignment().await;
        if i >= 5 {
            samples.push(ms(t.elapsed()));
        }
        w.result(&task);
        // Wait for the slot to free before the next one.
        loop {
            let t = c
                .get_task(GetTaskRequest {
                    id: task.id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .task
                .unwrap();
            if t.state == TaskState::Succeeded as i32 {
                break;
            }
        }
    }
    samples
}

/// 100 worker streams answering at once; `tasks` submitted by 16 clients.
async fn throughput(channel: &Channel, workers: usize, tasks: usize) -> (f64, usize) {
    let mut c = client(channel);
    register(&mut c, "fleet", "", 4).await;
    let mut streams = Vec::new();
    for _ in 0..workers {
        streams.push(connect_worker(channel, "fleet").await);
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<Instant>();
    for mut s in streams {
        let (done, finished) = (done.clone(), finished_tx.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = s.rx.message().await {
                match m.directive {
                    Some(Directive::Assign(a)) => s.result(&a.task.unwrap()),
                    Some(Directive::Ack(ack)) if ack.of == "result" && ack.accepted => {
                        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if n == tasks {
                            let _ = finished.send(Instant::now());
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    let started = Instant::now();
    let per = tasks / 16;
    let mut submitters = Vec::new();
    for k in 0..16 {
        let mut c = c.clone();
        let n = if k == 15 { tasks - per * 15 } else { per };
        submitters.push(tokio::spawn(async move {
            for i in 0..n {
                c.submit_task(SubmitTaskRequest {
                    target: Some(TaskTarget {
                        target: Some(task_target::Target::Capability("fleet".into())),
                    }),
                    prompt: format!("noop {k}.{i}"),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for s in submitters {
        s.await.unwrap();
    }
    let end = tokio::time::timeout(Duration::from_secs(600), finished_rx.recv())
        .await
        .expect("every task done")
        .unwrap();
    let wall = end.duration_since(started).as_secs_f64();
    (
        tasks as f64 / wall,
        done.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// `n` tasks over `agents` internal agents (concurrency 10), and the same
/// number of Sessions run directly: (errors, wall s) each.
async fn internal_vs_sessions(channel: &Channel, agents: u32, n: usize) -> serde_json::Value {
    let mut c = client(channel);
    register(&mut c, "crowd", "fake", 10).await;
    let team = c
        .spawn(SpawnRequest {
            spec_name: "crowd".into(),
            count: agents,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(team.len(), agents as usize);
    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..n {
        let mut c = c.clone();
        jobs.push(tokio::spawn(async move {
            let mut r = SubmitTaskRequest {
                target: Some(TaskTarget {
                    target: Some(task_target::Target::Capability("crowd".into())),
                }),
                prompt: format!("task {i}"),
                ..Default::default()
            };
            r.max_attempts = 1;
            let task = c.submit_task(r).await.unwrap().into_inner().task.unwrap();
            let mut watch = c
                .watch_task(WatchTaskRequest { id: task.id })
                .await
                .unwrap()
                .into_inner();
            let mut last = None;
            while let Some(m) = watch.message().await.unwrap() {
                last = m.task;
            }
            let t = last.unwrap();
            // How long it waited from its submission to its start (its
            // query running on its agent), by the server's clock.
            let at = |ts: &Option<prost_types::Timestamp>| {
                ts.as_ref()
                    .map(|t| t.seconds as f64 * 1e3 + t.nanos as f64 / 1e6)
                    .unwrap_or(0.0)
            };
            let waited = at(&t.started_at) - at(&t.created_at);
            (t.state == TaskState::Succeeded as i32 && t.output_text == *ANSWER)
                .then_some(waited)
                .ok_or(format!("{:?} {}", t.state, t.output_text.len()))
        }));
    }
    let mut task_errors = 0;
    let mut waits = Vec::new();
    for j in jobs {
        match j.await.unwrap() {
            Ok(waited) => waits.push(waited),
            Err(_) => task_errors += 1,
        }
    }
    let tasks_wall = started.elapsed().as_secs_f64();
    let (wait_p50, wait_p99) = if waits.is_empty() {
        (0.0, 0.0)
    } else {
        (percentile(&waits, 0.5), percentile(&waits, 0.99))
    };

    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..n {
        let channel = channel.clone();
        jobs.push(tokio::spawn(async move {
            let start = StartCommand {
                model: "fake".into(),
                messages: vec![agentd::pb::v1::Message {
                    role: Role::User as i32,
                    content: format!("session {i}"),
                    ..Default::default()
                }],
                cache: Some(CachePolicy {
                    mode: CacheMode::Off as i32,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mut s = sessions::open(&channel, start).await;
            let mut ok = false;
            while let Some(kind) = s.next().await {
                if let Kind::Completed(c) = kind {
                    ok = c.text == *ANSWER;
                    s.close();
                }
            }
            ok
        }));
    }
    let mut session_errors = 0;
    for j in jobs {
        if !j.await.unwrap() {
            session_errors += 1;
        }
    }
    let sessions_wall = started.elapsed().as_secs_f64();
    json!({
        "tasks": n, "agents": agents,
        "task_errors": task_errors, "tasks_wall_s": tasks_wall,
        "task_start_wait_ms_p50": wait_p50, "task_start_wait_ms_p99": wait_p99,
        "session_errors": session_errors, "sessions_wall_s": sessions_wall,
        "ratio": tasks_wall / sessions_wall,
    })
}

/// `watchers` WatchEvents streams while progress reports make `rate`
/// events/s for `secs`: (lag samples ms, gaps, events seen per watcher).
async fn fan_out(channel: &Channel, watchers: usize, rate: u64, secs: u64) -> serde_json::Value {
    let mut c = client(channel);
    register(&mut c, "reporter", "", 1).await;
    let mut w = connect_worker(channel, "reporter").await;
    c.submit_task(to_agent(&w.agent_id, "report"))
        .await
        .unwrap();
    let task = w.assignment().await;
    let total = rate * secs;
    let mut handles = Vec::new();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    for _ in 0..watchers {
        let mut c = c.clone();
        let ready = ready_tx.clone();
        let task_id = task.id.clone();
        handles.push(tokio::spawn(async move {
            let mut stream = c
                .watch_events(WatchEventsRequest {
                    filter: Some(EventFilter {
                        task_id,
                        kinds: vec![AgentEventKind::TaskProgress as i32],
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let _ = ready.send(());
            let (mut lags, mut last, mut gaps, mut seen) = (Vec::new(), 0u64, 0u64, 0u64);
            while seen < total {
                let Ok(Ok(Some(m))) =
                    tokio::time::timeout(Duration::from_secs(10), stream.message()).await
                else {
                    break;
                };
                let e = m.event.unwrap();
                let t = e.time.unwrap();
                let sent = t.seconds * 1000 + t.nanos as i64 / 1_000_000;
                lags.push((now_ms() - sent) as f64);
                // Progress events of one task: each message names its step.
                let step: u64 = e.message.rsplit(' ').next().unwrap().parse().unwrap();
                if last != 0 && step != last + 1 {
                    gaps += 1;
                }
                last = step;
                seen += 1;
            }
            (lags, gaps, seen)
        }));
    }
    for _ in 0..watchers {
        ready_rx.recv().await;
    }
    let started = Instant::now();
    for i in 1..=total {
        let due = started + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let _ = w.tx.send(WorkRequest {
            message: Some(Message::Progress(TaskProgress {
                task_id: task.id.clone(),
                fraction: i as f32 / total as f32,
                message: format!("step {i}"),
                attempt: task.attempt,
            })),
        });
    }
    let produce_s = started.elapsed().as_secs_f64();
    let (mut lags, mut gaps, mut short) = (Vec::new(), 0, 0);
    for h in handles {
        let (l, g, seen) = h.await.unwrap();
        lags.extend(l);
        gaps += g;
        if seen < total {
            short += 1;
        }
    }
    w.result(&task);
    json!({
        "watchers": watchers, "events": total, "rate_per_s": total as f64 / produce_s,
        "lag_p50_ms": percentile(&lags, 0.5), "lag_p99_ms": percentile(&lags, 0.99),
        "gaps": gaps, "watchers_short": short,
    })
}

fn config(dir: &Path, fake: &FakeLlm) -> PathBuf {
    ConfigFile::new()
        .hash_embeddings()
        .raw("[query]\nretention = \"10s\"")
        .fake_model("fake", &fake.openai_url())
        .write(dir)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeLlm::start(Duration::from_millis(2)).await;
        let config = config(dir.path(), &fake);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (server, channel) =
            Binary::start_with(&data, &["--config", config.to_str().unwrap()]).await;

        // AGENTD_BENCH_ONLY=throughput, =crowd or =spawn runs that part
        // alone (for profiling).
        if std::env::var("AGENTD_BENCH_ONLY").as_deref() == Ok("crowd") {
            eprintln!("agentd pid {}", server.pid());
            let crowd = internal_vs_sessions(&channel, 100, if full { 1000 } else { 50 }).await;
            eprintln!("internal agents vs sessions: {crowd}");
            server.stop();
            return;
        }
        if std::env::var("AGENTD_BENCH_ONLY").as_deref() == Ok("spawn") {
            let (client, handler) = spawn_1000_server_side(&fake, if full { 20 } else { 2 }).await;
            eprintln!(
                "spawn 1,000: p50 {:.1} ms in the server's handler, {:.1} ms at the client",
                percentile(&handler, 0.5),
                percentile(&client, 0.5)
            );
            server.stop();
            return;
        }
        if std::env::var("AGENTD_BENCH_ONLY").as_deref() == Ok("throughput") {
            eprintln!("agentd pid {}", server.pid());
            let (per_s, done) = throughput(&channel, 100, if full { 5000 } else { 200 }).await;
            eprintln!("100 workers: {per_s:.0} tasks/s ({done} tasks)");
            server.stop();
            return;
        }
        let (spawn5, spawn1000) = spawn_latency(&channel, if full { 200 } else { 5 }).await;
        eprintln!(
            "spawn 5: p50 {:.3} ms, p99 {:.3} ms; spawn 1,000 in one call: {spawn1000:.1} ms",
            percentile(&spawn5, 0.5),
            percentile(&spawn5, 0.99)
        );
        let (spawn1000_client, spawn1000_server) =
            spawn_1000_server_side(&fake, if full { 20 } else { 2 }).await;
        eprintln!(
            "spawn 1,000: p50 {:.1} ms in the server's handler, {:.1} ms at the client",
            percentile(&spawn1000_server, 0.5),
            percentile(&spawn1000_client, 0.5)
        );
        let fast = FakeLlm::start(Duration::ZERO).await;
        let fast_dir = tempfile::tempdir().unwrap();
        let fast_config = self::config(fast_dir.path(), &fast);
        let fast_data = fast_dir.path().join("data");
        std::fs::create_dir_all(&fast_data).unwrap();
        let (fast_server, fast_channel) =
            Binary::start_with(&fast_data, &["--config", fast_config.to_str().unwrap()]).await;
        let first = spawn_and_run(&fast_channel, &fast, if full { 50 } else { 3 }).await;
        eprintln!(
            "spawn 5 + a task each → the provider has all 5 requests: p50 {:.3} ms, p99 {:.3} ms",
            percentile(&first, 0.5),
            percentile(&first, 0.99)
        );
        fast_server.stop();

        let dispatch = dispatch_latency(&channel, if full { 300 } else { 10 }).await;
        eprintln!(
            "dispatch to an idle worker: p50 {:.3} ms, p99 {:.3} ms",
            percentile(&dispatch, 0.5),
            percentile(&dispatch, 0.99)
        );
        // On a server of its own, as the peer gets a fresh Redis.
        let fleet_dir = tempfile::tempdir().unwrap();
        let fleet_config = self::config(fleet_dir.path(), &fake);
        let fleet_data = fleet_dir.path().join("data");
        std::fs::create_dir_all(&fleet_data).unwrap();
        let (fleet_server, fleet_channel) =
            Binary::start_with(&fleet_data, &["--config", fleet_config.to_str().unwrap()]).await;
        let (per_s, done) = throughput(&fleet_channel, 100, if full { 5000 } else { 200 }).await;
        eprintln!("100 workers: {per_s:.0} tasks/s ({done} tasks)");
        fleet_server.stop();
        // Also on a server of its own: the 1,000 tasks and the 1,000
        // sessions they are compared with run there one after the other.
        let crowd_dir = tempfile::tempdir().unwrap();
        let crowd_data = crowd_dir.path().join("data");
        std::fs::create_dir_all(&crowd_data).unwrap();
        let (crowd_server, crowd_channel) =
            Binary::start_with(&crowd_data, &["--config", fleet_config.to_str().unwrap()]).await;
        let crowd = internal_vs_sessions(&crowd_channel, 100, if full { 1000 } else { 50 }).await;
        eprintln!("internal agents vs sessions: {crowd}");
        crowd_server.stop();
        let fan = fan_out(&channel, 100, 1000, if full { 10 } else { 1 }).await;
        eprintln!("event fan-out: {fan}");

        let out = json!({
            "spawn5_p50_ms": percentile(&spawn5, 0.5),
            "spawn5_p99_ms": percentile(&spawn5, 0.99),
            "spawn1000_ms": spawn1000,
            "spawn1000_server_p50_ms": percentile(&spawn1000_server, 0.5),
            "spawn1000_client_p50_ms": percentile(&spawn1000_client, 0.5),
            "spawn5_and_run_p50_ms": percentile(&first, 0.5),
            "spawn5_and_run_p99_ms": percentile(&first, 0.99),
            "dispatch_p50_ms": percentile(&dispatch, 0.5),
            "dispatch_p99_ms": percentile(&dispatch, 0.99),
            "workers_tasks_per_s": per_s,
            "internal_vs_sessions": crowd,
            "fan_out": fan,
        });
        match std::env::var_os("AGENTD_BENCH_OUT") {
            Some(path) => std::fs::write(path, out.to_string()).unwrap(),
            None => println!("{out}"),
        }
        server.stop();
    });
}
