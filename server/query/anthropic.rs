//! The `anthropic` provider: the Anthropic Messages API with streaming
//! events (`message_start`, `content_block_delta`, `message_delta`,
//! `message_stop`, `ping`, `error`).
//!
//! Continuation uses assistant prefill: the answer so far is the final
//! assistant message and the model writes what follows. The API refuses a
//! prefill that ends in whitespace, so trailing whitespace is cut from it
//! and cut again from the start of the continuation (the transcript already
//! holds it), which keeps the joined text free of doubled spaces.
//!
//! Tools: described with `input_schema`; the model's calls stream as
//! `tool_use` content blocks whose input arrives as `input_json_delta`
//! fragments, handed on whole at the block's end. Earlier calls go back as
//! `tool_use` blocks of the assistant message, their results as
//! `tool_result` blocks of the next user message (consecutive results, and
//! a user message after them, are merged into one: the API wants the roles
//! to alternate).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{Decoded, Endpoint, SseDecoder, sse_call};
use super::provider::{
    Admission, GenerationRequest, ModelProvider, ProviderError, ProviderEvent, ProviderStream,
};
use super::sse::SseEvent;
use super::tools::{ToolCall, ToolChoice};
use super::types::{ChatMessage, FinishReason, Role, TokenUsage};

/// The API version header every request carries.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the Messages API; used when a query leaves
/// it to the provider.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic Messages endpoint.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    /// Base URL e.g. `https://api.anthropic.com`; `/v1/messages` is
    /// appended. The key goes in `x-api-key`.
    endpoint: Endpoint,
}

impl AnthropicProvider {
    /// A provider calling `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// The request body, and whether the continuation lost trailing
    /// whitespace that the answer's start must not repeat.
    pub fn body(request: &GenerationRequest) -> (Value, bool) {
        let mut messages = messages(&request.messages);
        let prefill = request.continuation.trim_end();
        let trimmed = prefill.len() != request.continuation.len();
        if !prefill.is_empty() {
            messages.push(json!({"role": "assistant", "content": prefill}));
        }
        let p = &request.params;
        let max_tokens = if p.max_tokens == 0 {
            DEFAULT_MAX_TOKENS
        } else {
            p.max_tokens
        };
        let mut body = json!({
            "model": request.model_id,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": true,
        });
        if !request.system.is_empty() {
            body["system"] = json!(request.system);
        }
        if let Some(t) = p.temperature {
            // The API's range is 0 to 1; agentd's is 0 to 2 (OpenAI's).
            body["temperature"] = json!(t.min(1.0));
        }
        if let Some(t) = p.top_p {
            body["top_p"] = json!(t);
        }
        if !p.stop.is_empty() {
            body["stop_sequences"] = json!(p.stop);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "description": t.description,
                        "input_schema": t.parameters,
                    })
                })
                .collect();
            body["tool_choice"] = match &request.tool_choice {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Named(name) => json!({"type": "tool", "name": name}),
            };
        }
        (body, trimmed)
    }
}

/// The conversation in the Messages format: plain messages keep plain
/// text content; tool calls and results become content blocks, and
/// consecutive messages of one role are merged.
fn messages(conversation: &[ChatMessage]) -> Vec<Value> {
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    for m in conversation {
        let (role, content) = match m.role {
            Role::Tool => (
                "user",
                json!([{
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id,
                    "content": m.content,
                    "is_error": m.is_error,
                }]),
            ),
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    // The API wants an object; arguments that were not one
                    // were answered with an error, which says so.
                    let input = c.object().cloned().map_or(json!({}), Value::Object);
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                ("assistant", Value::Array(blocks))
            }
            Role::Assistant => ("assistant", json!(m.content)),
            Role::User => ("user", json!(m.content)),
            Role::System => ("system", json!(m.content)),
        };
        match out.last_mut() {
            Some((last, previous))
                if *last == role && (content.is_array() || previous.is_array()) =>
            {
                let mut blocks = into_blocks(std::mem::take(previous));
                blocks.extend(into_blocks(content));
                *previous = Value::Array(blocks);
            }
            _ => out.push((role, content)),
        }
    }
    out.into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// Content as a list of blocks.
fn into_blocks(content: Value) -> Vec<Value> {
    match content {
        Value::Array(blocks) => blocks,
        Value::String(text) if text.is_empty() => Vec::new(),
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        other => vec![other],
    }
}

impl ModelProvider for AnthropicProvider {
    fn generate(&self, request: GenerationRequest, _admission: Admission) -> ProviderStream {
        let (body, trimmed) = Self::body(&request);
        let mut http = self
            .endpoint
            .post("/v1/messages", &body)
            .header("anthropic-version", API_VERSION);
        if let Some(key) = &self.endpoint.key {
            http = http.header("x-api-key", key.expose());
        }
        sse_call(
            http,
            EventDecoder {
                input_tokens: 0,
                skip_leading_whitespace: trimmed,
                calls: BTreeMap::new(),
            },
        )
    }

    fn unavailable_reason(&self) -> Option<String> {
        self.endpoint.unavailable.clone()
    }
}

/// Decodes Messages API stream events.
struct EventDecoder {
    /// From `message_start`, reported with the output count at the end.
    input_tokens: u64,
    /// Until the first non-blank text (see the module docs).
    skip_leading_whitespace: bool,
    /// `tool_use` blocks being streamed, by block index: id, name, input
    /// JSON so far.
    calls: BTreeMap<u64, (String, String, String)>,
}

/// Errors the API documents as transient.
fn retryable_error_type(kind: &str) -> bool {
    matches!(
        kind,
        "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error"
    )
}

/// The parts of a Messages API stream event agentd reads (others are
/// ignored; `null` reads as absent). Typed and borrowing the text: a
/// `content_block_delta` comes per token, and a generic JSON tree of each
/// cost more than the rest of its way.
#[derive(Debug, Deserialize)]
struct StreamEvent<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<MessageStart>,
    #[serde(default, borrow)]
    content_block: Option<ContentBlock<'a>>,
    #[serde(default, borrow)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<OutputUsage>,
    /// An `error` event's `{type, message}` (or anything else).
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: Option<InputUsage>,
}

#[derive(Debug, Deserialize)]
struct InputUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OutputUsage {
    #[serde(default)]
    output_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ContentBlock<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

/// A `content_block_delta`'s or `message_delta`'s `delta`.
#[derive(Debug, Deserialize)]
struct EventDelta<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

/// The event types [`EventDecoder`] reads.
const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
];

impl SseDecoder for EventDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ProviderError> {
        let data: StreamEvent<'_> = match serde_json::from_str(&event.data) {
            Ok(data) => data,
            Err(e) => {
                // An event type added later may shape its fields otherwise:
                // ignored, as any event not read here; one of those read
                // here that does not parse is the provider's fault.
                let kind = serde_json::from_str::<Value>(&event.data)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| event.event.clone());
                if !KNOWN_EVENTS.contains(&kind.as_str()) && !kind.is_empty() {
                    return Ok(Decoded::Events(Vec::new()));
                }
                return Err(ProviderError::fatal(format!(
                    "unreadable event from the provider: {e}"
                )));
            }
        };
        let kind = data.kind.as_deref().unwrap_or(&event.event);
        let index = data.index.unwrap_or(0);
        let delta_kind = data.delta.as_ref().and_then(|d| d.kind.as_deref());
        let mut events = Vec::new();
        match kind {
            "message_start" => {
                self.input_tokens = data
                    .message
                    .and_then(|m| m.usage)
                    .and_then(|u| u.input_tokens)
                    .unwrap_or(0);
            }
            "content_block_start"
                if data.content_block.as_ref().and_then(|b| b.kind.as_deref())
                    == Some("tool_use") =>
            {
                let block = data.content_block.unwrap_or(ContentBlock {
                    kind: None,
                    id: None,
                    name: None,
                });
                let id = block.id.unwrap_or_default().into_owned();
                let name = block.name.unwrap_or_default().into_owned();
                self.calls.insert(index, (id, name, String::new()));
            }
            "content_block_delta" if delta_kind == Some("input_json_delta") => {
                let part = data.delta.and_then(|d| d.partial_json);
                if let (Some(call), Some(part)) = (self.calls.get_mut(&index), part) {
                    call.2.push_str(&part);
                }
            }
            "content_block_stop" => {
                if let Some((id, name, input)) = self.calls.remove(&index) {
                    events.push(ProviderEvent::ToolCall(ToolCall::from_raw(
                        id, name, &input,
                    )));
                }
            }
            // Other delta types (thinking) carry no answer text.
            "content_block_delta" if delta_kind == Some("text_delta") => {
                let full = data.delta.and_then(|d| d.text).unwrap_or_default();
                let mut text: &str = &full;
                if self.skip_leading_whitespace {
                    text = text.trim_start();
                    self.skip_leading_whitespace = text.is_empty();
                }
                if !text.is_empty() {
                    events.push(ProviderEvent::Delta(text.to_owned()));
                }
            }
            "message_delta" => {
                if let Some(reason) = data.delta.and_then(|d| d.stop_reason) {
                    events.push(ProviderEvent::Finished(match reason.as_ref() {
                        "max_tokens" => FinishReason::Length,
                        "stop_sequence" => FinishReason::StopSequence,
                        "model_context_window_exceeded" => FinishReason::ContextWindow,
                        _ => FinishReason::Stop,
                    }));
                }
                if let Some(output) = data.usage.and_then(|u| u.output_tokens) {
                    events.push(ProviderEvent::Usage(TokenUsage {
                        input: self.input_tokens,
                        output,
                    }));
                }
            }
            "message_stop" => return Ok(Decoded::Done),
            "error" => {
                let error = data.error.unwrap_or(Value::Null);
                let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .or(error.as_str())
                    .unwrap_or("");
                return Err(ProviderError {
                    retryable: retryable_error_type(kind),
                    message: format!("{kind}: {message}"),
                });
            }
            // ping, text block starts, and event types added later: nothing
            // to do.
            _ => {}
        }
        Ok(Decoded::Events(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::types::{ChatMessage, GenerationParams, Role};

    fn decoder(skip: bool) -> EventDecoder {
        EventDecoder {
            input_tokens: 0,
            skip_leading_whitespace: skip,
            calls: BTreeMap::new(),
        }
    }

    fn feed(d: &mut EventDecoder, data: &str) -> Result<Decoded, ProviderError> {
        d.decode(SseEvent {
            event: String::new(),
            data: data.to_owned(),
        })
    }

    #[test]
    fn events_of_later_types_are_ignored_and_broken_known_ones_refused() {
        let mut d = decoder(false);
        let later = feed(
            &mut d,
            r#"{"type":"content_block_fancy","index":"first","delta":"a string"}"#,
        )
        .unwrap();
        assert!(matches!(later, Decoded::Events(ref e) if e.is_empty()));
        let broken = feed(&mut d, r#"{"type":"content_block_delta","index":"first"}"#);
        assert!(broken.is_err());
        assert!(feed(&mut d, "not json").is_err());
        // Escaped text comes out unescaped.
        let Decoded::Events(e) = feed(
            &mut d,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a \"b\"\n"}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(e, vec![ProviderEvent::Delta("a \"b\"\n".into())]);
    }

    #[test]
    fn a_stream_decodes_to_deltas_finish_and_usage() {
        let mut d = decoder(false);
        feed(
            &mut d,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#,
        )
        .unwrap();
        let Decoded::Events(e) = feed(
            &mut d,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(e, vec![ProviderEvent::Delta("Hi".into())]);
        let Decoded::Events(e) = feed(
            &mut d,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            e,
            vec![
                ProviderEvent::Finished(FinishReason::Length),
                ProviderEvent::Usage(TokenUsage {
                    input: 12,
                    output: 9
                })
            ]
        );
        assert!(matches!(
            feed(&mut d, r#"{"type":"message_stop"}"#),
            Ok(Decoded::Done)
        ));
        let err = feed(
            &mut d,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .err()
        .unwrap();
        assert!(err.retryable);
        let err = feed(
            &mut d,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
        )
        .err()
        .unwrap();
        assert!(!err.retryable);
    }

    #[test]
    fn prefill_loses_trailing_whitespace_and_the_continuation_its_leading() {
        let request = GenerationRequest {
            model_id: "claude".into(),
            system: "sys".into(),
            messages: vec![ChatMessage::new(Role::User, "count")],
            continuation: "one two ".into(),
            params: GenerationParams::default(),
            tools: Default::default(),
            tool_choice: ToolChoice::Auto,
        };
        let (body, trimmed) = AnthropicProvider::body(&request);
        assert!(trimmed);
        assert_eq!(body["messages"][1]["content"], "one two");
        assert_eq!(body["system"], "sys");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        let mut d = decoder(true);
        let delta = |t: &str| {
            format!(
                r#"{{"type":"content_block_delta","delta":{{"type":"text_delta","text":"{t}"}}}}"#
            )
        };
        let Decoded::Events(e) = feed(&mut d, &delta(" ")).unwrap() else {
            panic!()
        };
        assert!(e.is_empty());
        let Decoded::Events(e) = feed(&mut d, &delta(" three ")).unwrap() else {
            panic!()
        };
        assert_eq!(e, vec![ProviderEvent::Delta("three ".into())]);
        let Decoded::Events(e) = feed(&mut d, &delta(" four")).unwrap() else {
            panic!()
        };
        assert_eq!(e, vec![ProviderEvent::Delta(" four".into())]);
    }

    #[test]
    fn tool_use_blocks_are_assembled_from_input_json_deltas() {
        let mut d = decoder(false);
        let mut events = Vec::new();
        for data in [
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Rome\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        ] {
            let Decoded::Events(e) = feed(&mut d, &data.to_string()).unwrap() else {
                panic!()
            };
            events.extend(e);
        }
        assert_eq!(
            events,
            vec![
                ProviderEvent::Delta("Checking.".into()),
                ProviderEvent::ToolCall(ToolCall {
                    id: "toolu_1".into(),
                    name: "weather".into(),
                    arguments: json!({"city": "Rome"}),
                }),
                ProviderEvent::ToolCall(ToolCall {
                    id: "toolu_2".into(),
                    name: "time".into(),
                    arguments: json!({}),
                }),
                ProviderEvent::Finished(FinishReason::Stop),
                ProviderEvent::Usage(TokenUsage {
                    input: 0,
                    output: 30
                }),
            ]
        );
    }

    #[test]
    fn tool_history_becomes_blocks_with_alternating_roles() {
        let mut assistant = ChatMessage::new(Role::Assistant, "Checking.");
        for id in ["call_a", "call_b"] {
            assistant.tool_calls.push(ToolCall {
                id: id.into(),
                name: "weather".into(),
                arguments: if id == "call_a" {
                    json!({"city": "Paris"})
                } else {
                    json!("{not json")
                },
            });
        }
        let result = |id: &str, text: &str| {
            let mut m = ChatMessage::new(Role::Tool, text);
            m.tool_call_id = id.into();
            m
        };
        let m = messages(&[
            ChatMessage::new(Role::User, "weather?"),
            assistant,
            result("call_a", "rain"),
            result("call_b", "bad arguments"),
            ChatMessage::new(Role::User, "and tomorrow?"),
        ]);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0]["content"], "weather?");
        assert_eq!(m[1]["content"][0]["type"], "text");
        assert_eq!(m[1]["content"][1]["input"]["city"], "Paris");
        assert_eq!(m[1]["content"][2]["input"], json!({}));
        let user = m[2]["content"].as_array().unwrap();
        assert_eq!(user.len(), 3);
        assert_eq!(user[0]["type"], "tool_result");
        assert_eq!(user[0]["tool_use_id"], "call_a");
        assert_eq!(user[1]["tool_use_id"], "call_b");
        assert_eq!(user[2]["text"], "and tomorrow?");
    }
}
