//! API keys, scopes, namespace limits, per-key limits, the audit log and
//! TLS, through the real binary: keys made with `agentd keys create`,
//! certificates made here (rcgen).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentd::pb::v1 as pb;
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::common::binary::{Binary, ConfigFile};
use crate::common::points::{point, search, vectors};

/// `agentd keys create --keys-file keys ARGS`: the key it prints.
fn create_key(keys: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["keys", "create", "--keys-file"])
        .arg(keys)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The id of the last key in the file (`agentd keys list`).
fn last_key_id(keys: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["keys", "list", "--keys-file"])
        .arg(keys)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().expect("a key listed");
    last.split('\t').next().unwrap().to_owned()
}

/// Adds the key to a request.
type AddKey = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
type Keyed = InterceptedService<Channel, AddKey>;

/// `channel` with `authorization: Bearer <key>` on every call.
fn keyed(channel: &Channel, key: &str) -> Keyed {
    let value: MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
    let add: AddKey = Box::new(move |mut request: Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
        Ok(request)
    });
    InterceptedService::new(channel.clone(), add)
}

/// Starts agentd with the hash embedder, every service, and `args`.
async fn start(dir: &Path, args: &[&str]) -> (Binary, Channel) {
    let config = ConfigFile::new().hash_embeddings().write(dir);
    let config = config.to_str().unwrap().to_owned();
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    Binary::start_with(&dir.join("data"), &all).await
}

/// Every method of the agentd contract: (path, name, client streams,
/// server streams).
fn contract() -> Vec<(String, String, bool, bool)> {
    let set = prost_types::FileDescriptorSet::decode(agentd::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file {
        for service in &file.service {
            for m in &service.method {
                methods.push((
                    format!("/{}.{}/{}", file.package(), service.name(), m.name()),
                    m.name().to_owned(),
                    m.client_streaming(),
                    m.server_streaming(),
                ));
            }
        }
    }
    methods
}

/// Calls `path` with an empty request (every field at its default; one
/// empty message on a client stream) holding `key`: the code it got.
/// A stream that opens counts as OK; a call still running after 10 s
/// too (it was admitted).
async fn probe(channel: &Channel, path: &str, streams: (bool, bool), key: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let path: http::uri::PathAndQuery = path.parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    fn with<T>(mut request: Request<T>, key: Option<&str>) -> Request<T> {
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("x-api-key", key.parse().unwrap());
        }
        request
    }
    let with_key = |request| with(request, key);
    let with_key_stream = |request| with(request, key);
    let call = async {
        grpc.ready().await.unwrap();
        let result = match streams {
            (false, false) => grpc
                .unary(with_key(Request::new(())), path, codec)
                .await
                .map(|_| ()),
            (false, true) => grpc
                .server_streaming(with_key(Request::new(())), path, codec)
                .await
                .map(|_| ()),
            (true, false) => grpc
                .client_streaming(
                    with_key_stream(Request::new(futures::stream::iter(vec![()]))),
                    path,
                    codec,
                )
                .await
                .map(|_| ()),
            (true, true) => grpc
                .streaming(
                    with_key_stream(Request::new(futures::stream::iter(vec![()]))),
                    path,
                    codec,
                )
                .await
                .map(|_| ()),
        };
        result.map_or_else(|s| s.code(), |()| Code::Ok)
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or(Code::Ok)
}

fn refused(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

#[tokio::test]
async fn every_rpc_needs_a_key_of_its_scope_and_health_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let read = create_key(&keys, &["--scope", "read"]);
    let write = create_key(&keys, &["--scope", "write"]);
    let admin = create_key(&keys, &["--scope", "admin"]);
    let (_server, channel) = start(dir.path(), &["--api-keys-file", keys.to_str().unwrap()]).await;

    // Load balancers probe health without a key.
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1);

    let methods = contract();
    assert!(methods.len() > 50);
    let mut least = Vec::new();
    for (path, name, client_streams, server_streams) in &methods {
        let streams = (*client_streams, *server_streams);
        let none = probe(&channel, path, streams, None).await;
        assert_eq!(none, Code::Unauthenticated, "{path} without a key");
        let bogus = probe(&channel, path, streams, Some("agentd_0000")).await;
        assert_eq!(bogus, Code::Unauthenticated, "{path} with an unknown key");
        let admitted = [
            !refused(probe(&channel, path, streams, Some(&read)).await),
            !refused(probe(&channel, path, streams, Some(&write)).await),
            !refused(probe(&channel, path, streams, Some(&admin)).await),
        ];
        // Scopes nest: what a lower key may call, a higher one may too;
        // an admin may call everything.
        assert!(admitted[2], "{path}: admin refused");
        assert!(
            !admitted[0] || admitted[1],
            "{path}: read admitted, write refused"
        );
        let scope = if admitted[0] {
            "read"
        } else if admitted[1] {
            "write"
        } else {
            "admin"
        };
        // Independent of the server's table: reads are reads, changes are
        // not, stats and collection/spec definitions are admin.
        let is_stats = name.ends_with("Stats");
        let is_read = [
            "Get", "List", "Count", "Search", "Watch", "Attach", "Embed", "Tokenize",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        let is_admin = is_stats
            || [
                "CreateCollection",
                "DeleteCollection",
                "RegisterSpec",
                "DeleteSpec",
            ]
            .contains(&name.as_str());
        let expected = if is_admin {
            "admin"
        } else if is_read {
            "read"
        } else {
            "write"
        };
        assert_eq!(scope, expected, "{path}");
        least.push((path.clone(), scope));
    }
    let writes = least.iter().filter(|(_, s)| *s == "write").count();
    assert!(writes >= 20, "{least:?}");

    // The error says what is missing, with an ErrorInfo reason.
    let err = MemoryServiceClient::new(keyed(&channel, &read))
        .put(pb::PutRequest {
            namespace: "n".into(),
            key: "k".into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("has scope read") && err.message().contains("needs write"),
        "{err:?}"
    );
    assert_eq!(
        err.get_error_details().error_info().unwrap().reason,
        "PERMISSION_DENIED"
    );
    let err = MemoryServiceClient::new(channel.clone())
        .get(pb::GetRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.get_error_details().error_info().unwrap().reason,
        "UNAUTHENTICATED"
    );
    assert!(err.message().contains("authorization: Bearer"), "{err:?}");
}

#[tokio::test]
async fn a_key_limited_to_namespaces_touches_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let admin = create_key(&keys, &["--scope", "admin"]);
    let team = create_key(
        &keys,
        &[
            "--scope",
            "admin",
            "--namespace",
            "team-a.",
            "--namespace",
            "shared",
        ],
    );
    let (_server, channel) = start(dir.path(), &["--api-keys-file", keys.to_str().unwrap()]).await;
    let mut everyone = MemoryServiceClient::new(keyed(&channel, &admin));
    let mut limited = MemoryServiceClient::new(keyed(&channel, &team));

    let put = |namespace: &str| pb::PutRequest {
        namespace: namespace.into(),
        key: "k".into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    limited.put(put("team-a.notes")).await.unwrap();
    limited.put(put("shared")).await.unwrap();
    let err = limited.put(put("team-b.notes")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("team-b.notes"), "{err:?}");
    everyone.put(put("team-b.notes")).await.unwrap();
    let err = limited
        .get(pb::GetRequest {
            namespace: "team-b.notes".into(),
            key: "k".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let collection = |name: &str| pb::CreateCollectionRequest {
        name: name.into(),
        dimensions: 4,
        metric: pb::Metric::L2 as i32,
        ..Default::default()
    };
    limited
        .create_collection(collection("team-a.docs"))
        .await
        .unwrap();
    let err = limited
        .create_collection(collection("team-b.docs"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    everyone
        .create_collection(collection("team-b.docs"))
        .await
        .unwrap();
    let listed: Vec<String> = limited
        .list_collections(pb::ListCollectionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collections
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(listed, ["team-a.docs"]);
    assert_eq!(
        everyone
            .list_collections(pb::ListCollectionsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .collections
            .len(),
        2
    );

    // Every call that names a collection checks it, the stream's first
    // message included, and nothing is written when refused.
    let v = vectors(3, 4, 7);
    let err = limited
        .upsert(pb::UpsertRequest {
            collection: "team-b.docs".into(),
            points: vec![point("p0", &v[0], 0.0)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let stream = futures::stream::iter(vec![pb::UpsertStreamRequest {
        collection: "team-b.docs".into(),
        points: vec![point("p1", &v[1], 0.0)],
    }]);
    let err = limited.upsert_stream(stream).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for denied in [
        limited
            .search(pb::SearchRequest {
                collection: "team-b.docs".into(),
                k: 1,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        limited
            .count(pb::CountRequest {
                collection: "team-b.docs".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        limited
            .delete_collection(pb::DeleteCollectionRequest {
                name: "team-b.docs".into(),
            })
            .await
            .map(|_| ()),
    ] {
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }
    let count = everyone
        .count(pb::CountRequest {
            collection: "team-b.docs".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 0, "refused writes wrote nothing");

    // Embeddings touch no namespace; queries and agents reach any, so a
    // limited key is refused them whatever its scope.
    EmbeddingServiceClient::new(keyed(&channel, &team))
        .embed(pb::EmbedRequest {
            inputs: vec!["hello".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = QueryControlServiceClient::new(keyed(&channel, &team))
        .list_queries(pb::ListQueriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("limited to namespaces"), "{err:?}");
}

#[tokio::test]
async fn keys_added_and_revoked_in_the_file_take_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let first = create_key(&keys, &["--scope", "read"]);
    let first_id = last_key_id(&keys);
    let (server, channel) = start(dir.path(), &["--api-keys-file", keys.to_str().unwrap()]).await;
    let list = |key: String| {
        let channel = channel.clone();
        async move {
            MemoryServiceClient::new(keyed(&channel, &key))
                .list_collections(pb::ListCollectionsRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    list(first.clone()).await.unwrap();
    let second = create_key(&keys, &["--scope", "read"]);
    let revoked = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["keys", "revoke", "--keys-file"])
        .arg(&keys)
        .arg(&first_id)
        .output()
        .unwrap();
    assert!(revoked.status.success());
    // Within the reload interval (1 s), without a signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while list(first.clone()).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the revoked key still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(first.clone()).await, Err(Code::Unauthenticated));
    list(second.clone()).await.unwrap();

    // A broken file leaves the keys in force.
    let good = std::fs::read_to_string(&keys).unwrap();
    std::fs::write(&keys, "[[keys]]\nid = ").unwrap();
    server.hangup();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    list(second.clone()).await.unwrap();
    std::fs::write(&keys, good).unwrap();

    // SIGHUP reloads at once (well inside the 1 s interval).
    let third = create_key(&keys, &["--scope", "read"]);
    server.hangup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while list(third.clone()).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new key not in force 5 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_over_its_limits_gets_resource_exhausted_with_retry_info_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let slow = create_key(
        &keys,
        &[
            "--scope",
            "read",
            "--requests-per-second",
            "2",
            "--burst",
            "2",
        ],
    );
    let streams = create_key(&keys, &["--scope", "read", "--max-streams", "1"]);
    let other = create_key(&keys, &["--scope", "read"]);
    let (_server, channel) = start(dir.path(), &["--api-keys-file", keys.to_str().unwrap()]).await;
    let mut client = EmbeddingServiceClient::new(keyed(&channel, &slow));
    let list = pb::ListModelsRequest::default();
    client.list_models(list).await.unwrap();
    client.list_models(list).await.unwrap();
    let err = client.list_models(list).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let details = err.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
    let delay = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_millis(500),
        "{delay:?}"
    );
    assert!(err.message().contains("2 requests/s"), "{err:?}");
    // Another key is not held back by this one.
    EmbeddingServiceClient::new(keyed(&channel, &other))
        .list_models(list)
        .await
        .unwrap();
    tokio::time::sleep(delay + Duration::from_millis(20)).await;
    client.list_models(list).await.unwrap();

    // One stream at a time for the second key.
    let mut agents =
        agentd::pb::v1::agent_service_client::AgentServiceClient::new(keyed(&channel, &streams));
    let open = agents
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap();
    let err = agents
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("1 streaming calls"), "{err:?}");
    // Unary calls are not streams.
    agents
        .list_specs(pb::ListSpecsRequest::default())
        .await
        .unwrap();
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match agents.watch_events(pb::WatchEventsRequest::default()).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the slot did not free: {e:?}"),
        }
    }
}

#[tokio::test]
async fn writes_admin_calls_and_refusals_are_audited_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let audit = dir.path().join("audit.jsonl");
    let reader = create_key(&keys, &["--scope", "read"]);
    let writer = create_key(&keys, &["--scope", "admin", "--name", "ci"]);
    let writer_id = last_key_id(&keys);
    let (server, channel) = start(
        dir.path(),
        &[
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    )
    .await;
    let mut client = MemoryServiceClient::new(keyed(&channel, &writer));
    client
        .create_collection(pb::CreateCollectionRequest {
            name: "docs".into(),
            dimensions: 4,
            metric: pb::Metric::L2 as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: vec![point("p0", &vectors(1, 4, 3)[0], 0.0)],
        })
        .await
        .unwrap();
    client
        .search(search("docs", &vectors(1, 4, 3)[0], 1))
        .await
        .unwrap();
    let _ = MemoryServiceClient::new(keyed(&channel, &reader))
        .delete_collection(pb::DeleteCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap_err();
    let _ = MemoryServiceClient::new(channel.clone())
        .count(pb::CountRequest {
            collection: "docs".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    server.stop();

    let text = std::fs::read_to_string(&audit).unwrap();
    for key in [&reader, &writer] {
        assert!(!text.contains(key.as_str()), "a key in the audit log");
        assert!(!text.contains(&key[7..]), "a key in the audit log");
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["method"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                l["code"].as_str().unwrap().to_owned(),
                l["resource"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expect = |m: &str, c: &str, r: &str| (m.to_owned(), c.to_owned(), r.to_owned());
    assert_eq!(
        summary,
        [
            expect("CreateCollection", "OK", "collection:docs"),
            expect("Upsert", "OK", "collection:docs"),
            expect("DeleteCollection", "PERMISSION_DENIED", ""),
            expect("Count", "UNAUTHENTICATED", ""),
        ],
        "the search (a read) is not audited"
    );
    assert_eq!(lines[0]["key"], writer_id.as_str());
    assert!(lines[3]["key"].is_null());
    assert!(lines[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        lines[0]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(lines[0]["time"].as_str().is_some());
}

/// A CA and a leaf certificate it signed, as PEM files in `dir`, named
/// `{name}-ca.pem`, `{name}.pem`, `{name}-key.pem`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, name: &str, subject: &str) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec![subject.to_owned(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, subject);
    let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();
    let files = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
    files
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<&Pki>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some(client) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&client.cert).unwrap(),
            std::fs::read(&client.key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn health(channel: Channel) -> Result<i32, Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn tls_serves_every_service_refuses_plaintext_and_swaps_certificates_live() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = pki(dir.path(), "server", "localhost");
    let keys = dir.path().join("keys.toml");
    let key = create_key(&keys, &["--scope", "read"]);
    let config = ConfigFile::new().hash_embeddings().write(dir.path());
    let (cert, tls_key) = (dir.path().join("live.pem"), dir.path().join("live-key.pem"));
    std::fs::copy(&server_pki.cert, &cert).unwrap();
    std::fs::copy(&server_pki.key, &tls_key).unwrap();
    let server = Binary::spawn(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            tls_key.to_str().unwrap(),
            "--api-keys-file",
            keys.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    server.wait_listening().await;

    let channel = tls_channel(server.addr, &server_pki.ca, None)
        .await
        .unwrap();
    assert_eq!(health(channel.clone()).await.unwrap(), 1);
    let models = EmbeddingServiceClient::new(keyed(&channel, &key))
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap();
    assert!(!models.into_inner().models.is_empty());

    // Plaintext on the TLS port gets nowhere.
    let plaintext = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    assert!(health(plaintext).await.is_err());
    // Nor does a client that does not trust the server's CA.
    let stranger = pki(dir.path(), "stranger", "localhost");
    let untrusting = tls_channel(server.addr, &stranger.ca, None).await;
    assert!(match untrusting {
        Err(_) => true,
        Ok(c) => health(c).await.is_err(),
    });

    // A renewed certificate (here from another CA) is used by new
    // connections; the open one keeps working.
    let renewed = pki(dir.path(), "renewed", "localhost");
    std::fs::copy(&renewed.key, &tls_key).unwrap();
    std::fs::copy(&renewed.cert, &cert).unwrap();
    server.hangup();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(c) = tls_channel(server.addr, &renewed.ca, None).await
            && health(c).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate not served after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        health(channel).await.unwrap(),
        1,
        "the open connection survived"
    );
    let old_ca = tls_channel(server.addr, &server_pki.ca, None).await;
    assert!(match old_ca {
        Err(_) => true,
        Ok(c) => health(c).await.is_err(),
    });
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = pki(dir.path(), "server", "localhost");
    let client_pki = pki(dir.path(), "client", "agent-1");
    let stranger = pki(dir.path(), "stranger", "agent-2");
    let config = ConfigFile::new().hash_embeddings().write(dir.path());
    let server = Binary::spawn(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            server_pki.cert.to_str().unwrap(),
            "--tls-key",
            server_pki.key.to_str().unwrap(),
            "--tls-client-ca",
            client_pki.ca.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    server.wait_listening().await;
    let fails = |c: Result<Channel, tonic::transport::Error>| async move {
        match c {
            Err(_) => true,
            Ok(c) => health(c).await.is_err(),
        }
    };
    assert!(
        fails(tls_channel(server.addr, &server_pki.ca, None).await).await,
        "no client certificate"
    );
    assert!(
        fails(tls_channel(server.addr, &server_pki.ca, Some(&stranger)).await).await,
        "a client certificate from another CA"
    );
    let channel = tls_channel(server.addr, &server_pki.ca, Some(&client_pki))
        .await
        .unwrap();
    assert_eq!(health(channel).await.unwrap(), 1);
}

#[tokio::test]
async fn a_server_without_keys_beyond_loopback_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let config = ConfigFile::new().hash_embeddings().write(dir.path());
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let data = dir.path().join("data");
    let mut server = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .args([
            "--config",
            config.to_str().unwrap(),
            "--disable",
            "query,agents",
            "--metrics-listen",
            "off",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("AGENTD_CONFIG")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("agentd serving")
    {
        assert!(Instant::now() < deadline, "did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("without API keys"), "{text}");
}

/// Runs one query on the fake model to its end, holding `key`.
async fn run_query(channel: &Channel, key: &str) -> Result<usize, Status> {
    use agentd::pb::v1::session_request::Command as SessionCommand;
    let request = pb::SessionRequest {
        command: Some(SessionCommand::Start(crate::common::sessions::start(
            "fake",
        ))),
    };
    let mut events = QueryControlServiceClient::new(keyed(channel, key))
        .session(futures::stream::iter(vec![request]))
        .await?
        .into_inner();
    let mut seen = 0;
    while events.message().await?.is_some() {
        seen += 1;
    }
    Ok(seen)
}

#[tokio::test]
async fn a_key_over_its_model_tokens_per_minute_starts_no_query_until_they_refill() {
    let fake = crate::common::fake_llm::FakeLlm::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let small = create_key(&keys, &["--scope", "write", "--tokens-per-minute", "5"]);
    let other = create_key(&keys, &["--scope", "write"]);
    let config = ConfigFile::new()
        .hash_embeddings()
        .fake_model("fake", &fake.openai_url())
        .write(dir.path());
    let (_server, channel) = Binary::start_with(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--api-keys-file",
            keys.to_str().unwrap(),
        ],
    )
    .await;
    // The first query is admitted (the budget is positive) and overdraws it.
    assert!(run_query(&channel, &small).await.unwrap() > 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match run_query(&channel, &small).await {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "still admitted 5 s later"),
        }
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("5 model tokens/minute"), "{err:?}");
    let details = err.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
    let delay = details.retry_info().and_then(|r| r.retry_delay).unwrap();
    // 5 tokens a minute: each token overdrawn is 12 s more.
    assert!(delay > Duration::from_secs(12), "{delay:?}");
    // Another key's budget is its own.
    assert!(run_query(&channel, &other).await.unwrap() > 2);
}
