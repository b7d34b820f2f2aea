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

use crate::agents::AgentsConfig;
use crate::embed::{EmbeddingConfig, EmbeddingFile};
use crate::memory::{MemoryConfig, MemoryFile};
use crate::query::QueryConfig;
use crate::security::AuditTarget;

/// Default gRPC listen address: loopback only, so a fresh install is not
/// reachable from the network until asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default address of `/metrics`: loopback, like the gRPC port.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";
/// Default largest gRPC message, in bytes (16 MiB): room for a 10,000-point
/// upsert of 384-dimensional vectors.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default time in-flight calls get after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Config file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "agentd.toml";

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

    /// Serve TLS with this certificate chain (PEM); needs --tls-key. Both
    /// files are re-read when they change or on SIGHUP.
    #[arg(long, env = "AGENTD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "AGENTD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by these CAs (PEM): mutual TLS.
    #[arg(long, env = "AGENTD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Require an API key on every call but health checks, from this keys
    /// file (TOML, or JSON by its .json extension; `agentd keys create`
    /// writes it). Re-read when it changes or on SIGHUP.
    #[arg(long, env = "AGENTD_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics, or "off"
    /// [default: 127.0.0.1:9090]
    #[arg(long, env = "AGENTD_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,

    /// Export traces (a span per call, the engines' children) over
    /// OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317 [default: off]
    #[arg(long, env = "AGENTD_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Where audit lines go: "log" (log target `audit`), "off", or a file
    /// appended to [default: "log" with --api-keys-file, else "off"]
    #[arg(long, env = "AGENTD_AUDIT_LOG", value_name = "TARGET")]
    pub audit_log: Option<String>,
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
    #[serde(default)]
    agents: AgentsConfig,
    #[serde(default)]
    tls: Option<TlsFile>,
    api_keys_file: Option<PathBuf>,
    audit_log: Option<String>,
    metrics_listen: Option<String>,
    otlp_endpoint: Option<String>,
}

/// `[tls]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// TLS on the gRPC port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to; `None`:
    /// clients need none.
    pub client_ca: Option<PathBuf>,
}

/// Who may call, and the record of what they did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// TLS, when served.
    pub tls: Option<TlsConfig>,
    /// The API keys file, when keys are required.
    pub api_keys_file: Option<PathBuf>,
    /// Where audit lines go.
    pub audit: AuditTarget,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls: None,
            api_keys_file: None,
            audit: AuditTarget::Off,
        }
    }
}

impl SecurityConfig {
    fn merge(args: &ServeArgs, file: &mut FileConfig) -> anyhow::Result<SecurityConfig> {
        let tls_file = file.tls.take().unwrap_or_default();
        let cert = args.tls_cert.clone().or(tls_file.cert);
        let key = args.tls_key.clone().or(tls_file.key);
        let client_ca = args.tls_client_ca.clone().or(tls_file.client_ca);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca,
            }),
            (None, None) if client_ca.is_some() => {
                bail!("tls client_ca needs a server certificate: set tls cert and key too")
            }
            (None, None) => None,
            (Some(_), None) => bail!("tls cert is set without tls key: set both"),
            (None, Some(_)) => bail!("tls key is set without tls cert: set both"),
        };
        let api_keys_file = args.api_keys_file.clone().or(file.api_keys_file.take());
        let audit = match args.audit_log.clone().or(file.audit_log.take()) {
            Some(target) if target.is_empty() => bail!("audit_log must not be empty"),
            Some(target) => target.parse().unwrap_or(AuditTarget::Off),
            None if api_keys_file.is_some() => AuditTarget::Log,
            None => AuditTarget::Off,
        };
        Ok(SecurityConfig {
            tls,
            api_keys_file,
            audit,
        })
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
    /// The agents engine's worker leases.
    pub agents: AgentsConfig,
    /// TLS, API keys, audit.
    pub security: SecurityConfig,
    /// Where `/metrics` is served; `None`: nowhere (and nothing recorded).
    pub metrics_listen: Option<SocketAddr>,
    /// Whether `metrics_listen` was asked for (flag, variable or file):
    /// then a port already taken fails the start; the default one taken
    /// (Prometheus itself listens on 9090) only turns metrics off, with a
    /// warning.
    pub metrics_listen_explicit: bool,
    /// The OTLP/gRPC collector traces go to; `None`: no traces.
    pub otlp_endpoint: Option<String>,
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
            agents: AgentsConfig::default(),
            security: SecurityConfig::default(),
            metrics_listen: Some(
                DEFAULT_METRICS_LISTEN
                    .parse()
                    .expect("valid default address"),
            ),
            otlp_endpoint: None,
            metrics_listen_explicit: false,
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

    fn merge(args: &ServeArgs, mut file: FileConfig) -> anyhow::Result<Config> {
        let defaults = Config::default();
        let security = SecurityConfig::merge(args, &mut file)?;
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
            embedding: EmbeddingConfig::merge(args.embedding_model_dir.as_deref(), file.embedding)?,
            memory: MemoryConfig::from_file(file.memory)?,
            query: file.query,
            agents: file.agents,
            security,
            otlp_endpoint: match args.otlp_endpoint.clone().or(file.otlp_endpoint) {
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    bail!("otlp_endpoint must be an http:// or https:// URL, got {url:?}")
                }
                endpoint => endpoint,
            },
            metrics_listen_explicit: args.metrics_listen.is_some() || file.metrics_listen.is_some(),
            metrics_listen: match args.metrics_listen.clone().or(file.metrics_listen) {
                None => defaults.metrics_listen,
                Some(off) if off == "off" => None,
                Some(addr) => Some(addr.parse().with_context(|| {
                    format!("metrics_listen must be an address (IP:port) or \"off\", got {addr:?}")
                })?),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its documented limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.memory.validate()?;
        self.agents.validate()?;
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
    use crate::embed::ModelKind;

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
    fn security_settings_pair_up_and_audit_follows_the_keys() {
        let args = ServeArgs::default();
        let config = Config::from_toml(&args, "").unwrap();
        assert_eq!(config.security, SecurityConfig::default());
        let text = "api_keys_file = \"keys.toml\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"";
        let config = Config::from_toml(&args, text).unwrap();
        assert_eq!(
            config.security.audit,
            AuditTarget::Log,
            "keys turn the audit log on"
        );
        assert_eq!(config.security.tls.unwrap().cert, PathBuf::from("c.pem"));
        let args = ServeArgs {
            audit_log: Some("/tmp/audit.jsonl".into()),
            ..ServeArgs::default()
        };
        let config = Config::from_toml(&args, "").unwrap();
        assert_eq!(
            config.security.audit,
            AuditTarget::File("/tmp/audit.jsonl".into())
        );
        for (text, expected) in [
            ("[tls]\ncert = \"c.pem\"", "without tls key"),
            ("[tls]\nkey = \"k.pem\"", "without tls cert"),
            (
                "[tls]\nclient_ca = \"ca.pem\"",
                "needs a server certificate",
            ),
        ] {
            let err = Config::from_toml(&ServeArgs::default(), text).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
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
