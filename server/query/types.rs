//! The plain types of a query: what a caller asks for and how a query stands.
//!
//! They mirror `agentd.v1` messages but carry no protobuf: `api::query`
//! converts, the engine works on these. They are serde types because a
//! finished query's record and events are persisted as JSON in the store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The human or calling agent.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The name chat APIs use: "system", "user", "assistant".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Sampling and length settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// Most output tokens in total across all models; 0 means the server
    /// default.
    pub max_tokens: u32,
    /// Sampling temperature; `None` is the provider's default.
    pub temperature: Option<f32>,
    /// Nucleus sampling; `None` is the provider's default.
    pub top_p: Option<f32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Sampling seed.
    pub seed: Option<u64>,
}

/// Which result caches a query may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheMode {
    /// Neither read nor write.
    Off,
    /// Identical model, messages and params.
    Exact,
    /// Exact, then similar prompts.
    Semantic,
}

/// Result cache settings of one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachePolicy {
    /// Which caches.
    pub mode: CacheMode,
    /// Least cosine similarity for a semantic hit.
    pub similarity_threshold: f32,
    /// Scope of semantic sharing.
    pub namespace: String,
    /// Skip reading, still write.
    pub refresh: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            mode: CacheMode::Exact,
            similarity_threshold: DEFAULT_SIMILARITY,
            namespace: String::new(),
            refresh: false,
        }
    }
}

/// Semantic-cache similarity used when a request gives none.
pub const DEFAULT_SIMILARITY: f32 = 0.95;

/// When a routing rule fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleTrigger {
    /// The query's cost so far exceeds this many US dollars.
    CostExceedsUsd(f64),
    /// No first token within this time of (re)starting a model.
    FirstTokenLatencyExceeds(Duration),
    /// Output tokens so far exceed this count.
    OutputTokensExceed(u64),
}

/// A condition under which a query switches model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Name shown when it fires.
    pub name: String,
    /// When.
    pub trigger: RuleTrigger,
    /// Alias to switch to.
    pub switch_to_model: String,
}

/// Everything needed to start a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartQuery {
    /// Model alias that generates first.
    pub model: String,
    /// The conversation (no system prompt).
    pub messages: Vec<ChatMessage>,
    /// System prompt; empty for none.
    pub system_prompt: String,
    /// Sampling and length.
    pub params: GenerationParams,
    /// Cache use.
    pub cache: CachePolicy,
    /// Rules besides the configured ones.
    pub rules: Vec<Rule>,
    /// Fallback chain overriding the alias's configured one.
    pub fallback_models: Vec<String>,
    /// Longest run time, pauses excluded.
    pub timeout: Option<Duration>,
    /// Labels for listing.
    pub labels: BTreeMap<String, String>,
}

/// Lifecycle state of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryState {
    /// Generating (or waiting to retry).
    Running,
    /// Stopped by a client until resumed.
    Paused,
    /// Finished normally.
    Completed,
    /// Ended by a client.
    Terminated,
    /// No model could continue.
    Failed,
}

impl QueryState {
    /// True once the query can no longer change.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            QueryState::Completed | QueryState::Terminated | QueryState::Failed
        )
    }

    /// Lower-case name for messages and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::Running => "running",
            QueryState::Paused => "paused",
            QueryState::Completed => "completed",
            QueryState::Terminated => "terminated",
            QueryState::Failed => "failed",
        }
    }
}

/// Why generation finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// A stop sequence was produced.
    StopSequence,
    /// The context window is full.
    ContextWindow,
}

/// Why a query changed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwitchReason {
    /// A client asked.
    Requested,
    /// A rule fired.
    Rule,
    /// The previous model failed.
    Fallback,
}

/// Tokens read and produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input: u64,
    /// Generated tokens.
    pub output: u64,
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, other: Self) {
        self.input += other.input;
        self.output += other.output;
    }
}

/// Which cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheKind {
    /// Identical request.
    Exact,
    /// Similar prompt.
    Semantic,
}
