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
//! period, then `serve` returns; `main` then exits, which cuts whatever is
//! still running.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api;
use crate::config::{Config, ServiceKind, Services};
use crate::embed::{EmbeddingEngine, ModelState};
use crate::memory::collections::ModelDimensions;
use crate::memory::indexes::Indexes;
use crate::memory::points::{Points, TextEmbedder};
use crate::memory::search_cache::SearchCache;
use crate::memory::{Collections, KvMemory};
use crate::query::QueryEngine;
use crate::query::models::ModelRegistry;
use crate::store::SqliteStore;

/// How often expired key-value entries are deleted from disk (they are
/// invisible from the moment they expire).
const KV_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
use crate::pb::v1::{
    agent_service_server::AgentServiceServer, embedding_service_server::EmbeddingServiceServer,
    memory_service_server::MemoryServiceServer,
    query_control_service_server::QueryControlServiceServer,
};

/// Full gRPC name of each agentd service, as health and reflection report it.
pub fn service_name(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Embedding => {
            <EmbeddingServiceServer<api::embedding::EmbeddingApi> as NamedService>::NAME
        }
        ServiceKind::Memory => MemoryServiceServer::<api::memory::MemoryApi>::NAME,
        ServiceKind::Query => QueryControlServiceServer::<api::query::QueryApi>::NAME,
        ServiceKind::Agents => AgentServiceServer::<api::agents::AgentApi>::NAME,
    }
}

/// Sets the health of every served service to `status`.
async fn set_services_health(health: &HealthReporter, services: Services, status: ServingStatus) {
    for kind in services.enabled_kinds() {
        health.set_service_status(service_name(kind), status).await;
    }
}

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
}

/// Applies the settings every agentd service shares: compression both ways
/// and the message size limit.
macro_rules! configured {
    ($server:expr, $config:expr) => {
        $server
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size($config.max_message_bytes)
            .max_encoding_message_size($config.max_message_bytes)
    };
}

impl Server {
    /// Builds the engines and services `config` enables, health (SERVING for
    /// the whole server and each enabled service) and reflection.
    pub async fn new(config: Config) -> anyhow::Result<Server> {
        // Fail at start-up, not at the first write, when the data directory
        // cannot be created.
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        // Health and reflection take the same compression and limits as the
        // agentd services: a client that compresses on the whole channel
        // must still be able to probe health.
        routes.add_service(configured!(health_service, config));

        // Reflection v1, and v1alpha for grpcurl 1.8 and the many tools that
        // only speak it.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let v1 = reflection().build_v1().context("building reflection v1")?;
        let v1alpha = reflection()
            .build_v1alpha()
            .context("building reflection v1alpha")?;
        routes.add_service(configured!(v1, config));
        routes.add_service(configured!(v1alpha, config));

        let services = config.services;
        let (draining_tx, draining_rx) = watch::channel(false);
        let mut embedding = None;
        if services.embedding {
            let e = &config.embedding;
            let engine = EmbeddingEngine::start(
                e.models.clone(),
                e.default_model.clone(),
                e.limits,
                e.tuning,
            )?;
            tracing::info!(
                default = %e.default_model,
                models = ?e.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
                "embedding engine starting"
            );
            report_model_health(
                health.clone(),
                service_name(ServiceKind::Embedding),
                engine.default_state(),
                draining_rx.clone(),
            )
            .await;
            embedding = Some(Arc::clone(&engine));
            routes.add_service(configured!(
                EmbeddingServiceServer::new(api::embedding::EmbeddingApi::new(engine)),
                config
            ));
        }
        let mut background = Vec::new();
        let mut memory_indexes = None;
        // The store is the source of truth for every engine that persists.
        let store = Arc::new(SqliteStore::open(&config.data_dir)?);
        if services.memory {
            let kv = KvMemory::new(store.clone());
            background.push(kv.spawn_purger(KV_PURGE_INTERVAL));
            let models = embedding.clone().map(|e| e as Arc<dyn ModelDimensions>);
            let collections = Collections::new(store.clone(), models);
            let texts = embedding.clone().map(|e| e as Arc<dyn TextEmbedder>);
            let indexes = Indexes::new(store.clone(), Some(config.data_dir.join("indexes")));
            let cache = SearchCache::new(config.memory.search_cache_bytes);
            let points = Points::new(store.clone(), collections.clone(), texts, indexes, cache);
            background.push(
                points
                    .indexes()
                    .spawn_snapshotter(config.memory.snapshot_interval),
            );
            // Load every collection's index now (from its snapshot), not on
            // its first search.
            let warming = points.clone();
            background.push(tokio::spawn(async move { warming.warm_up().await }));
            memory_indexes = Some(points.indexes().clone());
            routes.add_service(configured!(
                MemoryServiceServer::new(api::memory::MemoryApi::new(kv, collections, points)),
                config
            ));
        }
        if services.query {
            let q = &config.query;
            let local = |spec: &crate::query::settings::ModelAliasSpec| {
                crate::query::local::LocalProvider::start(spec, q.local_threads)
                    as Arc<dyn crate::query::provider::ModelProvider>
            };
            let registry =
                ModelRegistry::build(q.model_specs(), q.cooldown, q.connect_timeout, &local);
            tracing::info!(
                models = ?registry.list().iter().map(|m| m.spec.alias.as_str()).collect::<Vec<_>>(),
                "query engine starting"
            );
            let texts = embedding.clone().map(|e| e as Arc<dyn TextEmbedder>);
            let engine = QueryEngine::new(q.clone(), registry, store.clone(), texts);
            routes.add_service(configured!(
                QueryControlServiceServer::new(api::query::QueryApi::new(engine)),
                config
            ));
        }
        if services.agents {
            routes.add_service(configured!(
                AgentServiceServer::new(api::agents::AgentApi::default()),
                config
            ));
        }
        // The embedding service reports its own readiness (above): it is
        // NOT_SERVING while its default model loads.
        let others = Services {
            embedding: false,
            ..services
        };
        set_services_health(&health, others, ServingStatus::Serving).await;

        Ok(Server {
            config,
            health,
            routes,
            draining: draining_tx,
            background,
            memory_indexes,
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
        } = self;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        let grace = config.shutdown_grace;
        let services = config.services;

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

        // TCP_NODELAY: without it, small answers wait for the peer's delayed
        // ACK (about 40 ms on Linux), which dwarfs a cached embedding.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
            .layer(api::message_limit::layer())
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);

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
        background.iter().for_each(tokio::task::JoinHandle::abort);
        if let Some(indexes) = memory_indexes {
            // Saves restarts a replay; the store already has every write.
            let _ = tokio::task::spawn_blocking(move || indexes.snapshot_changed()).await;
        }
        tracing::info!("agentd stopped");
        Ok(())
    }
}

/// Keeps `service`'s health in step with an engine's model: SERVING once it is
/// ready, NOT_SERVING while it loads or after it failed. Sets the current
/// status before returning, then follows changes in the background until
/// shutdown starts.
async fn report_model_health(
    health: HealthReporter,
    service: &'static str,
    mut state: watch::Receiver<ModelState>,
    draining: watch::Receiver<bool>,
) {
    let status_of = |s: &ModelState| match s {
        ModelState::Ready => ServingStatus::Serving,
        ModelState::Loading | ModelState::Failed(_) => ServingStatus::NotServing,
    };
    let current = status_of(&state.borrow_and_update());
    health.set_service_status(service, current).await;
    let mut stop = draining.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|d| *d).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let status = status_of(&state.borrow_and_update());
                    let shutting_down = *draining.borrow();
                    if !shutting_down {
                        health.set_service_status(service, status).await;
                    }
                }
                () = &mut stopped => return,
            }
        }
    });
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
