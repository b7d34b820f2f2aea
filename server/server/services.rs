//! One builder per service: each makes its engine from the configuration
//! and adds its gRPC service (with the settings every service shares) to
//! the routes. [`super::Server::new`] calls them in order.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::service::RoutesBuilder;
use tonic_health::server::HealthReporter;

use super::health::{report_model_health, service_name};
use crate::agents::{AgentEngine, AgentMemory};
use crate::api;
use crate::config::{Config, ServiceKind};
use crate::embed::{EmbeddingEngine, TextEmbedder};
use crate::memory::{Collections, Indexes, KvMemory, Points, SearchCache};
use crate::pb::v1::{
    agent_service_server::AgentServiceServer, embedding_service_server::EmbeddingServiceServer,
    memory_service_server::MemoryServiceServer,
    query_control_service_server::QueryControlServiceServer,
};
use crate::query::{LocalProvider, ModelAliasSpec, ModelProvider, ModelRegistry, QueryEngine};
use crate::store::SqliteStore;
use crate::tools;

/// How often expired key-value entries are deleted from disk (they are
/// invisible from the moment they expire).
const KV_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

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

/// Adds grpc.health.v1 and server reflection (v1, and v1alpha for grpcurl
/// 1.8 and the many tools that only speak it); returns the health reporter.
pub fn health_and_reflection(
    config: &Config,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<HealthReporter> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Health and reflection take the same compression and limits as the
    // agentd services: a client that compresses on the whole channel must
    // still be able to probe health.
    routes.add_service(configured!(health_service, config));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::pb::ERROR_DETAILS_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().context("building reflection v1")?;
    let v1alpha = reflection()
        .build_v1alpha()
        .context("building reflection v1alpha")?;
    routes.add_service(configured!(v1, config));
    routes.add_service(configured!(v1alpha, config));
    Ok(health)
}

/// Starts the embedding engine (its models load in the background) and
/// adds EmbeddingService, whose health follows the default model.
pub async fn embedding(
    config: &Config,
    routes: &mut RoutesBuilder,
    health: &HealthReporter,
    draining: watch::Receiver<bool>,
) -> anyhow::Result<Arc<EmbeddingEngine>> {
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
        draining,
    )
    .await;
    routes.add_service(configured!(
        EmbeddingServiceServer::new(api::embedding::EmbeddingApi::new(Arc::clone(&engine))),
        config
    ));
    Ok(engine)
}

/// What the memory engine leaves running.
#[derive(Debug)]
pub struct Memory {
    /// Expiry purges, snapshots and the warm-up, stopped when serving ends.
    pub background: Vec<JoinHandle<()>>,
    /// The collection indexes, snapshotted at shutdown.
    pub indexes: Indexes,
    /// Key-value memory, for the built-in tools.
    pub kv: KvMemory,
    /// Vector collections' points, for the built-in tools and agents.
    pub points: Points,
    /// Collection definitions, for agents' memories.
    pub collections: Collections,
}

/// Builds the memory engine on `store` and adds MemoryService; starts its
/// housekeeping and loads every collection's index in the background.
pub fn memory(
    config: &Config,
    routes: &mut RoutesBuilder,
    store: &Arc<SqliteStore>,
    embedder: Option<Arc<dyn TextEmbedder>>,
) -> Memory {
    let kv = KvMemory::new(store.clone());
    let collections = Collections::new(store.clone(), embedder.clone());
    let indexes = Indexes::new(
        store.clone(),
        Some(config.data_dir.join("indexes")),
        config.memory.fresh_segment_max_points,
    );
    let cache = SearchCache::new(config.memory.search_cache_bytes);
    let points = Points::new(
        store.clone(),
        collections.clone(),
        embedder,
        indexes.clone(),
        cache,
        config.memory.max_index_bytes,
    );
    let mut background = vec![
        kv.spawn_purger(KV_PURGE_INTERVAL),
        indexes.spawn_snapshotter(config.memory.snapshot_interval),
    ];
    // Load every collection's index now (from its snapshot), not on its
    // first search.
    let warming = points.clone();
    background.push(tokio::spawn(async move { warming.warm_up().await }));
    routes.add_service(configured!(
        MemoryServiceServer::new(api::memory::MemoryApi::new(
            kv.clone(),
            collections.clone(),
            points.clone()
        )),
        config
    ));
    Memory {
        background,
        indexes,
        kv,
        points,
        collections,
    }
}

/// Builds the model registry and the query engine on `store` and adds
/// QueryControlService; `embedder` serves the semantic cache, and queries
/// may call the built-in tools over `embedder` and `memory`. Returns the
/// engine, for shutdown.
pub fn query(
    config: &Config,
    routes: &mut RoutesBuilder,
    store: &Arc<SqliteStore>,
    embedder: Option<Arc<dyn TextEmbedder>>,
    memory: Option<(KvMemory, Points)>,
) -> QueryEngine {
    let q = &config.query;
    let local = |spec: &ModelAliasSpec| {
        LocalProvider::start(spec, q.local_threads, q.local_max_queued) as Arc<dyn ModelProvider>
    };
    let registry = ModelRegistry::build(q.model_specs(), q.cooldown, q.connect_timeout, &local);
    tracing::info!(
        models = ?registry.list().iter().map(|m| m.spec.alias.as_str()).collect::<Vec<_>>(),
        "query engine starting"
    );
    let (kv, points) = memory.unzip();
    let server_tools = tools::builtin(kv, points, embedder.clone(), q.tool_result_max_bytes);
    let engine = QueryEngine::new(q.clone(), registry, store.clone(), embedder, server_tools);
    routes.add_service(configured!(
        QueryControlServiceServer::new(api::query::QueryApi::new(engine.clone())),
        config
    ));
    engine
}

/// Builds the agents engine on `store` (tasks run on `query`, agents'
/// memories in `memory`) and adds AgentService. Returns the engine and its
/// background tasks (the workers' clock, the leasing of worker tool
/// calls), stopped at shutdown.
pub fn agents(
    config: &Config,
    routes: &mut RoutesBuilder,
    store: &Arc<SqliteStore>,
    query: Option<QueryEngine>,
    memory: Option<(Collections, Points)>,
) -> anyhow::Result<(AgentEngine, Vec<JoinHandle<()>>)> {
    let memory = memory.map(|(collections, points)| AgentMemory {
        collections,
        points,
        embedding_model: config.embedding.default_model.clone(),
    });
    let engine = AgentEngine::new(store.clone(), query, memory, config.agents.clone())
        .context("starting the agents engine")?;
    // Tasks left pending or running by the last run start again.
    let background = engine.resume();
    routes.add_service(configured!(
        AgentServiceServer::new(api::agents::AgentApi::new(engine.clone())),
        config
    ));
    Ok((engine, background))
}
