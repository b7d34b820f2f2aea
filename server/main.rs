//! The `agentd` command: parses the command line and hands over to the library.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use agentd::config::{Config, ServeArgs};
use agentd::security::{KeyLimitSettings, NewKey, Scope, add_key, read_keys, remove_key};

/// agentd: embeddings, memory, controllable LLM query sessions and agents
/// for AI-agent applications, over gRPC on one port.
#[derive(Debug, Parser)]
#[command(name = "agentd", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every service, health and reflection on one gRPC port until
    /// SIGINT or SIGTERM. Every flag can also be set by the AGENTD_* variable
    /// shown, or in the config file.
    Serve(Box<ServeArgs>),
    /// Manage the API keys file a server requires keys from
    /// (--api-keys-file). A running server picks changes up within a
    /// second, or at once on SIGHUP.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key: prints it once (it is stored nowhere, only its SHA-256
    /// goes to the file) and adds its entry to the file.
    Create(CreateKey),
    /// List the keys in the file: id, name, scope, namespaces, limits.
    List {
        /// The keys file.
        #[arg(long, env = "AGENTD_API_KEYS_FILE", value_name = "FILE")]
        keys_file: std::path::PathBuf,
    },
    /// Remove a key from the file by its id.
    Revoke {
        /// The keys file.
        #[arg(long, env = "AGENTD_API_KEYS_FILE", value_name = "FILE")]
        keys_file: std::path::PathBuf,
        /// The key's id (key_...).
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct CreateKey {
    /// The keys file; created if missing.
    #[arg(long, env = "AGENTD_API_KEYS_FILE", value_name = "FILE")]
    keys_file: std::path::PathBuf,
    /// What the key may do; each scope includes the ones before it.
    #[arg(long, value_enum)]
    scope: Scope,
    /// Limit the key to key-value namespaces and collections whose names
    /// start with this prefix (repeat for several).
    #[arg(long = "namespace", value_name = "PREFIX")]
    namespaces: Vec<String>,
    /// A label for people: who or what uses the key.
    #[arg(long)]
    name: Option<String>,
    /// Calls per second, on average.
    #[arg(long)]
    requests_per_second: Option<f64>,
    /// Calls at once above the average [default: one second's worth].
    #[arg(long)]
    burst: Option<u32>,
    /// Streaming calls open at once.
    #[arg(long)]
    max_streams: Option<u32>,
    /// Model tokens per minute over QueryControl.
    #[arg(long)]
    tokens_per_minute: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Keys(command) => keys(command),
    }
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(c) => {
            let limits = KeyLimitSettings {
                requests_per_second: c.requests_per_second,
                burst: c.burst,
                max_streams: c.max_streams,
                tokens_per_minute: c.tokens_per_minute,
            };
            let key = NewKey::generate(c.scope, c.namespaces, c.name, limits)?;
            add_key(&c.keys_file, key.entry.clone())?;
            eprintln!(
                "key {} ({}) added to {}; it is shown only now:",
                key.entry.id,
                key.entry.scope.name(),
                c.keys_file.display()
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { keys_file } => {
            for key in read_keys(&keys_file)? {
                let limits = key.limits();
                println!(
                    "{}\t{}\t{}\tnamespaces={}\trps={}\tstreams={}\ttpm={}\t{}",
                    key.id,
                    key.scope.name(),
                    key.name.as_deref().unwrap_or("-"),
                    if key.namespaces.is_empty() {
                        "*".to_owned()
                    } else {
                        key.namespaces.join(",")
                    },
                    limits
                        .requests_per_second
                        .map_or("-".into(), |v| v.to_string()),
                    limits.max_streams.map_or("-".into(), |v| v.to_string()),
                    limits
                        .tokens_per_minute
                        .map_or("-".into(), |v| v.to_string()),
                    key.created.as_deref().unwrap_or("-"),
                );
            }
        }
        KeysCommand::Revoke { keys_file, id } => {
            if !remove_key(&keys_file, &id)? {
                anyhow::bail!("no key {id} in {}", keys_file.display());
            }
            eprintln!("key {id} removed from {}", keys_file.display());
        }
    }
    Ok(())
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Idle blocking-pool threads (store calls, searches) exit after a
        // second instead of ten: a burst does not leave hundreds behind.
        .thread_keep_alive(Duration::from_secs(1))
        .build()
        .context("starting the async runtime")?;
    let telemetry = agentd::telemetry::init(
        config.log_format,
        &config.log,
        config.otlp_endpoint.as_deref(),
    )?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        agentd::server::run(config, listener, agentd::server::shutdown_signal()).await
    });
    // `run` has ended every query and written what matters; blocking work
    // still running (a search, a snapshot) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    // Every task is gone, so every span is closed: send the last ones.
    telemetry.shutdown();
    served
}
