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
//! - [`provider`]: the `ModelProvider` trait; [`openai`] and
//!   [`anthropic`] speak their HTTP APIs over server-sent events ([`sse`],
//!   [`http`]).
//! - [`models`]: aliases → providers, prices, fallback chains, cooldowns.
//! - [`cache`], [`semantic`]: the exact and the semantic result caches.
//! - [`validate`]: every limit and rule a request must meet.
//! - [`local`]: the `local` provider, Gemma 3 on candle.
//! - [`tools`]: tool calling: tools, calls, results, argument schemas, the
//!   built-in tools' interface, the way out to workers.
//! - [`settings`]: `[query]` of agentd.toml.

pub(crate) mod anthropic;
pub(crate) mod cache;
pub(crate) mod driver;
pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod http;
pub(crate) mod local;
pub(crate) mod models;
pub(crate) mod openai;
pub(crate) mod provider;
pub(crate) mod semantic;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod sse;
pub(crate) mod tools;
pub(crate) mod types;
pub(crate) mod validate;

pub(crate) use validate::check_tools;

pub(crate) use engine::{QueryEngine, QueryStats, SHUTDOWN_REASON, Switched};
pub(crate) use events::{Event, EventKind, ModelSpan, QueryError, QueryErrorKind, QueryInfo};
pub(crate) use local::LocalProvider;
/// The local model's own tokenizer and forward pass, for the tests that
/// hold them against llama.cpp.
pub use local::{Gemma3, Tokenizer};
pub(crate) use models::{ModelListing, ModelRegistry};
pub(crate) use provider::{ModelProvider, estimate_tokens};
pub(crate) use session::Query;
pub use settings::{ModelAliasSpec, ProviderKind, QueryConfig, RuleSpec};
pub use tools::{
    ServerTool, ServerTools, ToolCall, ToolCallRecord, ToolChoice, ToolDescription, ToolLocation,
    ToolOutcome, ToolSpec, WorkerToolCall, WorkerTools, schema_of,
};
pub(crate) use types::{
    CacheKind, CacheMode, CachePolicy, ChatMessage, DEFAULT_SIMILARITY, FinishReason,
    GenerationParams, QueryState, Role, Rule, RuleTrigger, StartQuery, SwitchReason, TokenUsage,
};

/// Where `scripts/fetch-models` puts the local GGUF model; the `local`
/// alias exists by default when this file does.
pub const DEFAULT_LOCAL_MODEL: &str = "models/gemma-3-270m/gemma-3-270m-Q4_K_M.gguf";
