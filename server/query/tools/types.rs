//! The plain types of tool calling: what a query offers the model, what the
//! model asks for, and what comes back.
//!
//! Like the rest of `query::types` they carry no protobuf and are serde
//! types, since calls and results are part of a query's persisted log.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolLocation {
    /// The client runs it and sends the result.
    Client,
    /// agentd runs it (a built-in tool).
    Server,
    /// An external worker with a capability runs it (the Agent engine).
    Worker,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    /// Where it runs.
    pub location: ToolLocation,
    /// Worker tools: the capability a worker needs.
    pub worker_capability: String,
    /// How long a call may wait for its result; `None` is the server's
    /// default.
    pub timeout: Option<Duration>,
}

/// How the model may use the tools.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Named(String),
}

/// A tool as a provider describes it to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDescription {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique within the query.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments: a JSON object, or the raw text the model produced when
    /// it was not one (a `Value::String`).
    pub arguments: Value,
}

impl ToolCall {
    /// A call whose arguments are the model's JSON text `raw` (empty text
    /// meaning no arguments); text that is not a JSON object is kept as it
    /// is, to be answered with an error.
    pub fn from_raw(id: String, name: String, raw: &str) -> Self {
        let arguments = if raw.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str::<Value>(raw) {
                Ok(v @ Value::Object(_)) => v,
                _ => Value::String(raw.to_owned()),
            }
        };
        Self {
            id,
            name,
            arguments,
        }
    }

    /// The arguments when they are a JSON object.
    pub fn object(&self) -> Option<&Map<String, Value>> {
        self.arguments.as_object()
    }

    /// The arguments as JSON text, as the model gave them: what providers
    /// send back in the conversation.
    pub fn arguments_text(&self) -> String {
        match &self.arguments {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        }
    }
}

/// What a tool call gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutcome {
    /// The result, or the error when `is_error`.
    pub content: String,
    /// The tool failed or was not run.
    pub is_error: bool,
}

impl ToolOutcome {
    /// A result.
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }

    /// An error, for the model to read.
    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
        }
    }
}

/// A tool call as GetQuery shows it: the call, where it ran, in which turn,
/// and its result once it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The call.
    pub call: ToolCall,
    /// Where the tool runs.
    pub location: ToolLocation,
    /// The model turn that made it, from 1.
    pub turn: u32,
    /// The result, once there is one.
    pub outcome: Option<ToolOutcome>,
}
