//! The `openai` provider: any OpenAI-compatible chat-completions server
//! (vLLM, llama.cpp's server, Ollama's /v1, OpenAI itself), streamed over
//! server-sent events.
//!
//! Continuation: the answer so far is sent as a final assistant message,
//! with `continue_final_message` for the servers that honour it (vLLM);
//! the streamed text is what follows it.
//!
//! Tools: described as `tools` of type `function`; the model's calls stream
//! as `tool_calls` deltas (several calls at once, each call's arguments in
//! fragments, keyed by `index`), assembled here and handed on whole when
//! the choice finishes. Earlier calls go back as the assistant message's
//! `tool_calls`, their results as `role: tool` messages.

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

/// An OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    /// Base URL e.g. `https://api.openai.com/v1`; `/chat/completions` is
    /// appended. The key, when given, goes in a bearer header.
    endpoint: Endpoint,
}

impl OpenAiProvider {
    /// A provider calling `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// The request body for `request`.
    pub fn body(request: &GenerationRequest) -> Value {
        let mut messages = Vec::new();
        if !request.system.is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        messages.extend(request.messages.iter().map(message));
        let continuing = !request.continuation.is_empty();
        if continuing {
            messages.push(json!({"role": "assistant", "content": request.continuation}));
        }
        let p = &request.params;
        let mut body = json!({
            "model": request.model_id,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": p.max_tokens,
        });
        if continuing {
            body["continue_final_message"] = json!(true);
            body["add_generation_prompt"] = json!(false);
        }
        if let Some(t) = p.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(t) = p.top_p {
            body["top_p"] = json!(t);
        }
        if !p.stop.is_empty() {
            body["stop"] = json!(p.stop);
        }
        if let Some(s) = p.seed {
            body["seed"] = json!(s);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }})
                })
                .collect();
            body["tool_choice"] = match &request.tool_choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
            };
        }
        body
    }
}

/// One message in the chat-completions format.
fn message(m: &ChatMessage) -> Value {
    match m.role {
        Role::Tool => {
            // The format has no error flag: an error says so in its text.
            let content = if m.is_error {
                format!("error: {}", m.content)
            } else {
                m.content.clone()
            };
            json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
        }
        Role::Assistant if !m.tool_calls.is_empty() => {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function", "function": {
                        "name": c.name,
                        "arguments": c.arguments_text(),
                    }})
                })
                .collect();
            let content = if m.content.is_empty() {
                Value::Null
            } else {
                json!(m.content)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        _ => json!({"role": m.role.as_str(), "content": m.content}),
    }
}

impl ModelProvider for OpenAiProvider {
    fn generate(&self, request: GenerationRequest, _admission: Admission) -> ProviderStream {
        let mut http = self
            .endpoint
            .post("/chat/completions", &Self::body(&request));
        if let Some(key) = &self.endpoint.key {
            http = http.bearer_auth(key.expose());
        }
        sse_call(http, ChunkDecoder::default())
    }

    fn unavailable_reason(&self) -> Option<String> {
        self.endpoint.unavailable.clone()
    }
}

/// Decodes `chat.completion.chunk` events.
#[derive(Debug, Default)]
struct ChunkDecoder {
    /// Tool calls being streamed, by their `index`: id, name, arguments so
    /// far.
    calls: BTreeMap<u64, (String, String, String)>,
}

/// The parts of a `chat.completion.chunk` agentd reads (others are
/// ignored). `null` reads as absent; text is borrowed from the event
/// unless it has escapes.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// Some servers report a mid-stream failure as a chunk with `error`
    /// (an object with `type` and `message`, or anything else).
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallDelta<'a>>>,
}

/// A fragment of a streamed tool call.
#[derive(Debug, Deserialize)]
struct CallDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl ChunkDecoder {
    /// Adds one `tool_calls` delta entry.
    fn tool_call_delta(&mut self, d: CallDelta<'_>) {
        let entry = self.calls.entry(d.index.unwrap_or(0)).or_default();
        if let Some(id) = d.id {
            entry.0.push_str(&id);
        }
        if let Some(f) = d.function {
            if let Some(name) = f.name {
                entry.1.push_str(&name);
            }
            if let Some(args) = f.arguments {
                entry.2.push_str(&args);
            }
        }
    }

    /// The calls streamed so far, whole, in index order.
    fn take_calls(&mut self) -> impl Iterator<Item = ProviderEvent> + use<> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|(id, name, args)| ProviderEvent::ToolCall(ToolCall::from_raw(id, name, &args)))
    }
}

impl SseDecoder for ChunkDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            // Calls of a stream that never said why it finished: they are
            // whole, since the server says it is done.
            let mut calls: Vec<ProviderEvent> = self.take_calls().collect();
            if !calls.is_empty() {
                calls.push(ProviderEvent::Finished(FinishReason::Stop));
                return Ok(Decoded::Events(calls));
            }
            return Ok(Decoded::Done);
        }
        // Typed, borrowing the text: a chunk comes per token, and a
        // generic JSON tree of each cost more than the rest of its way.
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| {
            ProviderError::fatal(format!("unreadable chunk from the provider: {e}"))
        })?;
        if let Some(error) = chunk.error {
            let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .or(error.as_str())
                .unwrap_or("");
            // Mid-stream errors are the server's trouble (overload, a crashed
            // worker) unless it says the request itself was bad.
            let retryable = kind != "invalid_request_error";
            return Err(ProviderError {
                retryable,
                message: format!("{kind}: {message}"),
            });
        }
        let mut events = Vec::new();
        if let Some(choice) = chunk.choices.unwrap_or_default().into_iter().next() {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                events.push(ProviderEvent::Delta(text.into_owned()));
            }
            for d in delta.tool_calls.unwrap_or_default() {
                self.tool_call_delta(d);
            }
            if let Some(reason) = choice.finish_reason {
                events.extend(self.take_calls());
                events.push(ProviderEvent::Finished(match reason.as_ref() {
                    "length" => FinishReason::Length,
                    _ => FinishReason::Stop,
                }));
            }
        }
        if let Some(usage) = chunk.usage {
            events.push(ProviderEvent::Usage(TokenUsage {
                input: usage.prompt_tokens.unwrap_or(0),
                output: usage.completion_tokens.unwrap_or(0),
            }));
        }
        Ok(Decoded::Events(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::types::{ChatMessage, GenerationParams, Role};

    fn decode(data: &str) -> Result<Decoded, ProviderError> {
        ChunkDecoder::default().decode(SseEvent {
            event: String::new(),
            data: data.to_owned(),
        })
    }

    #[test]
    fn chunks_become_deltas_finish_and_usage() {
        let Decoded::Events(e) =
            decode(r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(e, vec![ProviderEvent::Delta("Hel".into())]);
        let Decoded::Events(e) =
            decode(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            e,
            vec![
                ProviderEvent::Finished(FinishReason::Length),
                ProviderEvent::Usage(TokenUsage {
                    input: 7,
                    output: 3
                })
            ]
        );
        assert!(matches!(decode("[DONE]"), Ok(Decoded::Done)));
        let err = decode(r#"{"error":{"type":"server_error","message":"boom"}}"#)
            .err()
            .unwrap();
        assert!(err.retryable);
        assert_eq!(err.message, "server_error: boom");
    }

    #[test]
    fn nulls_unknown_fields_and_escapes_read_as_a_real_server_sends_them() {
        // vLLM and OpenAI send `usage: null`, `content: null` on the role
        // chunk, and fields agentd does not read.
        let Decoded::Events(e) = decode(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert!(e.is_empty(), "{e:?}");
        let Decoded::Events(e) =
            decode(r#"{"choices":[{"delta":{"content":"say \"hi\"\n\u00e9"}}]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(e, vec![ProviderEvent::Delta("say \"hi\"\né".into())]);
        // A usage-only chunk (stream_options.include_usage) has no choices.
        let Decoded::Events(e) = decode(
            r#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            e,
            vec![ProviderEvent::Usage(TokenUsage {
                input: 2,
                output: 1
            })]
        );
        let err = decode(r#"{"choices":"#).err().unwrap();
        assert!(!err.retryable);
        assert!(err.message.contains("unreadable chunk"), "{}", err.message);
        let err = decode(r#"{"error":"overloaded"}"#).err().unwrap();
        assert_eq!(err.message, "error: overloaded");
    }

    #[test]
    fn continuation_is_the_last_assistant_message() {
        let request = GenerationRequest {
            model_id: "m".into(),
            system: "be brief".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            continuation: "Hello, wor".into(),
            params: GenerationParams {
                max_tokens: 5,
                stop: vec!["\n".into()],
                ..Default::default()
            },
            tools: Default::default(),
            tool_choice: ToolChoice::Auto,
        };
        let body = OpenAiProvider::body(&request);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[2]["role"], "assistant");
        assert_eq!(messages[2]["content"], "Hello, wor");
        assert_eq!(body["continue_final_message"], true);
        assert_eq!(body["max_tokens"], 5);
        assert_eq!(body["stop"][0], "\n");
    }

    #[test]
    fn parallel_tool_calls_are_assembled_from_fragments() {
        let mut d = ChunkDecoder::default();
        let mut feed = |data: serde_json::Value| match d
            .decode(SseEvent {
                event: String::new(),
                data: data.to_string(),
            })
            .unwrap()
        {
            Decoded::Events(e) => e,
            Decoded::Done => panic!("done"),
        };
        let chunk = |calls: serde_json::Value, finish: Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": finish}]});
        assert!(feed(chunk(json!([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]), Value::Null)).is_empty());
        assert!(
            feed(chunk(
                json!([{"index": 0, "function": {"arguments": "{\"ci"}}]),
                Value::Null
            ))
            .is_empty()
        );
        assert!(feed(chunk(json!([{"index": 1, "id": "call_b", "function": {"name": "time", "arguments": "{}"}}]), Value::Null)).is_empty());
        assert!(
            feed(chunk(
                json!([{"index": 0, "function": {"arguments": "ty\": \"Paris\"}"}}]),
                Value::Null
            ))
            .is_empty()
        );
        let events = feed(chunk(json!([]), json!("tool_calls")));
        assert_eq!(
            events,
            vec![
                ProviderEvent::ToolCall(ToolCall {
                    id: "call_a".into(),
                    name: "weather".into(),
                    arguments: json!({"city": "Paris"}),
                }),
                ProviderEvent::ToolCall(ToolCall {
                    id: "call_b".into(),
                    name: "time".into(),
                    arguments: json!({}),
                }),
                ProviderEvent::Finished(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn tool_history_goes_back_as_tool_calls_and_tool_messages() {
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls.push(ToolCall {
            id: "call_a".into(),
            name: "weather".into(),
            arguments: json!({"city": "Paris"}),
        });
        let mut result = ChatMessage::new(Role::Tool, "rain");
        result.tool_call_id = "call_a".into();
        result.is_error = true;
        let request = GenerationRequest {
            model_id: "m".into(),
            system: String::new(),
            messages: vec![ChatMessage::new(Role::User, "weather?"), assistant, result],
            continuation: String::new(),
            params: GenerationParams::default(),
            tools: std::sync::Arc::new(vec![crate::query::tools::ToolDescription {
                name: "weather".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }]),
            tool_choice: ToolChoice::Named("weather".into()),
        };
        let body = OpenAiProvider::body(&request);
        let m = body["messages"].as_array().unwrap();
        assert_eq!(m[1]["content"], Value::Null);
        assert_eq!(
            m[1]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(m[2]["role"], "tool");
        assert_eq!(m[2]["tool_call_id"], "call_a");
        assert_eq!(m[2]["content"], "error: rain");
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
        assert_eq!(body["tool_choice"]["function"]["name"], "weather");
    }
}
