//! The `openai` provider: any OpenAI-compatible chat-completions server
//! (vLLM, llama.cpp's server, Ollama's /v1, OpenAI itself), streamed over
//! server-sent events.
//!
//! Continuation: the answer so far is sent as a final assistant message,
//! with `continue_final_message` for the servers that honour it (vLLM);
//! the streamed text is what follows it.

use serde_json::{Value, json};

use super::http::{Decoded, Endpoint, SseDecoder, sse_call};
use super::provider::{
    Admission, GenerationRequest, ModelProvider, ProviderError, ProviderEvent, ProviderStream,
};
use super::sse::SseEvent;
use super::types::{FinishReason, TokenUsage};

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
        for m in &request.messages {
            messages.push(json!({"role": m.role.as_str(), "content": m.content}));
        }
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
        body
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
        sse_call(http, ChunkDecoder)
    }

    fn unavailable_reason(&self) -> Option<String> {
        self.endpoint.unavailable.clone()
    }
}

/// Decodes `chat.completion.chunk` events.
struct ChunkDecoder;

impl SseDecoder for ChunkDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Decoded::Done);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::fatal(format!("unreadable chunk from the provider: {e}"))
        })?;
        if let Some(error) = chunk.get("error") {
            let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            // Mid-stream errors are the server's trouble (overload, a crashed
            // worker) unless it says the request itself was bad.
            let retryable = kind != "invalid_request_error";
            return Err(ProviderError {
                retryable,
                message: format!("{kind}: {message}"),
            });
        }
        let mut events = Vec::new();
        if let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) {
            if let Some(text) = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
                && !text.is_empty()
            {
                events.push(ProviderEvent::Delta(text.to_owned()));
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                events.push(ProviderEvent::Finished(match reason {
                    "length" => FinishReason::Length,
                    _ => FinishReason::Stop,
                }));
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
            events.push(ProviderEvent::Usage(TokenUsage {
                input: count("prompt_tokens"),
                output: count("completion_tokens"),
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
        ChunkDecoder.decode(SseEvent {
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
}
