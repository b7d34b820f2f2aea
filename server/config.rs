//! The one validated configuration of `agentd serve`.
//!
//! Values are layered, highest first: command-line flags, `AGENTD_*`
//! environment variables (clap reads both), the TOML file named by `--config`
//! (or `./agentd.toml` when it exists), then built-in defaults. The result is
//! validated once at start-up; the rest of the server only sees [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::embed::engine::DEFAULT_HASH_DIMENSIONS;
use crate::embed::{
    DEFAULT_BATCH_LIMITS, Limits as EmbeddingLimits, ModelKind, ModelSpec,
    Tuning as EmbeddingTuning,
};
use crate::query::settings::QueryConfig;

/// Default gRPC listen address: loopback only, so a fresh install is not
/// reachable from the network until asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default largest gRPC message, in bytes (16 MiB): room for a 10,000-point
/// upsert of 384-dimensional vectors.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default time in-flight calls get after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Config file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "agentd.toml";

/// Where `scripts/fetch-models` puts all-MiniLM-L6-v2; served by default
/// when present.
pub const DEFAULT_MINILM_DIR: &str = "models/all-MiniLM-L6-v2";
/// Id of the default BERT model.
pub const DEFAULT_MINILM_ID: &str = "all-MiniLM-L6-v2";
/// Id of the always-available hash model.
pub const DEFAULT_HASH_ID: &str = "hash";

const MIN_MESSAGE_BYTES: usize = 4 * 1024;
const MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The four agentd services, by the name used in config and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// agentd.v1.EmbeddingService
    Embedding,
    /// agentd.v1.MemoryService
    Memory,
    /// agentd.v1.QueryControlService
    Query,
    /// agentd.v1.AgentService
    Agents,
}

impl ServiceKind {
    /// Every service, in the order they are listed everywhere.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Embedding,
        ServiceKind::Memory,
        ServiceKind::Query,
        ServiceKind::Agents,
    ];
}

/// Flags of `agentd serve`. Each is optional here so that an absent flag lets
/// the config file or the default decide.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address and port to serve gRPC on [default: 127.0.0.1:50051]
    #[arg(long, env = "AGENTD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory for the store and index snapshots; created if missing
    /// [default: ./data]
    #[arg(long, env = "AGENTD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// TOML config file; flags and AGENTD_* variables override its values
    /// [default: ./agentd.toml if it exists]
    #[arg(long, env = "AGENTD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log line format [default: text]
    #[arg(long, env = "AGENTD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter in RUST_LOG syntax, e.g. "info,agentd=debug" [default: info]
    #[arg(long, env = "AGENTD_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Largest gRPC message accepted or sent, in bytes (4096 to 1073741824);
    /// larger requests get RESOURCE_EXHAUSTED [default: 16777216]
    #[arg(long, env = "AGENTD_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Time calls in flight get to finish after SIGINT or SIGTERM before they
    /// are cut, e.g. "10s", "500ms" (at most 1h) [default: 10s]
    #[arg(long, env = "AGENTD_SHUTDOWN_GRACE", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,

    /// Services not to serve, comma-separated: embedding, memory, query,
    /// agents. Their health status reads NOT_FOUND.
    #[arg(
        long,
        env = "AGENTD_DISABLE",
        value_enum,
        value_delimiter = ',',
        value_name = "SERVICES"
    )]
    pub disable: Vec<ServiceKind>,

    /// A BERT-family model directory (config.json, model.safetensors,
    /// tokenizer.json) to serve as the default embedding model, under the
    /// directory's name [default: models/all-MiniLM-L6-v2 if present, else
    /// the hash embedder]
    #[arg(long, env = "AGENTD_EMBEDDING_MODEL_DIR", value_name = "DIR")]
    pub embedding_model_dir: Option<PathBuf>,
}

/// The contents of `agentd.toml`. Unknown keys are an error so that a typo
/// does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    max_message_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    shutdown_grace: Option<Duration>,
    #[serde(default)]
    services: ServicesFile,
    #[serde(default)]
    embedding: EmbeddingFile,
    #[serde(default)]
    memory: MemoryFile,
    #[serde(default)]
    query: QueryConfig,
}

/// `[memory]` of agentd.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryFile {
    search_cache_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    snapshot_interval: Option<Duration>,
}

/// The memory engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes of recent search results kept; 0 disables the cache.
    pub search_cache_bytes: u64,
    /// How often changed collection indexes are snapshotted (they also are
    /// after every build and at shutdown). A crash replays at most this
    /// much of writes from the store on restart.
    pub snapshot_interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            search_cache_bytes: 64 << 20,
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

/// `[embedding]` of agentd.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingFile {
    default_model: Option<String>,
    max_inputs: Option<usize>,
    max_input_bytes: Option<usize>,
    max_concurrent_requests: Option<usize>,
    max_batch_tokens: Option<usize>,
    max_batch_requests: Option<usize>,
    cache_bytes: Option<u64>,
    /// `[[embedding.models]]`; when given, replaces the built-in list.
    models: Option<Vec<ModelSpec>>,
}

/// The embedding engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// Models to serve.
    pub models: Vec<ModelSpec>,
    /// Id used when a request names no model.
    pub default_model: String,
    /// Request limits.
    pub limits: EmbeddingLimits,
    /// Batching and caching.
    pub tuning: EmbeddingTuning,
}

/// Default batching and caching: TEI-like batch bounds, 64 MiB of cache per
/// model (about 40,000 short texts of a 384-dimension model).
pub const DEFAULT_EMBEDDING_TUNING: EmbeddingTuning = EmbeddingTuning {
    batch: DEFAULT_BATCH_LIMITS,
    cache_bytes: 64 * 1024 * 1024,
};

/// Default request limits of the embedding engine.
pub const DEFAULT_EMBEDDING_LIMITS: EmbeddingLimits = EmbeddingLimits {
    max_inputs: 256,
    max_input_bytes: 64 * 1024,
    max_concurrent_requests: 512,
};

impl Default for EmbeddingConfig {
    /// all-MiniLM-L6-v2 from `models/` when it has been fetched, and the hash
    /// embedder always; the default is MiniLM when present.
    fn default() -> Self {
        let mut models = Vec::new();
        if Path::new(DEFAULT_MINILM_DIR).join("config.json").exists() {
            models.push(ModelSpec {
                id: DEFAULT_MINILM_ID.to_owned(),
                kind: ModelKind::Bert,
                path: Some(PathBuf::from(DEFAULT_MINILM_DIR)),
                dimensions: None,
                backend: Default::default(),
            });
        }
        models.push(hash_spec());
        let default_model = models[0].id.clone();
        Self {
            models,
            default_model,
            limits: DEFAULT_EMBEDDING_LIMITS,
            tuning: DEFAULT_EMBEDDING_TUNING,
        }
    }
}

fn hash_spec() -> ModelSpec {
    ModelSpec {
        id: DEFAULT_HASH_ID.to_owned(),
        kind: ModelKind::Hash,
        path: None,
        dimensions: Some(DEFAULT_HASH_DIMENSIONS),
        backend: Default::default(),
    }
}

impl EmbeddingConfig {
    fn merge(args: &ServeArgs, file: EmbeddingFile) -> anyhow::Result<Self> {
        let builtin = EmbeddingConfig::default();
        let explicit_models = file.models.is_some();
        let mut models = file.models.unwrap_or(builtin.models);
        let mut default_model = file.default_model;
        if let Some(dir) = &args.embedding_model_dir {
            let id = dir
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.is_empty())
                .with_context(|| {
                    format!("--embedding-model-dir {} has no usable name", dir.display())
                })?
                .to_owned();
            models.retain(|m| m.id != id);
            models.insert(
                0,
                ModelSpec {
                    id: id.clone(),
                    kind: ModelKind::Bert,
                    path: Some(dir.clone()),
                    dimensions: None,
                    backend: Default::default(),
                },
            );
            default_model = Some(id);
        }
        if !explicit_models && !models.iter().any(|m| m.kind == ModelKind::Hash) {
            models.push(hash_spec());
        }
        let default_model = match default_model {
            Some(id) => id,
            None => models
                .first()
                .map(|m| m.id.clone())
                .context("[embedding] models must not be empty")?,
        };
        let d = DEFAULT_EMBEDDING_LIMITS;
        let config = EmbeddingConfig {
            models,
            default_model,
            limits: EmbeddingLimits {
                max_inputs: file.max_inputs.unwrap_or(d.max_inputs),
                max_input_bytes: file.max_input_bytes.unwrap_or(d.max_input_bytes),
                max_concurrent_requests: file
                    .max_concurrent_requests
                    .unwrap_or(d.max_concurrent_requests),
            },
            tuning: EmbeddingTuning {
                batch: crate::embed::BatchLimits {
                    max_batch_tokens: file
                        .max_batch_tokens
                        .unwrap_or(DEFAULT_BATCH_LIMITS.max_batch_tokens),
                    max_batch_requests: file
                        .max_batch_requests
                        .unwrap_or(DEFAULT_BATCH_LIMITS.max_batch_requests),
                    ..DEFAULT_BATCH_LIMITS
                },
                cache_bytes: file
                    .cache_bytes
                    .unwrap_or(DEFAULT_EMBEDDING_TUNING.cache_bytes),
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if m.id.is_empty() || m.id.len() > 128 {
                bail!("embedding model ids must be 1 to 128 bytes, got {:?}", m.id);
            }
            if !seen.insert(m.id.as_str()) {
                bail!("embedding model id {:?} is configured twice", m.id);
            }
            match m.kind {
                ModelKind::Bert if m.path.is_none() => {
                    bail!("embedding model {:?} (bert) needs a path", m.id)
                }
                ModelKind::Hash => {
                    let dims = m.dimensions.unwrap_or(DEFAULT_HASH_DIMENSIONS);
                    if !(1..=4096).contains(&dims) {
                        bail!(
                            "embedding model {:?}: dimensions must be 1 to 4096, got {dims}",
                            m.id
                        );
                    }
                }
                ModelKind::Bert => {}
            }
        }
        if !seen.contains(self.default_model.as_str()) {
            bail!(
                "embedding default_model {:?} is not among the configured models",
                self.default_model
            );
        }
        let l = self.limits;
        if l.max_inputs == 0 || l.max_input_bytes == 0 || l.max_concurrent_requests == 0 {
            bail!("embedding limits must be positive: {l:?}");
        }
        let b = self.tuning.batch;
        if b.max_batch_tokens == 0 || b.max_batch_requests == 0 {
            bail!("embedding max_batch_tokens and max_batch_requests must be positive: {b:?}");
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default = "yes")]
    embedding: bool,
    #[serde(default = "yes")]
    memory: bool,
    #[serde(default = "yes")]
    query: bool,
    #[serde(default = "yes")]
    agents: bool,
}

fn yes() -> bool {
    true
}

impl Default for ServicesFile {
    fn default() -> Self {
        Self {
            embedding: true,
            memory: true,
            query: true,
            agents: true,
        }
    }
}

/// Which services are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// Serve agentd.v1.EmbeddingService.
    pub embedding: bool,
    /// Serve agentd.v1.MemoryService.
    pub memory: bool,
    /// Serve agentd.v1.QueryControlService.
    pub query: bool,
    /// Serve agentd.v1.AgentService.
    pub agents: bool,
}

impl Services {
    /// Whether `kind` is served.
    pub fn enabled(&self, kind: ServiceKind) -> bool {
        match kind {
            ServiceKind::Embedding => self.embedding,
            ServiceKind::Memory => self.memory,
            ServiceKind::Query => self.query,
            ServiceKind::Agents => self.agents,
        }
    }

    /// The services that are served.
    pub fn enabled_kinds(self) -> impl Iterator<Item = ServiceKind> {
        ServiceKind::ALL
            .into_iter()
            .filter(move |k| self.enabled(*k))
    }

    fn disable(&mut self, kind: ServiceKind) {
        match kind {
            ServiceKind::Embedding => self.embedding = false,
            ServiceKind::Memory => self.memory = false,
            ServiceKind::Query => self.query = false,
            ServiceKind::Agents => self.agents = false,
        }
    }
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address (used by `main`; [`crate::server::run`] takes a
    /// bound listener).
    pub listen: SocketAddr,
    /// Directory for durable data.
    pub data_dir: PathBuf,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Time calls in flight get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Which services are served.
    pub services: Services,
    /// The embedding engine's models and limits.
    pub embedding: EmbeddingConfig,
    /// The memory engine's caches and snapshots.
    pub memory: MemoryConfig,
    /// The query engine's models, routing and caches.
    pub query: QueryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Text,
            log: "info".to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            services: Services {
                embedding: true,
                memory: true,
                query: true,
                agents: true,
            },
            embedding: EmbeddingConfig::default(),
            memory: MemoryConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

impl Config {
    /// Builds the configuration from parsed flags (which already include the
    /// environment) and the config file, then validates it.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => FileConfig::default(),
        };
        Config::merge(args, file)
    }

    /// Parses a config file's text, layers `args` over it and validates.
    pub fn from_toml(args: &ServeArgs, text: &str) -> anyhow::Result<Config> {
        let file: FileConfig = toml::from_str(text)?;
        Config::merge(args, file)
    }

    fn merge(args: &ServeArgs, file: FileConfig) -> anyhow::Result<Config> {
        let defaults = Config::default();
        let mut services = Services {
            embedding: file.services.embedding,
            memory: file.services.memory,
            query: file.services.query,
            agents: file.services.agents,
        };
        for kind in &args.disable {
            services.disable(*kind);
        }
        let config = Config {
            listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(defaults.log_format),
            log: args.log.clone().or(file.log).unwrap_or(defaults.log),
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(defaults.max_message_bytes),
            shutdown_grace: args
                .shutdown_grace
                .or(file.shutdown_grace)
                .unwrap_or(defaults.shutdown_grace),
            services,
            embedding: EmbeddingConfig::merge(args, file.embedding)?,
            memory: MemoryConfig {
                search_cache_bytes: file
                    .memory
                    .search_cache_bytes
                    .unwrap_or(defaults.memory.search_cache_bytes),
                snapshot_interval: file
                    .memory
                    .snapshot_interval
                    .unwrap_or(defaults.memory.snapshot_interval),
            },
            query: file.query,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its documented limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.memory.snapshot_interval < Duration::from_secs(1) {
            bail!(
                "memory snapshot_interval must be at least 1s, got {:?}",
                self.memory.snapshot_interval
            );
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            bail!(
                "max_message_bytes must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}, got {}",
                self.max_message_bytes
            );
        }
        if self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            bail!(
                "shutdown_grace must be at most {}, got {}",
                humantime::format_duration(MAX_SHUTDOWN_GRACE),
                humantime::format_duration(self.shutdown_grace)
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        self.query.validate()
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::from_toml(&ServeArgs::default(), "").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert!(config.services.embedding && config.services.agents);
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let text = r#"
            listen = "127.0.0.1:7000"
            data_dir = "/var/lib/agentd"
            shutdown_grace = "3s"
            log_format = "json"
            [services]
            memory = false
        "#;
        let args = ServeArgs {
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            disable: vec![ServiceKind::Query],
            ..ServeArgs::default()
        };
        let config = Config::from_toml(&args, text).unwrap();
        assert_eq!(config.listen.port(), 8000, "flag wins over file");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/agentd"));
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(!config.services.memory, "disabled in file");
        assert!(!config.services.query, "disabled by flag");
        assert!(config.services.embedding);
    }

    #[test]
    fn embedding_models_come_from_the_file_and_the_model_dir_flag() {
        let text = r#"
            [embedding]
            max_inputs = 8
            [[embedding.models]]
            id = "h"
            kind = "hash"
            dimensions = 128
        "#;
        let config = Config::from_toml(&ServeArgs::default(), text).unwrap();
        assert_eq!(
            config.embedding.models.len(),
            1,
            "an explicit list replaces the built-in one"
        );
        assert_eq!(config.embedding.default_model, "h");
        assert_eq!(config.embedding.limits.max_inputs, 8);

        let args = ServeArgs {
            embedding_model_dir: Some(PathBuf::from("/opt/models/bge-small")),
            ..ServeArgs::default()
        };
        let config = Config::from_toml(&args, "").unwrap();
        assert_eq!(config.embedding.default_model, "bge-small");
        assert_eq!(
            config.embedding.models[0].path,
            Some(PathBuf::from("/opt/models/bge-small"))
        );
        assert!(
            config
                .embedding
                .models
                .iter()
                .any(|m| m.kind == ModelKind::Hash)
        );
    }

    #[test]
    fn bad_embedding_settings_are_rejected() {
        let args = ServeArgs::default();
        let err = Config::from_toml(&args, "[embedding]\ndefault_model = \"nope\"").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let text = "[[embedding.models]]\nid = \"b\"\nkind = \"bert\"";
        let err = Config::from_toml(&args, text).unwrap_err();
        assert!(err.to_string().contains("needs a path"), "{err}");
        let text = "[[embedding.models]]\nid = \"h\"\nkind = \"hash\"\ndimensions = 0";
        let err = Config::from_toml(&args, text).unwrap_err();
        assert!(
            err.to_string().contains("dimensions must be 1 to 4096"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_out_of_range_values_are_rejected() {
        let args = ServeArgs::default();
        let err = Config::from_toml(&args, "listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err = Config::from_toml(&args, "max_message_bytes = 10").unwrap_err();
        assert!(err.to_string().contains("max_message_bytes"), "{err}");
        let err = Config::from_toml(&args, "shutdown_grace = \"2h\"").unwrap_err();
        assert!(err.to_string().contains("shutdown_grace"), "{err}");
    }
}
