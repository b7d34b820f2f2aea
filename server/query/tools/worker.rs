//! Worker tools: calls the query engine cannot run itself and no client
//! answers, handed to whoever runs external workers (the Agent engine,
//! which leases each call to a worker of the tool's capability as a task).
//!
//! The query engine knows nothing of agents: it sends each valid call, once
//! it is recorded, down a channel with a reply slot, and the driver waits
//! for the reply as it waits for a server tool's result. When the call no
//! longer needs an answer (its time is up, the query ended), the driver
//! drops the waiting side, which the other end sees as the reply slot
//! closing: it withdraws the lease then.
//!
//! The link is a channel rather than a handle on the Agent engine so that
//! the two engines do not own each other: the receiving loop belongs to the
//! Agent engine and ends with it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::types::{ToolCall, ToolOutcome};

/// A call of a worker tool, for the Agent engine to lease.
#[derive(Debug)]
pub struct WorkerToolCall {
    /// The query that made it.
    pub query_id: String,
    /// The query's labels (a task's query names its task and agent).
    pub labels: BTreeMap<String, String>,
    /// The call (its arguments already checked against the tool's schema).
    pub call: ToolCall,
    /// The capability a worker needs.
    pub capability: String,
    /// How long the query waits for the result.
    pub timeout: Duration,
    /// Where the result goes; closed when it is no longer wanted.
    pub reply: oneshot::Sender<ToolOutcome>,
}

/// Where worker tool calls go: empty until the Agent engine takes them
/// (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct WorkerTools {
    sender: Arc<OnceLock<mpsc::UnboundedSender<WorkerToolCall>>>,
}

impl WorkerTools {
    /// Makes calls go to the receiver returned; None when something takes
    /// them already.
    pub fn take(&self) -> Option<mpsc::UnboundedReceiver<WorkerToolCall>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sender.set(tx).ok().map(|()| rx)
    }

    /// True when calls have somewhere to go.
    pub fn available(&self) -> bool {
        self.sender.get().is_some_and(|tx| !tx.is_closed())
    }

    /// Sends `call` on; the outcome comes through its reply, or an error
    /// outcome at once when nothing takes worker calls any more.
    pub fn send(&self, call: WorkerToolCall) -> Result<(), ToolOutcome> {
        let Some(tx) = self.sender.get() else {
            return Err(ToolOutcome::error(
                "no Agent engine runs on this server: worker tools cannot be leased",
            ));
        };
        tx.send(call).map_err(|_| {
            ToolOutcome::error("the Agent engine has stopped: worker tools cannot be leased")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(reply: oneshot::Sender<ToolOutcome>) -> WorkerToolCall {
        WorkerToolCall {
            query_id: "q".into(),
            labels: BTreeMap::new(),
            call: ToolCall {
                id: "c".into(),
                name: "lookup".into(),
                arguments: serde_json::json!({}),
            },
            capability: "search".into(),
            timeout: Duration::from_secs(1),
            reply,
        }
    }

    #[tokio::test]
    async fn calls_reach_the_taker_and_fail_without_one() {
        let tools = WorkerTools::default();
        assert!(!tools.available());
        let (reply, _rx) = oneshot::channel();
        assert!(tools.send(call(reply)).unwrap_err().is_error);

        let mut calls = tools.clone().take().expect("first taker");
        assert!(tools.take().is_none(), "one taker only");
        assert!(tools.available());
        let (reply, answer) = oneshot::channel();
        tools.send(call(reply)).unwrap();
        let got = calls.recv().await.unwrap();
        assert_eq!(got.capability, "search");
        got.reply.send(ToolOutcome::ok("42")).unwrap();
        assert_eq!(answer.await.unwrap().content, "42");

        drop(calls);
        assert!(!tools.available());
        let (reply, _rx) = oneshot::channel();
        assert!(tools.send(call(reply)).unwrap_err().is_error);
    }
}
