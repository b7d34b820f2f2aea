//! Starts a real agentd server in-process on `127.0.0.1:0` and connects
//! generated clients to it. Each test gets its own server and port.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use agentd::config::Config;
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
    _data_dir: tempfile::TempDir,
}

/// A config for tests: a fresh data directory and a short grace period.
pub fn test_config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("data"),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    };
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
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("server stops within 20 s")
            .expect("server task")
    }
}

/// Connects to `addr` with a short connect timeout.
pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}
pub mod sleep;
