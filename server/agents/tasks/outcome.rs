//! How a task attempt starts and ends, on internal agents and external
//! workers alike: the task and its agent rewritten in one store
//! transaction with the events that say what happened, and a retry queued
//! when one is due.
//!
//! Both are computed from the rows as the transaction reads them
//! (`TaskStore::update_task`), by pure functions ([`start_attempt`],
//! [`Attempt::end`]): the tasks starting and ending on one agent at once
//! need no lock between a read and a write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::agents::engine::{AgentEngine, agent_of, new_event, row_of, task_of, task_row};
use crate::agents::swarms::expand::handoff_capability;
use crate::agents::types::{
    ActivityKind, Agent, AgentState, Route, Step, Task, TaskError, TaskErrorKind, TaskState,
};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::sync::lock;
use crate::error::{Error, Result};
use crate::query::TokenUsage;
use crate::store::{NewEvent, TaskChange, TaskWrite};

/// First retry backoff; doubles per attempt.
const BACKOFF: Duration = Duration::from_millis(500);

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum End {
    /// The query completed, or the worker sent its result.
    Succeeded {
        /// The answer.
        text: String,
        /// Structured output (workers).
        output: Option<Map<String, Value>>,
    },
    /// It failed; whether another attempt may succeed.
    Failed(TaskError, bool),
    /// A client cancelled the task, or terminated its query.
    Cancelled(String),
    /// Its agent stopped: the task goes to another one (this attempt does
    /// not count as a failure).
    Requeued(String),
    /// A MESH member handed the task off to a member with this
    /// capability: it goes there as its next attempt.
    Handoff(String),
    /// The worker holding its lease went away: the task goes to another
    /// agent while attempts are left, and fails otherwise.
    Lost(String),
    /// The server shuts down: the task runs again after the restart.
    Interrupted,
    /// The task had ended before the attempt began: nothing to record.
    AlreadyOver,
}

impl AgentEngine {
    /// Records that an attempt runs: the task RUNNING (with its query, for
    /// internal agents), its attempt counted, the agent busy with it, and a
    /// TaskAssigned event. The task and its agent as recorded, or None when
    /// the task had ended already (cancelled while it waited): nothing is
    /// written then.
    pub(crate) async fn mark_running(
        &self,
        task_id: &str,
        agent_id: &str,
        query_id: &str,
    ) -> Result<Option<(Task, Agent)>> {
        let _writing = self.agent_writes.in_transaction(agent_id).await;
        let running = Arc::new(Mutex::new(None));
        let out = Arc::clone(&running);
        let (a, q) = (agent_id.to_owned(), query_id.to_owned());
        let change: TaskChange = Arc::new(move |task, agent| {
            *lock(&out) = None;
            let mut task = task_of(task)?;
            if task.state.is_finished() {
                return Ok(None);
            }
            let mut agent = agent_of(agent.ok_or(Error::NotFound {
                kind: "agent",
                name: a.clone(),
            })?)?;
            let event = start_attempt(&mut task, &mut agent, &q);
            let write = TaskWrite {
                task: task_row(&task),
                agent: Some(row_of(&agent)),
                events: vec![event],
            };
            *lock(&out) = Some((task, agent));
            Ok(Some(write))
        });
        let (t, a) = (task_id.to_owned(), agent_id.to_owned());
        let written = with_store(&self.store, move |s| s.update_task(&t, &a, change)).await?;
        let Some(events) = written else {
            return Ok(None);
        };
        let running = lock(&running).take();
        match &running {
            Some((task, _)) => self.appended_task(&events, task),
            None => self.appended(&events),
        }
        Ok(running)
    }

    /// Records how an attempt ended, on the task and its agent, and queues
    /// a retry when one is due.
    pub(crate) async fn record_end(
        &self,
        task_id: &str,
        agent_id: &str,
        end: End,
        usage: TokenUsage,
        cost: f64,
    ) -> Result<()> {
        if matches!(end, End::AlreadyOver) {
            return Ok(());
        }
        let end = self.mesh_handoff(task_id, end).await?;
        let cancelled = lock(&self.scheduler).cancelled.contains_key(task_id);
        let writing = self.agent_writes.in_transaction(agent_id).await;
        let ended = Arc::new(Mutex::new(None));
        let out = Arc::clone(&ended);
        let a = agent_id.to_owned();
        let change: TaskChange = Arc::new(move |task, agent| {
            *lock(&out) = None;
            let mut task = task_of(task)?;
            let mut agent = agent.map(agent_of).transpose()?;
            let over = Attempt {
                agent_id: &a,
                usage,
                cost,
                cancelled,
            };
            let Some((event, retry)) = over.end(&mut task, agent.as_mut(), end.clone()) else {
                return Ok(None);
            };
            let write = TaskWrite {
                task: task_row(&task),
                agent: agent.as_ref().map(row_of),
                events: vec![event],
            };
            *lock(&out) = Some((task, retry));
            Ok(Some(write))
        });
        let (t, a) = (task_id.to_owned(), agent_id.to_owned());
        let written = with_store(&self.store, move |s| s.update_task(&t, &a, change)).await?;
        drop(writing);
        let (Some(events), Some((task, retry))) = (written, lock(&ended).take()) else {
            return Ok(());
        };
        self.appended_task(&events, &task);
        if task.state.is_finished() {
            lock(&self.scheduler).cancelled.remove(task_id);
            self.note_end(task.created_at_ms);
        }
        if task.state == TaskState::Succeeded
            && task.body.step == Step::Plan
            && let Err(e) = self.plan_done(&task, &task.body.output_text).await
        {
            tracing::error!(task = %task_id, error = %e, "cannot turn a plan into subtasks");
        }
        if task.state.is_finished() {
            self.task_ended(task_id, task.state).await;
        }
        if let Some(backoff) = retry {
            self.requeue_after(task, backoff);
        }
        Ok(())
    }

    /// `end`, or a handoff when it is the answer of a MESH swarm's member
    /// that hands the task on.
    async fn mesh_handoff(&self, task_id: &str, end: End) -> Result<End> {
        let End::Succeeded { text, output } = end else {
            return Ok(end);
        };
        if let Some(cap) = handoff_capability(&text) {
            let task = self.load_task(task_id).await?;
            if let Route::Swarm { id, .. } = task.body.route()
                && self.is_mesh(&id).await
            {
                return Ok(End::Handoff(cap));
            }
        }
        Ok(End::Succeeded { text, output })
    }

    /// Puts `task` back in the queue after `backoff` (unless it was
    /// cancelled meanwhile).
    fn requeue_after(&self, task: Task, backoff: Duration) {
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            // One look under the lock: a cancel lands either before (and
            // the task is not queued) or after (and finds it queued).
            let cancelled = {
                let mut scheduler = lock(&engine.scheduler);
                let cancelled = scheduler.cancelled.remove(&task.id);
                if cancelled.is_none() {
                    scheduler.enqueue(task.id.clone(), task.body.priority, task.body.route());
                }
                cancelled
            };
            match cancelled {
                Some(reason) => {
                    if let Err(e) = engine.cancel_waiting(&task.id, reason).await {
                        tracing::error!(task = %task.id, error = %e, "cannot cancel a task");
                    }
                }
                None => engine.dispatch(),
            }
        });
    }

    /// The task `id` from the store.
    pub(crate) async fn load_task(&self, id: &str) -> Result<Task> {
        let key = id.to_owned();
        let stored = with_store(&self.store, move |s| s.get_task(&key)).await?;
        task_of(stored.ok_or(Error::NotFound {
            kind: "task",
            name: id.to_owned(),
        })?)
    }
}

/// What an attempt's end does to its task and agent rows (pure: it runs
/// inside the store's transaction, perhaps more than once).
struct Attempt<'a> {
    agent_id: &'a str,
    usage: TokenUsage,
    cost: f64,
    /// A client cancelled the task: a failure is not retried.
    cancelled: bool,
}

impl Attempt<'_> {
    /// Applies `end` to `task` and its `agent`: the event to append and the
    /// backoff of a retry when one is due; None when there is nothing to
    /// record.
    fn end(
        &self,
        task: &mut Task,
        mut agent: Option<&mut Agent>,
        end: End,
    ) -> Option<(NewEvent, Option<Duration>)> {
        let (task_id, agent_id) = (task.id.clone(), self.agent_id);
        let (task_id, usage, cost) = (task_id.as_str(), self.usage, self.cost);
        task.body.input_tokens += usage.input;
        task.body.output_tokens += usage.output;
        task.body.cost_usd += cost;
        if let Some(agent) = &mut agent {
            agent.body.running_task_ids.retain(|t| t != task_id);
            agent.body.input_tokens += usage.input;
            agent.body.output_tokens += usage.output;
            agent.body.cost_usd += cost;
            if agent.state == AgentState::Busy && agent.body.running_task_ids.is_empty() {
                agent.state = AgentState::Idle;
            }
        }
        let mut retry = None;
        let (kind, message, details) = match end {
            End::Handoff(cap) => {
                let message = format!(
                    "task {task_id} handed off by agent {agent_id} to a member with capability {cap}"
                );
                if task.body.attempt < task.body.max_attempts {
                    task.state = TaskState::Pending;
                    retry = Some(Duration::ZERO);
                    if let Route::Swarm { id, .. } = task.body.route() {
                        task.body.route = Some(Route::Swarm {
                            id,
                            capability: Some(cap.clone()),
                            exclude: Some(agent_id.to_owned()),
                        });
                    }
                    (
                        ActivityKind::TaskReassigned,
                        message,
                        json!({ "attempt": task.body.attempt, "handoff": cap }),
                    )
                } else {
                    task.state = TaskState::Failed;
                    task.body.error = Some(TaskError {
                        kind: TaskErrorKind::Invalid,
                        message: format!(
                            "task {task_id} was handed off on each of its {} attempts",
                            task.body.max_attempts
                        ),
                    });
                    (
                        ActivityKind::TaskFailed,
                        message,
                        json!({ "attempt": task.body.attempt, "handoff": cap, "retrying": false }),
                    )
                }
            }
            End::Succeeded { text, output } => {
                task.state = TaskState::Succeeded;
                task.body.output_text = text;
                task.body.output = output;
                task.body.error = None;
                if let Some(a) = &mut agent {
                    a.body.tasks_succeeded += 1;
                }
                (
                    ActivityKind::TaskCompleted,
                    format!("task {task_id} succeeded on agent {agent_id}"),
                    json!({ "attempt": task.body.attempt }),
                )
            }
            End::Failed(error, retryable) => {
                if let Some(a) = &mut agent {
                    a.body.tasks_failed += 1;
                }
                let again =
                    retryable && task.body.attempt < task.body.max_attempts && !self.cancelled;
                let message = format!(
                    "task {task_id} attempt {} failed on agent {agent_id}: {}",
                    task.body.attempt, error.message
                );
                task.state = if again {
                    TaskState::Pending
                } else if error.kind == TaskErrorKind::Timeout {
                    TaskState::TimedOut
                } else {
                    TaskState::Failed
                };
                task.body.error = Some(error);
                if again {
                    let backoff = BACKOFF * 2u32.pow(task.body.attempt.saturating_sub(1).min(10));
                    retry = Some(backoff);
                }
                (
                    ActivityKind::TaskFailed,
                    message,
                    json!({
                        "attempt": task.body.attempt,
                        "retrying": again,
                        "timed_out": task.state == TaskState::TimedOut,
                    }),
                )
            }
            End::Cancelled(reason) => {
                task.state = TaskState::Cancelled;
                (
                    ActivityKind::TaskCancelled,
                    format!("task {task_id} cancelled: {reason}"),
                    json!({ "reason": reason }),
                )
            }
            End::Interrupted => {
                // Pending in the store: the restart queues it again (its
                // next attempt is counted when it starts).
                task.state = TaskState::Pending;
                (
                    ActivityKind::TaskFailed,
                    format!(
                        "task {task_id} interrupted by the server's shutdown; it runs again after the restart"
                    ),
                    json!({ "attempt": task.body.attempt, "retrying": true, "interrupted": true }),
                )
            }
            End::AlreadyOver => return None,
            End::Requeued(reason) => {
                task.state = TaskState::Pending;
                retry = Some(Duration::ZERO);
                (
                    ActivityKind::TaskReassigned,
                    format!("task {task_id} goes to another agent: {reason}"),
                    json!({ "attempt": task.body.attempt, "reason": reason }),
                )
            }
            End::Lost(reason) => {
                if let Some(a) = &mut agent {
                    a.body.tasks_failed += 1;
                }
                let again = task.body.attempt < task.body.max_attempts;
                let message = format!(
                    "task {task_id} attempt {} lost on agent {agent_id}: {reason}",
                    task.body.attempt
                );
                task.body.error = Some(TaskError {
                    kind: TaskErrorKind::LeaseLost,
                    message: message.clone(),
                });
                if again {
                    task.state = TaskState::Pending;
                    retry = Some(Duration::ZERO);
                    (
                        ActivityKind::TaskReassigned,
                        message,
                        json!({ "attempt": task.body.attempt, "reason": reason }),
                    )
                } else {
                    task.state = TaskState::Failed;
                    (
                        ActivityKind::TaskFailed,
                        message,
                        json!({ "attempt": task.body.attempt, "retrying": false, "lease_lost": true }),
                    )
                }
            }
        };
        if task.state.is_finished() {
            task.body.finished_at_ms = Some(now_ms());
        }
        let mut event = new_event(kind, message);
        event.task_id = task_id.to_owned();
        event.agent_id = agent_id.to_owned();
        event.details = details.to_string();
        Some((event, retry))
    }
}

/// What an attempt's start does to its task and agent rows (pure, like
/// [`Attempt::end`]): the task RUNNING on the agent (with its query, for
/// internal agents), its attempt counted, the agent busy with it. The
/// TaskAssigned event to append.
fn start_attempt(task: &mut Task, agent: &mut Agent, query_id: &str) -> NewEvent {
    let (task_id, agent_id) = (task.id.clone(), agent.id.clone());
    task.state = TaskState::Running;
    task.agent_id = agent_id.clone();
    task.body.attempt += 1;
    task.body.query_id = query_id.to_owned();
    task.body.started_at_ms.get_or_insert(now_ms());
    if !agent.body.running_task_ids.contains(&task_id) {
        agent.body.running_task_ids.push(task_id.clone());
    }
    if agent.state == AgentState::Idle {
        agent.state = AgentState::Busy;
    }
    let how = if query_id.is_empty() {
        "leased to its worker".to_owned()
    } else {
        format!("as query {query_id}")
    };
    let mut event = new_event(
        ActivityKind::TaskAssigned,
        format!(
            "task {task_id} attempt {} runs on agent {agent_id} {how}",
            task.body.attempt
        ),
    );
    event.task_id = task_id;
    event.agent_id = agent_id;
    event.spec_name = agent.spec_name.clone();
    event.details = json!({ "attempt": task.body.attempt, "query_id": query_id }).to_string();
    event
}
