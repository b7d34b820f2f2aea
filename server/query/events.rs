//! A query's event log and the record that summarises it.
//!
//! The log is the truth a client sees: Session and Attach streams are reads
//! of it from some position, so a client that reconnects, or attaches from
//! elsewhere, gets exactly what a client that never left got. Deltas carry
//! their own `seq` (1, 2, 3, ... with no gaps); every event carries its
//! position in the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tools::{ToolCall, ToolCallRecord, ToolLocation, ToolOutcome};
use super::types::{CacheKind, ChatMessage, FinishReason, QueryState, SwitchReason, TokenUsage};
use crate::error::{Error, FieldViolation};

/// One entry of a query's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1.
    pub index: u64,
    /// When it was recorded, Unix milliseconds.
    pub time_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// Accepted; `model` generates first.
    Started {
        /// Alias.
        model: String,
    },
    /// Generated text.
    Delta {
        /// Position in the transcript.
        seq: u64,
        /// The text.
        text: String,
        /// Alias that produced it.
        model: String,
        /// Replayed from the result cache.
        cached: bool,
    },
    /// Generation stopped after delta `seq`.
    Paused {
        /// Last delta before the pause.
        seq: u64,
    },
    /// Generation continues after delta `seq` on `model`.
    Resumed {
        /// Last delta before resuming.
        seq: u64,
        /// Alias that continues.
        model: String,
    },
    /// Another model takes over after delta `seq`.
    ModelSwitched {
        /// Previous alias.
        from: String,
        /// New alias.
        to: String,
        /// Last delta of the previous model.
        seq: u64,
        /// Why.
        reason: SwitchReason,
    },
    /// Totals so far.
    Usage {
        /// Tokens.
        usage: TokenUsage,
        /// US dollars.
        cost_usd: f64,
    },
    /// The answer is complete.
    Completed {
        /// Why it ended.
        finish_reason: FinishReason,
        /// The whole answer.
        text: String,
        /// Final tokens.
        usage: TokenUsage,
        /// Final cost.
        cost_usd: f64,
    },
    /// No model could continue.
    Failed {
        /// What went wrong.
        error: QueryError,
    },
    /// A client ended the query.
    Terminated {
        /// Last delta.
        seq: u64,
        /// The reason given.
        reason: String,
        /// The text so far.
        text: String,
    },
    /// The answer is replayed from the cache.
    CacheHit {
        /// Which cache.
        kind: CacheKind,
        /// Prompt similarity (1 for exact).
        similarity: f32,
        /// Query whose answer is replayed.
        source_query_id: String,
    },
    /// A routing rule fired.
    RuleFired {
        /// Its name.
        rule: String,
        /// What was observed.
        detail: String,
        /// Alias switched to.
        switch_to_model: String,
    },
    /// A command on a Session stream was refused.
    CommandRejected {
        /// Why.
        error: QueryError,
    },
    /// A message was added after delta `seq`.
    Injected {
        /// Last delta before it.
        seq: u64,
        /// The message.
        message: ChatMessage,
    },
    /// The query waits in `model`'s queue, at `position` (1: next).
    Queued {
        /// Alias waited for.
        model: String,
        /// Place in the queue.
        position: u64,
    },
    /// The model called a tool (the calls of a turn come together, when
    /// the turn ends).
    ToolCall {
        /// The call.
        call: ToolCall,
        /// Where the tool runs.
        location: ToolLocation,
        /// Last delta before the call.
        seq: u64,
        /// The model turn, from 1.
        turn: u32,
    },
    /// A tool call has its result.
    ToolResult {
        /// The call.
        call_id: String,
        /// The tool.
        name: String,
        /// What it gave.
        outcome: ToolOutcome,
    },
}

impl EventKind {
    /// True for the events that end a query.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            EventKind::Completed { .. } | EventKind::Failed { .. } | EventKind::Terminated { .. }
        )
    }
}

/// The kind of a [`QueryError`], which decides its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryErrorKind {
    /// A field of the command is invalid.
    InvalidArgument,
    /// A named model or query does not exist.
    NotFound,
    /// Not allowed in the query's state.
    WrongState,
    /// An upstream provider failed.
    Provider,
    /// A timeout elapsed.
    Timeout,
    /// A model's queue or the server was full.
    Overloaded,
    /// A spending limit was reached.
    BudgetExceeded,
    /// Anything else.
    Internal,
}

/// An error kept in the event log (so it can be persisted and replayed),
/// built from and turned back into the engine's [`Error`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryError {
    /// Kind.
    pub kind: QueryErrorKind,
    /// Human-readable description.
    pub message: String,
    /// Invalid fields: (path, what is wrong); for NotFound, the one
    /// (kind, name) that was not found.
    pub field_violations: Vec<(String, String)>,
}

impl From<&Error> for QueryError {
    fn from(err: &Error) -> Self {
        let (kind, field_violations, message) = match err {
            Error::InvalidArgument(v) => (
                QueryErrorKind::InvalidArgument,
                v.iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect(),
                err.to_string(),
            ),
            Error::NotFound { kind, name } => (
                QueryErrorKind::NotFound,
                vec![((*kind).to_owned(), name.clone())],
                err.to_string(),
            ),
            Error::WrongState(m) => (QueryErrorKind::WrongState, vec![], m.clone()),
            Error::Provider(m) => (QueryErrorKind::Provider, vec![], m.clone()),
            Error::Timeout(m) => (QueryErrorKind::Timeout, vec![], m.clone()),
            Error::Overloaded(m) => (QueryErrorKind::Overloaded, vec![], m.clone()),
            Error::BudgetExceeded(m) => (QueryErrorKind::BudgetExceeded, vec![], m.clone()),
            _ => (QueryErrorKind::Internal, vec![], err.to_string()),
        };
        QueryError {
            kind,
            message,
            field_violations,
        }
    }
}

impl QueryError {
    /// The engine error this stands for, for the one error-to-status map.
    pub fn to_error(&self) -> Error {
        match self.kind {
            QueryErrorKind::InvalidArgument => Error::InvalidArgument(
                self.field_violations
                    .iter()
                    .map(|(f, d)| FieldViolation::new(f, d))
                    .collect(),
            ),
            QueryErrorKind::NotFound => {
                let (kind, name) = self.field_violations.first().cloned().unwrap_or_default();
                Error::NotFound {
                    kind: match kind.as_str() {
                        "query" => "query",
                        "model" => "model",
                        "tool call" => "tool call",
                        _ => "resource",
                    },
                    name,
                }
            }
            QueryErrorKind::WrongState => Error::WrongState(self.message.clone()),
            QueryErrorKind::Provider => Error::Provider(self.message.clone()),
            QueryErrorKind::Timeout => Error::Timeout(self.message.clone()),
            QueryErrorKind::Overloaded => Error::Overloaded(self.message.clone()),
            QueryErrorKind::BudgetExceeded => Error::BudgetExceeded(self.message.clone()),
            QueryErrorKind::Internal => Error::Internal(self.message.clone()),
        }
    }
}

/// One stretch of the answer produced by one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpan {
    /// Alias.
    pub model: String,
    /// First seq it produced (empty span if greater than `to_seq`).
    pub from_seq: u64,
    /// Last seq it produced.
    pub to_seq: u64,
    /// Why it took over.
    pub reason: SwitchReason,
    /// When, Unix milliseconds.
    pub started_at_ms: i64,
}

/// What is known about a query: the summary GetQuery and ListQueries show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryInfo {
    /// Id (a ULID).
    pub id: String,
    /// State.
    pub state: QueryState,
    /// Current or last alias.
    pub model: String,
    /// Models in order of use.
    pub model_history: Vec<ModelSpan>,
    /// Tokens.
    pub usage: TokenUsage,
    /// US dollars.
    pub cost_usd: f64,
    /// Deltas produced.
    pub delta_count: u64,
    /// Why it finished, once completed.
    pub finish_reason: Option<FinishReason>,
    /// The error, once failed.
    pub error: Option<QueryError>,
    /// Start, Unix milliseconds.
    pub created_at_ms: i64,
    /// First delta, Unix milliseconds.
    pub first_token_at_ms: Option<i64>,
    /// End, Unix milliseconds.
    pub finished_at_ms: Option<i64>,
    /// Labels given at start.
    pub labels: BTreeMap<String, String>,
    /// Model turns so far.
    #[serde(default)]
    pub turns: u32,
    /// Every tool call, in order, with its result once it has one.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallRecord>,
}
