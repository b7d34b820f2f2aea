//! Starts a real agentd server in-process on `127.0.0.1:0` and connects
//! generated clients to it. Each test gets its own server and port.

use std::net::SocketAddr;
use std::time::Duration;

use std::path::{Path, PathBuf};

use agentd::config::Config;
use agentd::embed::{DEFAULT_EMBEDDING_LIMITS, DEFAULT_EMBEDDING_TUNING, EmbeddingConfig};
use agentd::embed::{ModelKind, ModelSpec};
use agentd::server::Server;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
    /// Kept alive (and removed) with the server.
    _data_dir: tempfile::TempDir,
}

/// A config for tests: a fresh data directory, a short grace period and only
/// the hash embedding model (instant to load; tests that need MiniLM ask for
/// it with [`minilm_config`]).
pub fn test_config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("data"),
        shutdown_grace: Duration::from_secs(2),
        embedding: EmbeddingConfig {
            models: vec![ModelSpec {
                id: "hash".into(),
                kind: ModelKind::Hash,
                path: None,
                dimensions: Some(384),
                backend: Default::default(),
            }],
            default_model: "hash".into(),
            limits: DEFAULT_EMBEDDING_LIMITS,
            tuning: DEFAULT_EMBEDDING_TUNING,
        },
        // Many servers run at once here: none takes the metrics port.
        metrics_listen: None,
        ..Config::default()
    };
    (config, dir)
}

/// The all-MiniLM-L6-v2 directory: `$AGENTD_TEST_MODEL_DIR`, else
/// `models/all-MiniLM-L6-v2` (put there by `scripts/fetch-models`, which
/// `scripts/test` runs). Missing files fail the test: a skipped model test
/// would pass while proving nothing.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("AGENTD_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 not found in {}: run scripts/fetch-models",
        dir.display()
    );
    dir
}

/// The test config with all-MiniLM-L6-v2 (default) and the hash model.
pub fn minilm_config() -> (Config, tempfile::TempDir) {
    let (mut config, dir) = test_config();
    config.embedding.models.insert(
        0,
        ModelSpec {
            id: "all-MiniLM-L6-v2".into(),
            kind: ModelKind::Bert,
            path: Some(minilm_dir()),
            dimensions: None,
            backend: Default::default(),
        },
    );
    config.embedding.default_model = "all-MiniLM-L6-v2".into();
    (config, dir)
}

impl TestServer {
    /// Starts a server with the test config.
    pub async fn start() -> TestServer {
        let (config, dir) = test_config();
        TestServer::start_with(config, dir, |s| s).await
    }

    /// Starts a server with `config`, letting `customize` add services.
    pub async fn start_with(
        config: Config,
        data_dir: tempfile::TempDir,
        customize: impl FnOnce(Server) -> Server,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let server = customize(Server::new(config).await.expect("server set-up"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            shutdown: Some(tx),
            handle,
            _data_dir: data_dir,
        }
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await.expect("connect to test server")
    }

    /// Triggers shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_keeping_data().await;
        Ok(())
    }

    /// Stops the server and hands back its data directory, for a restart.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("server stops within 20 s")
            .expect("server task")
            .expect("server ran cleanly");
        self._data_dir
    }
}

/// The fields named by an error's BadRequest detail, in order.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Connects to `addr` with a short connect timeout.
pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}
pub mod agents;
pub mod binary;
pub mod fake_llm;
pub mod points;
pub mod sessions;
pub mod sleep;
pub mod structs;
pub mod workers;
