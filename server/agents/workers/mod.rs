//! External workers (`Work`): processes that attach over a stream, take
//! leases on tasks, heartbeat, and report progress, results and failures.
//!
//! A lease is (task, agent, attempt). It is held in memory here and shown
//! in the store as the task RUNNING on the agent with that attempt. It ends
//! exactly once, by whoever takes it out of [`Workers::leases`]: the
//! worker's result or failure, CancelTask, StopAgent, the task's timeout,
//! or its loss — the worker's stream stays broken past the grace period,
//! or it stops heartbeating for the lease timeout. A lost lease sends the
//! task to another agent as its next attempt; anything the old attempt
//! sends afterwards finds no lease and is refused (fencing by attempt).
//!
//! - [`connect`]: hello (register or reattach), the messages of a stream,
//!   and its end.
//! - [`leases`]: granting a lease to a worker, and ending one.
//! - [`monitor`]: the clock: missed heartbeats, grace periods, timeouts.

pub(crate) mod connect;
pub(crate) mod leases;
pub(crate) mod monitor;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::types::{Agent, Task};
use crate::error::Result;

/// A worker's first message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerHello {
    /// Spec it serves.
    pub spec_name: String,
    /// Agent to reattach as, or empty for a new one.
    pub agent_id: String,
    /// Most tasks at once; 0 means the spec's limit.
    pub max_concurrent_tasks: u32,
    /// Labels of a new agent.
    pub labels: BTreeMap<String, String>,
}

/// A worker's message after hello.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMessage {
    /// Alive; with checkpoints of its tasks.
    Heartbeat(Vec<Checkpoint>),
    /// Progress on a task.
    Progress {
        /// Task id.
        task_id: String,
        /// Attempt; 0 means the one held.
        attempt: u32,
        /// 0 to 1.
        fraction: f32,
        /// Short message.
        message: String,
    },
    /// A task's result.
    Result {
        /// Task id.
        task_id: String,
        /// Attempt; 0 means the one held.
        attempt: u32,
        /// Text output.
        output_text: String,
        /// Structured output.
        output: Option<Map<String, Value>>,
    },
    /// A task failed.
    Failure {
        /// Task id.
        task_id: String,
        /// Attempt; 0 means the one held.
        attempt: u32,
        /// What went wrong.
        message: String,
        /// Another attempt may succeed.
        retryable: bool,
    },
}

/// A worker's saved state of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Task id.
    pub task_id: String,
    /// Attempt; 0 means the one held.
    pub attempt: u32,
    /// The state.
    pub data: Map<String, Value>,
}

/// What the server tells a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Directive {
    /// Answer to hello.
    Registered {
        /// The worker's agent.
        agent_id: String,
        /// Heartbeat at least this often.
        heartbeat_interval: Duration,
        /// Leases lapse after this long without one.
        lease_timeout: Duration,
    },
    /// Run this task (its attempt and checkpoint inside).
    Assign {
        /// The task.
        task: Box<Task>,
        /// Outputs of its dependencies, by task id.
        dependency_outputs: BTreeMap<String, String>,
    },
    /// Stop this task.
    Cancel {
        /// Task id.
        task_id: String,
        /// Why.
        reason: String,
    },
    /// Answer to a progress, result, failure or checkpoint.
    Ack(Ack),
}

/// The server's answer to one of a worker's reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ack {
    /// Task id.
    pub task_id: String,
    /// The attempt it was taken for.
    pub attempt: u32,
    /// Recorded.
    pub accepted: bool,
    /// Why not.
    pub reason: String,
    /// "progress", "result", "failure" or "checkpoint".
    pub of: &'static str,
}

/// The sending half of a worker's stream; an error ends the stream.
pub(crate) type Outbox = mpsc::UnboundedSender<Result<Directive>>;

/// An attached worker stream: its agent, and what to send it.
#[derive(Debug)]
pub struct WorkerSession {
    /// The worker's agent.
    pub agent: Agent,
    /// Which stream of that agent this is.
    pub conn: u64,
    /// Directives for the worker, in order.
    pub directives: mpsc::UnboundedReceiver<Result<Directive>>,
}

/// A worker agent's connection, as the server knows it.
#[derive(Debug)]
pub(crate) struct Link {
    /// The stream it came on (a reattach makes a new one).
    pub conn: u64,
    /// Where directives go; None while the stream is broken.
    pub outbox: Option<Outbox>,
    /// Its last heartbeat (or hello).
    pub last_heartbeat: Instant,
    /// When the last heartbeat was written to the store.
    pub persisted_heartbeat: Instant,
    /// With no stream: when its leases lapse unless it reconnects.
    pub lapse_at: Option<Instant>,
    /// Missed its heartbeats: its leases are gone, it takes no tasks.
    pub unresponsive: bool,
}

/// A task leased to a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lease {
    /// The worker's agent.
    pub agent_id: String,
    /// The attempt.
    pub attempt: u32,
    /// When the task's timeout elapses.
    pub timeout_at: Instant,
}

/// Every worker link and lease.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    /// By agent id.
    pub links: HashMap<String, Link>,
    /// By task id.
    pub leases: HashMap<String, Lease>,
    /// The last stream number given.
    pub last_conn: u64,
}

impl Workers {
    /// Sends `directive` to `agent`'s worker, if it is connected.
    pub fn send(&self, agent: &str, directive: Directive) {
        if let Some(outbox) = self.links.get(agent).and_then(|l| l.outbox.as_ref()) {
            let _ = outbox.send(Ok(directive));
        }
    }

    /// The attempt of the lease `agent` holds on `task` (`attempt` 0: any),
    /// or why it holds none: the field at fault ("task_id" or "attempt")
    /// and what is wrong.
    pub fn held(&self, task: &str, agent: &str, attempt: u32) -> std::result::Result<u32, Refusal> {
        match self.leases.get(task) {
            Some(l) if l.agent_id == agent && (attempt == 0 || attempt == l.attempt) => {
                Ok(l.attempt)
            }
            Some(l) if l.agent_id == agent => Err(Refusal {
                field: "attempt",
                why: format!(
                    "attempt {attempt} of task {task} is over: this worker holds attempt {}",
                    l.attempt
                ),
            }),
            _ => Err(Refusal {
                field: "task_id",
                why: format!(
                    "this worker holds no lease on task {task}: it ended, or was lost and the \
                     task reassigned"
                ),
            }),
        }
    }

    /// Takes out the lease `agent` holds on `task` (`attempt` 0: any).
    pub fn take(
        &mut self,
        task: &str,
        agent: &str,
        attempt: u32,
    ) -> std::result::Result<Lease, Refusal> {
        self.held(task, agent, attempt)?;
        Ok(self.leases.remove(task).expect("held just now"))
    }
}

/// Why a worker's report about a task was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field at fault, within the report.
    pub field: &'static str,
    /// What is wrong.
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_once_and_only_by_its_attempt() {
        let mut w = Workers::default();
        let lease = Lease {
            agent_id: "a".into(),
            attempt: 2,
            timeout_at: Instant::now(),
        };
        w.leases.insert("t".into(), lease.clone());
        assert!(w.held("t", "b", 0).is_err(), "another agent's lease");
        assert_eq!(w.held("t", "a", 1).unwrap_err().field, "attempt");
        assert_eq!(w.held("t", "b", 2).unwrap_err().field, "task_id");
        assert_eq!(w.held("t", "a", 0), Ok(2));
        assert!(w.take("t", "a", 1).is_err());
        assert_eq!(w.take("t", "a", 2), Ok(lease));
        assert!(w.take("t", "a", 2).is_err(), "taken once");
    }
}
