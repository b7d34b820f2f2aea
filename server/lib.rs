//! agentd: one gRPC server that gives AI-agent applications embeddings,
//! memory, controllable LLM query sessions and agents.
//!
//! # Layout
//!
//! Data flows one way: **api → domain → store**.
//!
//! - [`pb`]: code generated from `proto/agentd/v1/*.proto` by `build.rs`. The
//!   .proto files are the contract; nothing here is edited by hand.
//! - [`config`]: the one validated [`config::Config`], layered from flags,
//!   `AGENTD_*` environment variables, an optional `agentd.toml` and defaults.
//! - [`server`]: [`server::run`], the single entry point that serves every
//!   service, health and reflection on one listener until a shutdown future
//!   resolves.
//! - [`api`]: the tonic services. They validate, convert between protobuf and
//!   domain types and map domain errors to `tonic::Status`; nothing else. It is
//!   the only module that knows tonic or the generated types.
//! - [`error`]: the domain error every engine returns, free of tonic.
//! - [`embed`], [`memory`], [`query`], `agents`: the engines. Each keeps
//!   its parts private and exposes its own types from its root; engines
//!   reach each other only through those (the embedding engine's
//!   `TextEmbedder`, say), never through another's modules.
//! - `tools`: the built-in tools a query's model can call (memory search,
//!   key-value memory, embeddings), joining the query engine's tool trait
//!   to the other engines.
//! - [`security`]: API keys (scopes, namespace prefixes, limits) and the
//!   audit log; `api::guard` applies them to every call.
//! - `store`: durable storage behind narrow traits, the source of truth.
//! - `common`: small neutral pieces every engine shares (clock, vector
//!   maths, the lock policy, blocking-pool calls, paging, timing).
//! - [`telemetry`]: logging set-up (text or JSON).
//! - [`metrics`]: the Prometheus recorder, the metric catalog and `/metrics`.
//!
//! Only what the binary, the tests and the benchmarks need is public:
//! the configuration, [`server`], the generated types, and a few engine
//! parts that tests hold against reference implementations.
//!
//! `main.rs` only parses the command line and calls [`server::run`]; tests do
//! the same with a listener on `127.0.0.1:0` and their own shutdown future.

pub(crate) mod agents;
pub(crate) mod api;
pub(crate) mod common;
pub mod config;
pub mod embed;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod query;
pub mod security;
pub mod server;
pub(crate) mod store;
pub mod telemetry;
pub(crate) mod tools;

/// Generated protobuf messages, service servers and clients.
pub mod pb {
    /// Package `agentd.v1`: the four services and their messages.
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("agentd.v1");
    }

    /// Encoded `FileDescriptorSet` of every agentd .proto file, served by
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agentd_descriptor");

    /// Encoded `FileDescriptorSet` of `google/rpc/error_details.proto`, served
    /// by server reflection so that tools such as grpcurl decode the error
    /// details agentd sends.
    pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("error_details_descriptor");
}

pub use error::{Error, Result};
