//! Serving: every agentd service, health and reflection on one listener.
//!
//! [`run`] is the single entry point. `main` binds the configured address and
//! passes a future that resolves on SIGINT/SIGTERM; tests bind `127.0.0.1:0`
//! and pass their own. [`Server`] is the same thing in two steps, for callers
//! that add services of their own before serving.
//!
//! Shutdown, in order: health reports NOT_SERVING for the whole server and each
//! service (so load balancers drain), the listening socket closes (new
//! connections are refused) and every connection gets an HTTP/2 GOAWAY (new
//! calls are refused), calls in flight run on for at most the configured grace
//! period; then every query still running, paused or queued ends as
//! terminated with reason "shutdown" and is persisted as such, changed index
//! snapshots are written (each step bounded, about a second in all), `serve`
//! returns, and `main` exits, which cuts whatever is still running.
//!
//! - [`services`]: one builder per service (its engine and its gRPC
//!   service with the shared settings), plus health and reflection.
//! - [`health`]: service names and their health, following model loading.
//! - [`signal`]: SIGINT / SIGTERM.
//! - [`tls`]: TLS on the port, certificates swapped without a restart.
//! - [`reload`]: re-reads the API keys and TLS files on change or SIGHUP.
//! - [`gauges`]: what `/metrics` reads from each engine before rendering.

mod gauges;
mod health;
mod reload;
mod services;
mod signal;
mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use health::service_name;
use health::{report_storage_health, set_services_health};
pub use signal::shutdown_signal;

use crate::api;
use crate::api::guard::Guard;
use crate::config::{Config, Services};
use crate::embed::TextEmbedder;
use crate::memory::Indexes;
use crate::metrics::Scrape;
use crate::query::QueryEngine;
use crate::security::{AuditLog, KeyRing};
use tls::Tls;

/// How long shutdown waits, after the grace period, for the queries it
/// terminates to be persisted.
const QUERY_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// How long shutdown waits for the last index snapshots.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_millis(300);
use crate::store::SqliteStore;

/// Serves `config`'s services on `listener` until `shutdown` resolves, then
/// shuts down gracefully (see the module docs).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Server::new(config).await?.serve(listener, shutdown).await
}

/// A server whose services are set up but not yet serving.
#[derive(Debug)]
pub struct Server {
    config: Config,
    health: HealthReporter,
    routes: RoutesBuilder,
    /// Set when shutdown starts, so no engine turns health back to SERVING.
    draining: watch::Sender<bool>,
    /// Engine housekeeping tasks, stopped when serving ends.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Snapshotted at shutdown.
    memory_indexes: Option<Indexes>,
    /// Its unfinished queries are terminated at shutdown.
    query: Option<QueryEngine>,
    /// The API keys required, if any.
    keys: Option<Arc<KeyRing>>,
    /// TLS, if served.
    tls: Option<Arc<Tls>>,
    /// Where audit lines go.
    audit: Option<AuditLog>,
    /// `/metrics`: its listener and what it renders, when served.
    metrics: Option<(tokio::net::TcpListener, Arc<Scrape>)>,
}

impl Server {
    /// Builds the engines and services `config` enables (one builder each,
    /// in [`services`]), health and reflection. Health is SERVING for the
    /// whole server and each enabled service; EmbeddingService follows its
    /// default model.
    pub async fn new(config: Config) -> anyhow::Result<Server> {
        // Fail at start-up, not at the first write, when the data directory
        // cannot be created.
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
        // Keys, certificates and the audit file fail the start, not a call.
        let security = &config.security;
        let keys = match &security.api_keys_file {
            Some(path) => {
                let ring = KeyRing::open(path)?;
                tracing::info!(file = %path.display(), keys = ring.len(), "API keys required");
                Some(Arc::new(ring))
            }
            None => None,
        };
        let tls = security
            .tls
            .as_ref()
            .map(|files| Tls::load(files).map(Arc::new))
            .transpose()?;
        let audit = Some(AuditLog::open(&security.audit)?);
        // Before any engine starts, so that what they record is kept.
        let metrics = match config.metrics_listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => Some((listener, Scrape::new(crate::metrics::install()?))),
                Err(e) if !config.metrics_listen_explicit => {
                    tracing::warn!(
                        %addr,
                        error = %e,
                        "the default metrics address is taken: serving without metrics \
                         (set --metrics-listen to another address, or \"off\")"
                    );
                    None
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "binding the metrics address {addr} (--metrics-listen; \"off\" turns it off)"
                    )));
                }
            },
            None => None,
        };
        let mut routes = RoutesBuilder::default();
        let health = services::health_and_reflection(&config, &mut routes)?;
        let services = config.services;
        let (draining_tx, draining_rx) = watch::channel(false);

        let embedding = if services.embedding {
            Some(services::embedding(&config, &mut routes, &health, draining_rx.clone()).await?)
        } else {
            None
        };
        let embedder = embedding
            .clone()
            .map(|engine| engine as Arc<dyn TextEmbedder>);
        // The store is the source of truth for every engine that persists.
        let store = Arc::new(SqliteStore::open(&config.data_dir)?);
        let mut background = Vec::new();
        let mut memory_indexes = None;
        let mut memory_engines = None;
        let mut agent_memory = None;
        if services.memory {
            let memory = services::memory(&config, &mut routes, &store, embedder.clone());
            background.extend(memory.background);
            memory_indexes = Some(memory.indexes);
            agent_memory = Some((memory.collections, memory.points.clone()));
            memory_engines = Some((memory.kv, memory.points));
        }
        let query = services.query.then(|| {
            services::query(
                &config,
                &mut routes,
                &store,
                embedder.clone(),
                memory_engines,
            )
        });
        let mut agents = None;
        if services.agents {
            let (engine, tasks) =
                services::agents(&config, &mut routes, &store, query.clone(), agent_memory)?;
            background.extend(tasks);
            agents = Some(engine);
        }
        let metrics = metrics.map(|(listener, mut scrape)| {
            scrape.add_all([
                embedding.map(gauges::embedding),
                memory_indexes.clone().map(gauges::memory),
                query.clone().map(gauges::query),
                agents.map(gauges::agents),
            ]);
            (listener, Arc::new(scrape))
        });
        // Embedding reports its own readiness (above).
        let ready = Services {
            embedding: false,
            ..services
        };
        set_services_health(&health, ready, ServingStatus::Serving).await;
        if services.memory {
            background.push(report_storage_health(
                health.clone(),
                Arc::clone(&store),
                draining_rx.clone(),
            ));
        }

        Ok(Server {
            config,
            health,
            routes,
            draining: draining_tx,
            background,
            memory_indexes,
            query,
            keys,
            tls,
            audit,
            metrics,
        })
    }

    /// Adds another gRPC service on the same port (an embedding application's
    /// own service, or a test's).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Server {
            config,
            health,
            routes,
            draining,
            background,
            memory_indexes,
            query,
            keys,
            tls,
            audit,
            metrics,
        } = self;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        let grace = config.shutdown_grace;
        let services = config.services;

        // For /readyz, which turns 503 when shutdown begins.
        let probes_draining = draining.subscribe();
        let (draining_tx, draining_rx) = oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            draining.send_replace(true);
            tracing::info!(grace = ?grace, "shutting down: health NOT_SERVING, refusing new calls");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            set_services_health(&health, services, ServingStatus::NotServing).await;
            let _ = draining_tx.send(());
        };

        if keys.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "listening beyond loopback without API keys: anyone who can reach this port \
                 can read and write everything (set --api-keys-file)"
            );
        }
        let reloader = reload::spawn(keys.clone(), tls.clone());
        let mut metrics_tasks = Vec::new();
        if let Some((listener, scrape)) = metrics {
            if let Ok(at) = listener.local_addr() {
                tracing::info!(addr = %at, "metrics at http://{at}/metrics");
            }
            metrics_tasks.push(scrape.spawn_upkeep());
            metrics_tasks.push(tokio::spawn(crate::metrics::serve(
                listener,
                scrape,
                probes_draining,
            )));
        }
        let router = tonic::transport::Server::builder()
            .layer(Guard::new(keys, audit.unwrap_or_else(AuditLog::off)))
            .layer(api::message_limit::layer())
            .add_routes(routes.routes());
        let server = match tls {
            Some(tls) => futures::future::Either::Left(
                router.serve_with_incoming_shutdown(tls::incoming(listener, tls), signal),
            ),
            None => {
                // TCP_NODELAY: without it, small answers wait for the
                // peer's delayed ACK (about 40 ms on Linux), which dwarfs
                // a cached embedding.
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                futures::future::Either::Right(
                    router.serve_with_incoming_shutdown(incoming, signal),
                )
            }
        };

        tracing::info!(%addr, "agentd serving");
        tokio::pin!(server);
        let grace_elapsed = async {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut server => result.context("serving gRPC")?,
            () = grace_elapsed => {
                tracing::warn!(grace = ?grace, "grace period over: cutting calls still in flight");
            }
        }
        // What is left must end within about a second, whatever runs.
        if let Some(query) = query {
            query.shutdown(QUERY_SHUTDOWN_WAIT).await;
        }
        background.iter().for_each(tokio::task::JoinHandle::abort);
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        metrics_tasks
            .iter()
            .for_each(tokio::task::JoinHandle::abort);
        if let Some(indexes) = memory_indexes {
            // Saves restarts a replay; the store already has every write,
            // so a snapshot cut short (written to temporary names, renamed
            // when complete) costs nothing but that.
            let snapshot = tokio::task::spawn_blocking(move || indexes.snapshot_changed());
            if tokio::time::timeout(SNAPSHOT_WAIT, snapshot).await.is_err() {
                tracing::warn!(
                    "index snapshots cut short by shutdown; restart replays from the store"
                );
            }
        }
        tracing::info!("agentd stopped");
        Ok(())
    }
}
