//! QueryControl sessions, measured from a client against the release
//! binary in its own process:
//!
//! - the local model (Gemma 3 270M Q4_K_M on candle): time to first token
//!   and decode tokens/s for the same prompts as the llama.cpp peer
//!   (scripts/python/bench_query_peer.py, llama-cpp-python in-process);
//! - time from sending Pause to receiving Paused, on the local model and on
//!   an OpenAI-compatible provider (the fake SSE server of the tests);
//! - a cache hit over gRPC: Start of an answered query → Completed;
//! - 1,000 concurrent sessions against the fake provider: errors, whole
//!   answers, and the server's resident memory before, at peak and after.
//!
//! `./scripts/bench-query` runs it with the peer and prints the table;
//! `cargo bench --bench query` alone writes JSON to `$AGENTD_BENCH_OUT` (or
//! stdout). Under `cargo test` (no `--bench`) it runs a few iterations of
//! each, so CI keeps it working.

#[path = "../tests/suite/common/binary.rs"]
mod binary;
#[path = "../tests/suite/common/fake_llm.rs"]
mod fake_llm;
#[path = "common/sessions.rs"]
mod sessions;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use binary::{Binary, ConfigFile};
use fake_llm::{ANSWER, FakeLlm};
use serde_json::json;
use sessions::open;
use tonic::transport::Channel;

/// Prompts of the local-model runs; bench_query_peer.py uses the same.
const PROMPTS: [&str; 5] = [
    "Tell me a story about a lighthouse keeper.",
    "Explain how tides work.",
    "Write a short letter to a friend about autumn.",
    "Describe a busy market in the morning.",
    "What makes a good cup of tea?",
];
/// Tokens generated per local run.
const LOCAL_TOKENS: u32 = 128;

fn start(model: &str, prompt: &str, max_tokens: u32, cache: CacheMode) -> StartCommand {
    StartCommand {
        model: model.into(),
        messages: vec![Message {
            role: Role::User as i32,
            content: prompt.into(),
            ..Default::default()
        }],
        params: Some(GenerationParams {
            max_tokens,
            temperature: Some(0.0),
            ..Default::default()
        }),
        cache: Some(CachePolicy {
            mode: cache as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Time to first token and decode rate of the local model.
async fn local_speed(channel: &Channel, runs: usize, tokens: u32) -> (f64, f64) {
    let mut ttft = Vec::new();
    let mut rates = Vec::new();
    for (i, prompt) in PROMPTS.iter().cycle().take(runs).enumerate() {
        let sent = Instant::now();
        let mut s = open(channel, start("local", prompt, tokens, CacheMode::Off)).await;
        let mut first = None;
        let mut deltas = 0u64;
        let mut output = 0;
        while let Some(kind) = s.next().await {
            match kind {
                Kind::Delta(_) => {
                    first.get_or_insert_with(Instant::now);
                    deltas += 1;
                }
                Kind::Completed(c) => {
                    output = c.usage.unwrap().output_tokens;
                    s.close();
                }
                Kind::Failed(f) => panic!("local run {i}: {f:?}"),
                _ => {}
            }
        }
        let done = Instant::now();
        let first = first.expect("a first token");
        ttft.push(ms(first - sent));
        // Tokens after the first, over the time after it.
        rates.push((output.max(deltas) - 1) as f64 / (done - first).as_secs_f64());
    }
    ttft.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    (percentile(&ttft, 0.5), percentile(&rates, 0.5))
}

/// Sending Pause after a few deltas → the Paused event, in ms.
async fn pause_latency(channel: &Channel, model: &str, runs: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..runs {
        let prompt = format!("{} ({i})", PROMPTS[i % PROMPTS.len()]);
        let mut s = open(channel, start(model, &prompt, 256, CacheMode::Off)).await;
        let mut sent = None;
        while let Some(kind) = s.next().await {
            match kind {
                Kind::Delta(d) if d.seq == 8 && sent.is_none() => {
                    sent = Some(Instant::now());
                    s.commands
                        .send(SessionRequest {
                            command: Some(Command::Pause(PauseCommand {})),
                        })
                        .await
                        .unwrap();
                }
                Kind::Paused(_) => {
                    out.push(ms(sent.unwrap().elapsed()));
                    s.commands
                        .send(SessionRequest {
                            command: Some(Command::Terminate(TerminateCommand::default())),
                        })
                        .await
                        .unwrap();
                    s.close();
                }
                _ => {}
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Start → Completed for an answer already in the result cache, in ms.
async fn cache_hits(channel: &Channel, runs: usize) -> Vec<f64> {
    let question = "What is in the cache?";
    let mut first = open(channel, start("fake", question, 0, CacheMode::Exact)).await;
    while let Some(kind) = first.next().await {
        if matches!(kind, Kind::Completed(_)) {
            first.close();
        }
    }
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let sent = Instant::now();
        let mut s = open(channel, start("fake", question, 0, CacheMode::Exact)).await;
        let mut hit = false;
        while let Some(kind) = s.next().await {
            match kind {
                Kind::CacheHit(_) => hit = true,
                Kind::Completed(_) => {
                    out.push(ms(sent.elapsed()));
                    s.close();
                }
                _ => {}
            }
        }
        assert!(hit, "the answer came from the cache");
    }
    out.sort_by(f64::total_cmp);
    out
}

/// `sessions` sessions at once against the fake provider: (errors, wall
/// seconds, RSS before / peak / after in MiB).
async fn concurrent(channel: &Channel, server: &Binary, sessions: usize) -> serde_json::Value {
    let before = server.rss_bytes();
    let peak = Arc::new(AtomicU64::new(before));
    let running = Arc::new(AtomicBool::new(true));
    let pid = server.pid();
    let sampler = {
        let (peak, running) = (peak.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let prompt = format!("session {i}");
                let mut s = open(&channel, start("fake", &prompt, 0, CacheMode::Off)).await;
                let mut text = None;
                while let Some(kind) = s.next().await {
                    match kind {
                        Kind::Completed(c) => {
                            text = Some(c.text);
                            s.close();
                        }
                        Kind::Failed(f) => return Err(format!("{f:?}")),
                        _ => {}
                    }
                }
                match text {
                    Some(t) if t == *ANSWER => Ok(()),
                    other => Err(format!("incomplete answer: {:?}", other.map(|t| t.len()))),
                }
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let after = server.rss_bytes();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    json!({
        "sessions": sessions,
        "errors": errors.len(),
        "first_error": errors.first(),
        "wall_s": wall,
        "rss_before_mib": mib(before),
        "rss_peak_mib": mib(peak.load(Ordering::Relaxed)),
        "rss_after_mib": mib(after),
    })
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

fn config(dir: &Path, fake: &FakeLlm) -> std::path::PathBuf {
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join(agentd::query::DEFAULT_LOCAL_MODEL);
    assert!(
        gguf.exists(),
        "{} missing: run scripts/fetch-models",
        gguf.display()
    );
    ConfigFile::new()
        .raw("[query]\nlocal_threads = 2")
        .local_model("local", &gguf)
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
        // Words 2 ms apart: 300 words take about 0.6 s per session.
        let fake = FakeLlm::start(Duration::from_millis(2)).await;
        let config = config(dir.path(), &fake);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (server, channel) = Binary::start_with(
            &data,
            &[
                "--disable",
                "embedding,memory,agents",
                "--config",
                config.to_str().unwrap(),
            ],
        )
        .await;

        let (local_runs, tokens) = if full {
            (PROMPTS.len(), LOCAL_TOKENS)
        } else {
            (1, 8)
        };
        // The first call waits for the model to load: not measured.
        local_speed(&channel, 1, 4).await;
        let (ttft, rate) = local_speed(&channel, local_runs, tokens).await;
        eprintln!("local: time to first token p50 {ttft:.1} ms, {rate:.1} tokens/s");

        let runs = if full { 20 } else { 2 };
        let pause_local = pause_latency(&channel, "local", runs).await;
        let pause_http = pause_latency(&channel, "fake", runs).await;
        eprintln!(
            "pause → paused p50: local {:.2} ms, openai {:.2} ms",
            percentile(&pause_local, 0.5),
            percentile(&pause_http, 0.5)
        );

        let hits = cache_hits(&channel, if full { 1000 } else { 10 }).await;
        eprintln!(
            "cache hit p50 {:.3} ms, p99 {:.3} ms",
            percentile(&hits, 0.5),
            percentile(&hits, 0.99)
        );

        let load = concurrent(&channel, &server, if full { 1000 } else { 20 }).await;
        eprintln!("concurrent: {load}");
        assert_eq!(load["errors"], 0, "{load}");

        let out = json!({
            "local_ttft_p50_ms": ttft,
            "local_tokens_per_s": rate,
            "local_tokens": tokens,
            "pause_local_p50_ms": percentile(&pause_local, 0.5),
            "pause_local_p99_ms": percentile(&pause_local, 0.99),
            "pause_openai_p50_ms": percentile(&pause_http, 0.5),
            "pause_openai_p99_ms": percentile(&pause_http, 0.99),
            "cache_hit_p50_ms": percentile(&hits, 0.5),
            "cache_hit_p99_ms": percentile(&hits, 0.99),
            "concurrent": load,
        });
        match std::env::var_os("AGENTD_BENCH_OUT") {
            Some(path) => std::fs::write(path, out.to_string()).unwrap(),
            None => println!("{out}"),
        }
        server.stop();
    });
}
