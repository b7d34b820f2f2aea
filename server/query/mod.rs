//! The query engine: LLM query sessions that pause, resume and switch model
//! mid-answer without losing a token.
//!
//! # How a query runs
//!
//! [`QueryEngine::start`] records the query and spawns its [`driver`], the
//! one task that talks to model providers and appends to the query's event
//! log ([`session::Query`]). Commands (Pause, Resume, SwitchModel, Inject,
//! Terminate) reach the driver through a channel and are handled between
//! deltas; readers (Session and Attach streams) follow the log. The
//! transcript in the log is the truth: a Resume or a fallback asks the next
//! provider to *continue* it.
//!
//! - [`types`], [`events`]: plain types of requests, states and events.
//! - [`provider`]: the [`provider::ModelProvider`] trait; [`openai`] and
//!   [`anthropic`] speak their HTTP APIs over server-sent events ([`sse`],
//!   [`http`]).
//! - [`models`]: aliases → providers, prices, fallback chains, cooldowns.
//! - [`cache`], [`semantic`]: the exact and the semantic result caches.
//! - [`settings`]: `[query]` of agentd.toml.

pub mod anthropic;
pub mod cache;
pub mod driver;
pub mod engine;
pub mod events;
pub mod http;
pub mod local;
pub mod models;
pub mod openai;
pub mod provider;
pub mod semantic;
pub mod session;
pub mod settings;
pub mod sse;
pub mod types;

pub use engine::QueryEngine;

/// Where `scripts/fetch-models` puts the local GGUF model; the `local`
/// alias exists by default when this file does.
pub const DEFAULT_LOCAL_MODEL: &str = "models/gemma-3-270m/gemma-3-270m-Q4_K_M.gguf";

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    crate::memory::kv::now_ms()
}
