//! The plain types of a query: what a caller asks for and how a query stands.
//!
//! They mirror `agentd.v1` messages but carry no protobuf: `api::query`
//! converts, the engine works on these. They are serde types because a
//! finished query's record and events are persisted as JSON in the store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tools::{ToolCall, ToolChoice, ToolSpec};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The human or calling agent.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

impl Role {
    /// The name chat APIs use: "system", "user", "assistant".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message. The tool fields are empty for plain messages, and
/// then not serialized (so the exact cache's keys of plain conversations
/// are what they were before tools existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text; for a tool message, the result.
    pub content: String,
    /// Assistant messages: the tool calls made after `content`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_call_id: String,
    /// Tool messages: the content is an error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
            is_error: false,
        }
    }

    /// True for a message that is part of a tool exchange (a call or a
    /// result).
    pub fn has_tool_use(&self) -> bool {
        self.role == Role::Tool || !self.tool_calls.is_empty()
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
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// How it may use them.
    pub tool_choice: ToolChoice,
    /// Most model turns; 0 is the default.
    pub max_turns: u32,
    /// The most the query may cost, in US dollars (set by the agents
    /// engine for a task's budget); the query fails at the first token
    /// that passes it.
    pub max_cost_usd: Option<f64>,
    /// The query's id, when the caller chose it (a ULID: the agents engine
    /// records a task's query before starting it); a new ULID otherwise.
    pub id: Option<String>,
}

impl StartQuery {
    /// True when the query offers tools or its conversation holds tool
    /// calls: only models that support tools can serve it.
    pub fn needs_tools(&self) -> bool {
        !self.tools.is_empty() || self.messages.iter().any(ChatMessage::has_tool_use)
    }
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
    /// Waiting for the results of the model's tool calls.
    AwaitingTools,
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
            QueryState::AwaitingTools => "awaiting_tools",
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
    /// `max_turns` model turns, and the last still called tools.
    MaxTurns,
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
