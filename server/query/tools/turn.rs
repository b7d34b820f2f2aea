//! The tool calls of one model turn, from the moment the turn ends until
//! every call has its result: which are still awaited, by when, and the
//! server tools running for them.
//!
//! When the last result is in, the turn becomes history: the assistant
//! message with the turn's text and calls, then one tool message per call,
//! in the order the model made them, whatever order the results came in.

use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::types::{ToolCall, ToolLocation, ToolOutcome};
use crate::query::types::{ChatMessage, Role};

/// One call of the turn.
#[derive(Debug)]
struct Call {
    call: ToolCall,
    location: ToolLocation,
    deadline: Instant,
    outcome: Option<ToolOutcome>,
    /// The server tool running for it.
    task: Option<AbortHandle>,
}

/// Why a result cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No call of this turn has that id.
    Unknown,
    /// The call already has its result.
    Answered,
    /// The call is not the client's to answer (a server tool).
    NotYours(ToolLocation),
}

/// The calls of a turn awaiting results.
#[derive(Debug)]
pub struct ToolTurn {
    /// The assistant text of the turn, before its calls.
    text: String,
    calls: Vec<Call>,
}

impl ToolTurn {
    /// A turn whose model wrote `text` and made `calls`; each call may
    /// wait `timeout(call)` for its result from now.
    pub fn new(
        text: String,
        calls: Vec<(ToolCall, ToolLocation)>,
        timeout: impl Fn(&ToolCall) -> Duration,
    ) -> Self {
        let now = Instant::now();
        let calls = calls
            .into_iter()
            .map(|(call, location)| Call {
                deadline: now + timeout(&call),
                call,
                location,
                outcome: None,
                task: None,
            })
            .collect();
        Self { text, calls }
    }

    /// Calls still without a result.
    pub fn pending(&self) -> usize {
        self.calls.iter().filter(|c| c.outcome.is_none()).count()
    }

    /// The call `id`, if it is one of this turn's.
    pub fn call(&self, id: &str) -> Option<&ToolCall> {
        self.calls.iter().find(|c| c.call.id == id).map(|c| &c.call)
    }

    /// Records that a server tool runs for call `id`, so that it can be
    /// stopped.
    pub fn running(&mut self, id: &str, task: AbortHandle) {
        if let Some(c) = self.calls.iter_mut().find(|c| c.call.id == id) {
            c.task = Some(task);
        }
    }

    /// Whether a result for `id` can be taken from `from` (None: from
    /// agentd itself, for any call).
    pub fn check(&self, id: &str, from: Option<ToolLocation>) -> Result<(), Refused> {
        let c = self
            .calls
            .iter()
            .find(|c| c.call.id == id)
            .ok_or(Refused::Unknown)?;
        if c.outcome.is_some() {
            return Err(Refused::Answered);
        }
        // Server and worker calls are answered only where they run; a
        // client may answer a call of a tool the query does not offer.
        match from {
            Some(from) if c.location != ToolLocation::Client && from != c.location => {
                Err(Refused::NotYours(c.location))
            }
            _ => Ok(()),
        }
    }

    /// Takes the result of `id` (checked with [`ToolTurn::check`]);
    /// answers the tool's name.
    pub fn resolve(&mut self, id: &str, outcome: ToolOutcome) -> Option<String> {
        let c = self
            .calls
            .iter_mut()
            .find(|c| c.call.id == id && c.outcome.is_none())?;
        c.outcome = Some(outcome);
        if let Some(task) = c.task.take() {
            task.abort();
        }
        Some(c.call.name.clone())
    }

    /// The earliest deadline of a call still waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls
            .iter()
            .filter(|c| c.outcome.is_none())
            .map(|c| c.deadline)
            .min()
    }

    /// The ids of the waiting calls whose deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.outcome.is_none() && c.deadline <= now)
            .map(|c| c.call.id.clone())
            .collect()
    }

    /// The turn as conversation history, once every call has its result:
    /// the assistant message, then the results in call order.
    pub fn into_messages(mut self) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(self.calls.len() + 1);
        let mut assistant = ChatMessage::new(Role::Assistant, std::mem::take(&mut self.text));
        let mut results = Vec::with_capacity(self.calls.len());
        for c in std::mem::take(&mut self.calls) {
            let outcome = c.outcome.unwrap_or_else(|| ToolOutcome::error("no result"));
            let mut m = ChatMessage::new(Role::Tool, outcome.content);
            m.tool_call_id = c.call.id.clone();
            m.is_error = outcome.is_error;
            assistant.tool_calls.push(c.call);
            results.push(m);
        }
        messages.push(assistant);
        messages.extend(results);
        messages
    }
}

impl Drop for ToolTurn {
    /// Server tools still running for a turn that is abandoned (the query
    /// ended) stop.
    fn drop(&mut self) {
        for c in &mut self.calls {
            if let Some(task) = c.task.take() {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: format!("tool_{id}"),
            arguments: json!({}),
        }
    }

    #[tokio::test]
    async fn results_in_any_order_become_history_in_call_order() {
        let mut turn = ToolTurn::new(
            "Let me look.".into(),
            vec![
                (call("a"), ToolLocation::Client),
                (call("b"), ToolLocation::Server),
            ],
            |_| Duration::from_secs(60),
        );
        assert_eq!(turn.pending(), 2);
        assert_eq!(turn.check("x", None), Err(Refused::Unknown));
        assert_eq!(
            turn.check("b", Some(ToolLocation::Client)),
            Err(Refused::NotYours(ToolLocation::Server))
        );
        assert_eq!(turn.check("b", None), Ok(()));
        assert_eq!(
            turn.resolve("b", ToolOutcome::ok("2")).as_deref(),
            Some("tool_b")
        );
        assert_eq!(turn.check("b", None), Err(Refused::Answered));
        assert!(turn.resolve("b", ToolOutcome::ok("again")).is_none());
        turn.resolve("a", ToolOutcome::error("boom"));
        assert_eq!(turn.pending(), 0);
        let m = turn.into_messages();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].role, Role::Assistant);
        assert_eq!(m[0].content, "Let me look.");
        assert_eq!(m[0].tool_calls.len(), 2);
        assert_eq!((m[1].tool_call_id.as_str(), m[1].is_error), ("a", true));
        assert_eq!(
            (m[2].tool_call_id.as_str(), m[2].content.as_str()),
            ("b", "2")
        );
    }

    #[tokio::test]
    async fn deadlines_expire_only_waiting_calls() {
        let mut turn = ToolTurn::new(
            String::new(),
            vec![
                (call("a"), ToolLocation::Client),
                (call("b"), ToolLocation::Client),
            ],
            |c| Duration::from_secs(if c.id == "a" { 1 } else { 5 }),
        );
        let start = Instant::now();
        assert!(turn.next_deadline().unwrap() <= start + Duration::from_secs(1));
        assert_eq!(turn.expired(start + Duration::from_secs(2)), ["a"]);
        turn.resolve("a", ToolOutcome::ok("x"));
        assert!(turn.expired(start + Duration::from_secs(2)).is_empty());
        assert!(turn.next_deadline().unwrap() > start + Duration::from_secs(4));
    }
}
