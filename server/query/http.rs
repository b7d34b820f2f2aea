//! Streaming HTTP calls shared by the OpenAI-compatible and Anthropic
//! providers: send one JSON request, check the status, parse the
//! server-sent events of the body and let a provider-specific decoder turn
//! each event into deltas.
//!
//! The returned stream owns the connection: dropping it (Pause,
//! SwitchModel, Terminate) closes the request, and the provider stops
//! generating and billing.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};

use super::provider::{ProviderError, ProviderEvent, ProviderStream, Secret, retryable_status};
use super::sse::{SseEvent, SseParser};

/// What one server-sent event meant.
#[derive(Debug)]
pub enum Decoded {
    /// Zero or more provider events.
    Events(Vec<ProviderEvent>),
    /// The provider said the answer is over (`[DONE]`, `message_stop`).
    Done,
}

/// Turns one provider's events into [`ProviderEvent`]s.
pub trait SseDecoder: Send + 'static {
    /// Decodes one event. An `Err` ends the stream with that error.
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ProviderError>;
}

/// The client every HTTP provider shares: connection pooling, a connect
/// timeout, and no overall timeout (answers stream for minutes; the engine
/// enforces first-token and total timeouts itself).
pub fn client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("a TLS backend is compiled in")
}

/// Where an HTTP provider sends its calls, with what key, and why it
/// cannot (a configured key is missing).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The shared client.
    pub client: reqwest::Client,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// The API key, if any.
    pub key: Option<Secret>,
    /// Why the provider cannot serve, if so.
    pub unavailable: Option<String>,
}

impl Endpoint {
    /// An endpoint at `base_url`.
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        key: Option<Secret>,
        unavailable: Option<String>,
    ) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            unavailable,
        }
    }

    /// A POST of `body` to `path` under the base URL, asking for an event
    /// stream.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base_url))
            .header("accept", "text/event-stream")
            .json(body)
    }
}

struct Call<D> {
    request: Option<reqwest::RequestBuilder>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    parser: SseParser,
    pending: VecDeque<Result<ProviderEvent, ProviderError>>,
    decoder: D,
    done: bool,
}

/// Sends `request` and streams the decoded answer.
pub fn sse_call<D: SseDecoder>(request: reqwest::RequestBuilder, decoder: D) -> ProviderStream {
    let call = Call {
        request: Some(request),
        body: None,
        parser: SseParser::new(),
        pending: VecDeque::new(),
        decoder,
        done: false,
    };
    Box::pin(stream::unfold(call, |mut call| async move {
        loop {
            if let Some(item) = call.pending.pop_front() {
                if item.is_err() {
                    call.pending.clear();
                    call.done = true;
                }
                return Some((item, call));
            }
            if call.done {
                return None;
            }
            if let Some(request) = call.request.take() {
                match send(request).await {
                    Ok(body) => call.body = Some(body),
                    Err(e) => {
                        call.done = true;
                        return Some((Err(e), call));
                    }
                }
                continue;
            }
            let body = call.body.as_mut()?;
            match body.next().await {
                Some(Ok(chunk)) => match call.parser.push(&chunk) {
                    Ok(events) => {
                        for event in events {
                            match call.decoder.decode(event) {
                                Ok(Decoded::Events(evs)) => {
                                    call.pending.extend(evs.into_iter().map(Ok));
                                }
                                Ok(Decoded::Done) => {
                                    call.done = true;
                                    break;
                                }
                                Err(e) => {
                                    call.pending.push_back(Err(e));
                                    break;
                                }
                            }
                        }
                    }
                    Err(message) => call.pending.push_back(Err(ProviderError::fatal(message))),
                },
                Some(Err(e)) => {
                    call.done = true;
                    let error =
                        ProviderError::retryable(format!("connection lost mid-answer: {e}"));
                    return Some((Err(error), call));
                }
                // The engine tells a finished answer from a cut one by
                // whether a `Finished` event came.
                None => call.done = true,
            }
        }
    }))
}

/// Sends the request; a non-2xx status becomes an error carrying the
/// provider's own message.
async fn send(
    request: reqwest::RequestBuilder,
) -> Result<BoxStream<'static, reqwest::Result<Bytes>>, ProviderError> {
    let response = request.send().await.map_err(|e| {
        ProviderError::retryable(format!("cannot reach the provider: {}", error_chain(&e)))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response.bytes_stream().boxed());
    }
    let body = response.text().await.unwrap_or_default();
    Err(ProviderError {
        retryable: retryable_status(status.as_u16()),
        message: format!("HTTP {}: {}", status.as_u16(), error_message(&body)),
    })
}

/// The `error.message` (and `error.type`) of an OpenAI- or Anthropic-style
/// error body, else the start of the body.
pub fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
        let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
        return match error.get("type").and_then(|t| t.as_str()) {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_owned(),
        };
    }
    body.chars().take(300).collect()
}

/// A reqwest error with its causes, which carry the useful part
/// ("connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
