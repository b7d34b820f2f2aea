//! The `ModelProvider` trait: how the engine asks a model for text.
//!
//! A provider turns a conversation, plus the part of the answer already
//! written (the continuation), into a stream of deltas. Dropping the stream
//! cancels the work: the HTTP request is closed, or the local decode loop
//! stops at its next token. That is what makes Pause and SwitchModel cheap
//! and exact: the engine stops reading at a delta boundary and drops the
//! stream, and a later stream continues from the transcript.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::Stream;

use super::tools::{ToolCall, ToolChoice, ToolDescription};
use super::types::{ChatMessage, FinishReason, GenerationParams, TokenUsage};

/// One call to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The provider's own model id (not the alias).
    pub model_id: String,
    /// System prompt; empty for none.
    pub system: String,
    /// The conversation, oldest first, without system prompt.
    pub messages: Vec<ChatMessage>,
    /// The answer written so far, which the model must continue rather than
    /// repeat; empty for a fresh answer.
    pub continuation: String,
    /// Sampling; `max_tokens` is what is left of the query's budget.
    pub params: GenerationParams,
    /// Tools the model may call (empty: none).
    pub tools: Arc<Vec<ToolDescription>>,
    /// How it may use them in this call.
    pub tool_choice: ToolChoice,
}

/// What a provider stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// The call waits for a model that runs one call at a time: its place
    /// in the queue, 1 being next. Sent when it joins and when it moves.
    Queued(u64),
    /// The model started on the call after it waited in the queue: the
    /// first-token timeout counts from here.
    Started,
    /// Generated text (never empty).
    Delta(String),
    /// A complete tool call (its arguments assembled from the stream's
    /// fragments). The calls of a turn come before its `Finished`.
    ToolCall(ToolCall),
    /// Token counts of this call, as the provider reports them.
    Usage(TokenUsage),
    /// The model finished; usage may still follow.
    Finished(FinishReason),
}

/// A failed call, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// Overloaded, rate-limited, a 5xx or a dropped connection: worth a
    /// retry after a pause. Bad requests and bad keys are not.
    pub retryable: bool,
    /// What happened, free of secrets.
    pub message: String,
}

impl ProviderError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that would happen again.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

/// The stream of one call. Its end without a `Finished` event means the
/// call was cut short (reported as a retryable error by the engine).
pub type ProviderStream = Pin<Box<dyn Stream<Item = Result<ProviderEvent, ProviderError>> + Send>>;

/// Places in a bounded queue, shared by a provider and the admissions it
/// gave out.
#[derive(Debug)]
pub struct Slots {
    used: AtomicUsize,
    capacity: usize,
}

impl Slots {
    /// `capacity` places.
    pub fn new(capacity: usize) -> Arc<Slots> {
        Arc::new(Slots {
            used: AtomicUsize::new(0),
            capacity,
        })
    }

    /// Places taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes a place, or None when all are taken.
    pub fn take(self: &Arc<Self>) -> Option<Admission> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.capacity).then_some(used + 1)
            })
            .ok()?;
        Some(Admission {
            slot: Some(Arc::clone(self)),
        })
    }
}

/// A place for one call in a provider's queue, taken before the call (at
/// Start, at Resume) so that a full queue refuses a query at once instead
/// of failing it later; given back when dropped (for the local model: when
/// the model starts on the call, or when the call is abandoned).
#[derive(Debug, Default)]
pub struct Admission {
    slot: Option<Arc<Slots>>,
}

impl Admission {
    /// No place needed: the provider has no queue of its own.
    pub fn unbounded() -> Admission {
        Admission::default()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(slots) = self.slot.take() {
            slots.used.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A backend that generates text: the local GGUF model, an
/// OpenAI-compatible server or the Anthropic Messages API.
pub trait ModelProvider: Send + Sync + fmt::Debug + 'static {
    /// Takes a place for one call in the provider's queue: an error (not
    /// retryable) when the queue is full. Providers without a queue of
    /// their own always admit.
    fn admit(&self) -> Result<Admission, ProviderError> {
        Ok(Admission::unbounded())
    }

    /// Starts one call, in the place `admission` holds. Connection and HTTP
    /// errors come as the stream's first item, so this never blocks.
    fn generate(&self, request: GenerationRequest, admission: Admission) -> ProviderStream;

    /// Why the provider cannot serve now (no key, model not loaded), if so.
    fn unavailable_reason(&self) -> Option<String> {
        None
    }
}

/// A secret (an API key) that never shows in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Whether an HTTP status is worth retrying: timeouts, rate limits,
/// overload (Anthropic's 529) and server errors.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429) || status >= 500
}

/// Tokens of `bytes` of text, estimated at four bytes a token, for calls
/// whose usage the provider never reports (a stream cut by Pause).
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "sk-very-secret");
    }

    #[test]
    fn admissions_hold_their_place_until_dropped() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        assert!(slots.take().is_none(), "full");
        drop(a);
        assert_eq!(slots.used(), 1);
        let c = slots.take().unwrap();
        drop((b, c));
        assert_eq!(slots.used(), 0);
        drop(Admission::unbounded());
        assert_eq!(slots.used(), 0);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 529] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
