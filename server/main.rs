//! The `agentd` command: parses the command line and hands over to the library.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use agentd::config::{Config, ServeArgs};

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
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    agentd::telemetry::init(config.log_format, &config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Idle blocking-pool threads (store calls, searches) exit after a
        // second instead of ten: a burst does not leave hundreds behind.
        .thread_keep_alive(Duration::from_secs(1))
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        agentd::server::run(config, listener, agentd::server::shutdown_signal()).await
    });
    // `run` has ended every query and written what matters; blocking work
    // still running (a search, a snapshot) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    served
}
