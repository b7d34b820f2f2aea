//! The `anthropic` provider: the Anthropic Messages API with streaming
//! events (`message_start`, `content_block_delta`, `message_delta`,
//! `message_stop`, `ping`, `error`).
//!
//! Continuation uses assistant prefill: the answer so far is the final
//! assistant message and the model writes what follows. The API refuses a
//! prefill that ends in whitespace, so trailing whitespace is cut from it
//! and cut again from the start of the continuation (the transcript already
//! holds it), which keeps the joined text free of doubled spaces.

use serde_json::{Value, json};

use super::http::{Decoded, Endpoint, SseDecoder, sse_call};
use super::provider::{
    Admission, GenerationRequest, ModelProvider, ProviderError, ProviderEvent, ProviderStream,
};
use super::sse::SseEvent;
use super::types::{FinishReason, TokenUsage};

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
        let mut messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
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
        (body, trimmed)
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
}

/// Errors the API documents as transient.
fn retryable_error_type(kind: &str) -> bool {
    matches!(
        kind,
        "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error"
    )
}

impl SseDecoder for EventDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ProviderError> {
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::fatal(format!("unreadable event from the provider: {e}"))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        let mut events = Vec::new();
        match kind {
            "message_start" => {
                self.input_tokens = data
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
            // Other delta types (thinking, tool input) carry no answer text.
            "content_block_delta"
                if data.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") =>
            {
                let mut text = data
                    .pointer("/delta/text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if self.skip_leading_whitespace {
                    text = text.trim_start();
                    self.skip_leading_whitespace = text.is_empty();
                }
                if !text.is_empty() {
                    events.push(ProviderEvent::Delta(text.to_owned()));
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    events.push(ProviderEvent::Finished(match reason {
                        "max_tokens" => FinishReason::Length,
                        "stop_sequence" => FinishReason::StopSequence,
                        "model_context_window_exceeded" => FinishReason::ContextWindow,
                        _ => FinishReason::Stop,
                    }));
                }
                if let Some(output) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    events.push(ProviderEvent::Usage(TokenUsage {
                        input: self.input_tokens,
                        output,
                    }));
                }
            }
            "message_stop" => return Ok(Decoded::Done),
            "error" => {
                let kind = data
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(ProviderError {
                    retryable: retryable_error_type(kind),
                    message: format!("{kind}: {message}"),
                });
            }
            // ping, content_block_start, content_block_stop, and event types
            // added later: nothing to do.
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
        }
    }

    fn feed(d: &mut EventDecoder, data: &str) -> Result<Decoded, ProviderError> {
        d.decode(SseEvent {
            event: String::new(),
            data: data.to_owned(),
        })
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
}
