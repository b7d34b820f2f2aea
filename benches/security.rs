//! What TLS with API keys, and what metrics, cost a call (issue #16).
//!
//! The real binary, started once per configuration, answers 100 concurrent
//! clients (one connection each) for a fixed time; the p50, p99 and rate
//! of the calls are compared against the same binary in plaintext without
//! keys or metrics, in the same run, configurations interleaved (A B A B)
//! so that drift hits both.
//!
//! - TLS + keys: Health/Check (no key needed, TLS alone) and a cached
//!   Embed (TLS and the key's lookup among 100 keys, its scope, its
//!   limits) against plaintext without keys.
//! - Metrics: a cached Embed and a Search (each call a new query vector,
//!   so no cache hit) with `--metrics-listen` on against off.
//!
//! `cargo bench --bench security -- --bench`; without `--bench` a short
//! smoke run (what `cargo test` does).

#[path = "../tests/suite/common/binary.rs"]
mod binary;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::pb::v1 as pb;
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::security::{KeyLimitSettings, NewKey, Scope, add_key};
use binary::{Binary, ConfigFile};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long and how wide each measurement is.
struct Run {
    clients: usize,
    phase: Duration,
    rounds: usize,
    /// Calls per second from all clients together, spread evenly (open
    /// loop, below saturation: latency, not queueing); `None`: each client
    /// calls again as soon as answered (closed loop, saturating).
    rate: Option<f64>,
}

/// One server configuration.
struct Setup {
    name: &'static str,
    args: Vec<String>,
    /// The CA to trust, when it serves TLS.
    ca: Option<Vec<u8>>,
    /// The key clients send, when it requires one.
    key: Option<String>,
}

#[derive(Clone, Copy)]
enum Call {
    Health,
    Embed,
    Search,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Health => "Health/Check",
            Call::Embed => "Embed (cached)",
            Call::Search => "Search (2k x 64, uncached)",
        }
    }
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
    /// The server's own CPU time (user + system) per call: its cost alone,
    /// without the client's share of the two cores.
    server_cpu_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

async fn connect(addr: std::net::SocketAddr, ca: Option<&[u8]>) -> Channel {
    let endpoint = match ca {
        Some(ca) => Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
    };
    endpoint.connect().await.unwrap()
}

/// An `authorization: Bearer <key>` value.
type Key = MetadataValue<tonic::metadata::Ascii>;

impl Setup {
    /// The header value its clients send, if it requires a key.
    fn header(&self) -> Option<Key> {
        self.key
            .as_ref()
            .map(|k| MetadataValue::try_from(format!("Bearer {k}")).unwrap())
    }
}

/// `message` as a request carrying `key`, if any.
fn keyed<T>(message: T, key: Option<&Key>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", key.clone());
    }
    request
}

/// One call of `call`, with `key` if any.
async fn once(channel: &Channel, call: Call, key: Option<&Key>, i: u64) {
    match call {
        Call::Health => {
            HealthClient::new(channel.clone())
                .check(keyed(HealthCheckRequest::default(), key))
                .await
                .unwrap();
        }
        Call::Embed => {
            let request = pb::EmbedRequest {
                inputs: vec!["the same short text, cached after its first call".into()],
                ..Default::default()
            };
            EmbeddingServiceClient::new(channel.clone())
                .embed(keyed(request, key))
                .await
                .unwrap();
        }
        Call::Search => {
            // A new vector each call: the search cache never answers.
            let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let values = (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 20_000) as f32 / 10_000.0 - 1.0
                })
                .collect();
            let request = pb::SearchRequest {
                collection: "bench".into(),
                k: 10,
                query: Some(pb::search_request::Query::Vector(pb::Vector { values })),
                ..Default::default()
            };
            MemoryServiceClient::new(channel.clone())
                .search(keyed(request, key))
                .await
                .unwrap();
        }
    }
}

/// `run.clients` clients calling `call` for `run.phase`.
async fn measure(server: &Binary, setup: &Setup, call: Call, run: &Run) -> Figures {
    let addr = server.addr;
    let key = setup.header();
    let mut channels = Vec::new();
    for _ in 0..run.clients {
        let channel = connect(addr, setup.ca.as_deref()).await;
        // Warm: the connection, and the embedding cache.
        once(&channel, call, key.as_ref(), 0).await;
        channels.push(channel);
    }
    let cpu_before = server.cpu_time();
    let deadline = Instant::now() + run.phase;
    let key = Arc::new(key);
    let (rate, clients) = (run.rate, run.clients);
    let tasks: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(c, channel)| {
            let key = Arc::clone(&key);
            tokio::spawn(async move {
                let mut took = Vec::new();
                let mut i = c as u64 * 1_000_000;
                // Open loop: this client's calls at a fixed pace, the
                // clients' phases spread over one interval.
                let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
                let mut next = Instant::now()
                    + interval.map_or(Duration::ZERO, |d| d.mul_f64(c as f64 / clients as f64));
                while Instant::now() < deadline {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += interval;
                    }
                    let began = Instant::now();
                    once(&channel, call, key.as_ref().as_ref(), i).await;
                    took.push(began.elapsed());
                    i += 1;
                }
                took
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    all.sort();
    Figures {
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        per_second: all.len() as f64 / run.phase.as_secs_f64(),
        server_cpu_us: cpu.as_secs_f64() * 1e6 / all.len() as f64,
    }
}

/// A CA and a server certificate for localhost, as PEM files in `dir`:
/// the CA's PEM.
fn certificates(dir: &Path) -> Vec<u8> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
    ca.pem().into_bytes()
}

/// 100 keys in a keys file (a realistic lookup), the last one returned.
fn keys(path: &Path) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let made =
            NewKey::generate(Scope::Admin, vec![], None, KeyLimitSettings::default()).unwrap();
        add_key(path, made.entry).unwrap();
        last = made.secret;
    }
    last
}

/// Starts `setup` and fills the search collection (2,000 × 64).
async fn start(dir: &Path, setup: &Setup) -> Binary {
    let data = dir.join(format!("data-{}", setup.name.replace(' ', "-")));
    let mut args: Vec<&str> = setup.args.iter().map(String::as_str).collect();
    let config = dir.join("agentd.toml");
    args.extend([
        "--config",
        config.to_str().unwrap(),
        "--disable",
        "query,agents",
    ]);
    let server = Binary::spawn(&data, &args, Stdio::null());
    server.wait_listening().await;
    let key = setup.header();
    let channel = connect(server.addr, setup.ca.as_deref()).await;
    let mut memory = MemoryServiceClient::new(channel);
    let create = pb::CreateCollectionRequest {
        name: "bench".into(),
        dimensions: 64,
        metric: pb::Metric::L2 as i32,
        ..Default::default()
    };
    memory
        .create_collection(keyed(create, key.as_ref()))
        .await
        .unwrap();
    let points = (0..2_000u64)
        .map(|i| pb::PointInput {
            id: format!("p{i}"),
            data: Some(pb::point_input::Data::Vector(pb::Vector {
                values: (0..64)
                    .map(|d| ((i * 7 + d * 13) % 101) as f32 / 101.0)
                    .collect(),
            })),
            payload: None,
        })
        .collect();
    let upsert = pb::UpsertRequest {
        collection: "bench".into(),
        points,
    };
    memory.upsert(keyed(upsert, key.as_ref())).await.unwrap();
    // Wait for the embedding model (the hash one: instant) to be served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
}

/// Measures `calls` on each of `setups`, interleaved, `run.rounds` times;
/// prints one row per (call, setup) with the median of the rounds.
async fn compare(dir: &Path, title: &str, setups: &[Setup], calls: &[Call], run: &Run) {
    let mut servers = Vec::new();
    for setup in setups {
        servers.push(start(dir, setup).await);
    }
    let pace = run
        .rate
        .map_or("each calling again when answered".to_owned(), |r| {
            format!("{r:.0} calls/s in all, evenly paced")
        });
    println!(
        "\n{title} ({} clients, {pace}, {:?} per measurement, {} rounds)\n",
        run.clients, run.phase, run.rounds
    );
    println!(
        "| call | server | p50 µs | p99 µs | calls/s | server CPU µs/call | p50 vs first | server CPU vs first |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &call in calls {
        let mut rows: Vec<Vec<Figures>> = setups.iter().map(|_| Vec::new()).collect();
        for _ in 0..run.rounds {
            for (i, setup) in setups.iter().enumerate() {
                rows[i].push(measure(&servers[i], setup, call, run).await);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut base = None;
        for (i, setup) in setups.iter().enumerate() {
            let p50 = median(&mut rows[i].iter().map(|f| f.p50_us).collect());
            let p99 = median(&mut rows[i].iter().map(|f| f.p99_us).collect());
            let rate = median(&mut rows[i].iter().map(|f| f.per_second).collect());
            let cpu = median(&mut rows[i].iter().map(|f| f.server_cpu_us).collect());
            let (base_p50, base_cpu) = *base.get_or_insert((p50, cpu));
            println!(
                "| {} | {} | {p50:.0} | {p99:.0} | {rate:.0} | {cpu:.1} | {:+.1}% | {:+.1}% |",
                call.name(),
                setup.name,
                (p50 / base_p50 - 1.0) * 100.0,
                (cpu / base_cpu - 1.0) * 100.0
            );
        }
    }
    for server in servers {
        server.stop();
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let run = if full {
        Run {
            // AGENTD_BENCH_CLIENTS changes the concurrency.
            clients: std::env::var("AGENTD_BENCH_CLIENTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100),
            phase: Duration::from_secs(5),
            rounds: 3,
            // AGENTD_BENCH_RATE=N paces the clients to N calls/s in all.
            rate: std::env::var("AGENTD_BENCH_RATE")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    } else {
        Run {
            clients: 2,
            phase: Duration::from_millis(200),
            rounds: 1,
            rate: None,
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        ConfigFile::new().hash_embeddings().write(dir.path());
        let ca = certificates(dir.path());
        let keys_file = dir.path().join("keys.toml");
        let key = keys(&keys_file);
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let plain = || Setup {
            name: "plaintext, no keys",
            args: vec![],
            ca: None,
            key: None,
        };
        let tls_args = vec![
            "--tls-cert".to_owned(),
            path("server.pem"),
            "--tls-key".into(),
            path("server-key.pem"),
        ];
        // The audit log is off: reads are not audited anyway.
        let key_args = vec![
            "--api-keys-file".to_owned(),
            keys_file.to_str().unwrap().into(),
            "--audit-log".into(),
            "off".into(),
        ];
        let keyed = Setup {
            name: "plaintext + API key",
            args: key_args.clone(),
            ca: None,
            key: Some(key.clone()),
        };
        let tls = Setup {
            name: "TLS, no keys",
            args: tls_args.clone(),
            ca: Some(ca.clone()),
            key: None,
        };
        let secure = Setup {
            name: "TLS + API key",
            args: [tls_args, key_args].concat(),
            ca: Some(ca),
            key: Some(key),
        };
        // AGENTD_BENCH_ONLY=keys or =metrics runs one of the two.
        let only = std::env::var("AGENTD_BENCH_ONLY").unwrap_or_default();
        if only != "metrics" {
            compare(
                dir.path(),
                "TLS + API keys against plaintext without keys",
                &[plain(), keyed, tls, secure],
                &[Call::Health, Call::Embed],
                &run,
            )
            .await;
        }
        if only == "keys" {
            return;
        }
        let metered = Setup {
            name: "metrics on",
            args: vec!["--metrics-listen".into(), "127.0.0.1:0".into()],
            ca: None,
            key: None,
        };
        compare(
            dir.path(),
            "Metrics recording on against off",
            &[
                Setup {
                    name: "metrics off",
                    ..plain()
                },
                metered,
            ],
            &[Call::Embed, Call::Search],
            &run,
        )
        .await;
    });
}
