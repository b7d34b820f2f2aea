//! One attempt of a task on an internal agent: a query session on the
//! agent's spec (its model, fallbacks and system prompt; the query engine's
//! rules and caches apply), started, recorded on the task (`query_id`), and
//! followed to its end. The query is an ordinary one: a client can pause,
//! switch or resume it through QueryControl, and its timeout (the task's)
//! counts no paused time.
//!
//! How the attempt ended is recorded by [`super::outcome`].

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;

use super::outcome::End;
use super::tools::{AGENT_LABEL, TASK_LABEL, call_details, result_details};
use crate::agents::engine::AgentEngine;
use crate::agents::types::{ActivityKind, TaskError, TaskErrorKind};
use crate::error::{Error, Result};
use crate::query::{
    CachePolicy, ChatMessage, EventKind, QueryErrorKind, Role, SHUTDOWN_REASON, StartQuery,
    TokenUsage,
};

/// Default task timeout (the proto's "10 minutes").
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl AgentEngine {
    /// Runs one attempt of `task_id` on `agent_id` (already counted as
    /// running there by the scheduler), records the outcome, and lets the
    /// scheduler go on.
    pub(crate) async fn run_attempt(self, task_id: String, agent_id: String) {
        let (end, usage, cost) = match self.attempt(&task_id, &agent_id).await {
            Ok(done) => done,
            Err(e) => (
                End::Failed(
                    TaskError {
                        kind: TaskErrorKind::Internal,
                        message: e.to_string(),
                    },
                    false,
                ),
                TokenUsage::default(),
                0.0,
            ),
        };
        if matches!(end, End::AlreadyOver) {
            crate::common::sync::lock(&self.scheduler).release(&agent_id, &task_id);
            self.dispatch();
            return;
        }
        if let Err(e) = self.record_end(&task_id, &agent_id, end, usage, cost).await {
            tracing::error!(task = %task_id, error = %e, "cannot record the end of a task attempt");
        }
        crate::common::sync::lock(&self.scheduler).release(&agent_id, &task_id);
        self.dispatch();
    }

    /// Starts the attempt's query and follows it to its end.
    async fn attempt(&self, task_id: &str, agent_id: &str) -> Result<(End, TokenUsage, f64)> {
        let Some(query_engine) = self.query.clone() else {
            return Err(Error::WrongState(
                "the query service is disabled: internal agents cannot run tasks".into(),
            ));
        };
        // The attempt is recorded first (the task RUNNING with the id its
        // query will have), reading the task and its agent in the same
        // transaction: one trip to the store. The spec version is in memory
        // after its first use.
        let query_id = ulid::Ulid::new().to_string();
        let Some((task, agent)) = self.mark_running(task_id, agent_id, &query_id).await? else {
            // Cancelled while it waited to be picked up: nothing to run.
            return Ok((End::AlreadyOver, TokenUsage::default(), 0.0));
        };
        let spec = self
            .spec_version(&agent.spec_name, agent.spec_version)
            .await?;

        let prompt = match self.task_prompt(&task, &spec, &query_engine).await? {
            Ok(prompt) => prompt,
            Err(error) => return Ok((End::Failed(error, false), TokenUsage::default(), 0.0)),
        };
        // What earlier attempts spent counts against the task's budget.
        let budget = task.body.max_cost_usd.map(|max| max - task.body.cost_usd);
        if let Some(left) = budget
            && left <= 0.0
        {
            let error = TaskError {
                kind: TaskErrorKind::Budget,
                message: "earlier attempts spent the task's max_cost_usd".into(),
            };
            return Ok((End::Failed(error, false), TokenUsage::default(), 0.0));
        }
        let start = StartQuery {
            max_cost_usd: budget,
            model: spec.body.model.clone(),
            messages: vec![ChatMessage::new(Role::User, prompt)],
            system_prompt: spec.body.system_prompt.clone(),
            cache: CachePolicy::default(),
            fallback_models: spec.body.fallback_models.clone(),
            timeout: Some(Duration::from_millis(task.body.timeout_ms)),
            labels: BTreeMap::from([
                (TASK_LABEL.to_owned(), task.id.clone()),
                (AGENT_LABEL.to_owned(), agent.id.clone()),
            ]),
            tools: spec.body.tools.clone(),
            max_turns: spec.body.max_turns,
            id: Some(query_id.clone()),
            ..Default::default()
        };
        let query = match query_engine.start(start).await {
            Ok(q) => q,
            Err(e) => {
                let (kind, retryable) = match &e {
                    Error::Overloaded(_) | Error::NotReady(_) => (TaskErrorKind::Overloaded, true),
                    Error::InvalidArgument(_) | Error::NotFound { .. } | Error::WrongState(_) => {
                        (TaskErrorKind::Invalid, false)
                    }
                    _ => (TaskErrorKind::Internal, false),
                };
                let error = TaskError {
                    kind,
                    message: format!("the task's query could not start: {e}"),
                };
                return Ok((End::Failed(error, retryable), TokenUsage::default(), 0.0));
            }
        };
        // Cancelled, or its agent stopped, while the query started: the
        // query ends now (its Terminated event says how the task goes on).
        let why = {
            let scheduler = crate::common::sync::lock(&self.scheduler);
            scheduler.cancelled.get(task_id).cloned().or_else(|| {
                scheduler
                    .requeue
                    .contains(task_id)
                    .then(|| format!("agent {agent_id} stopped"))
            })
        };
        if let Some(reason) = why {
            let _ = query_engine.terminate(&query_id, reason).await;
        }

        let mut events = Box::pin(query_engine.attach_outline(&query_id).await?);
        let mut end = None;
        while let Some(event) = events.next().await {
            end = match event.kind {
                EventKind::ToolCall {
                    call,
                    location,
                    turn,
                    ..
                } => {
                    let message = format!(
                        "task {task_id}'s model called tool {} (call {})",
                        call.name, call.id
                    );
                    let details = call_details(&call, location, turn);
                    self.record_tool_event(
                        task_id,
                        agent_id,
                        ActivityKind::TaskToolCall,
                        message,
                        details,
                    )
                    .await;
                    continue;
                }
                EventKind::ToolResult {
                    call_id,
                    name,
                    outcome,
                } => {
                    let how = if outcome.is_error {
                        "an error"
                    } else {
                        "its result"
                    };
                    let message =
                        format!("task {task_id}'s call {call_id} of tool {name} got {how}");
                    let details = result_details(&call_id, &name, &outcome);
                    self.record_tool_event(
                        task_id,
                        agent_id,
                        ActivityKind::TaskToolResult,
                        message,
                        details,
                    )
                    .await;
                    continue;
                }
                EventKind::Completed { text, .. } => Some(End::Succeeded { text, output: None }),
                EventKind::Failed { error } => {
                    let (kind, retryable) = match error.kind {
                        QueryErrorKind::Timeout => (TaskErrorKind::Timeout, false),
                        QueryErrorKind::Provider => (TaskErrorKind::Provider, true),
                        QueryErrorKind::Overloaded => (TaskErrorKind::Overloaded, true),
                        QueryErrorKind::BudgetExceeded => (TaskErrorKind::Budget, false),
                        QueryErrorKind::InvalidArgument
                        | QueryErrorKind::NotFound
                        | QueryErrorKind::WrongState => (TaskErrorKind::Invalid, false),
                        QueryErrorKind::Internal => (TaskErrorKind::Internal, false),
                    };
                    let error = TaskError {
                        kind,
                        message: error.message,
                    };
                    Some(End::Failed(error, retryable))
                }
                EventKind::Terminated { reason, .. } => {
                    let mut sched = crate::common::sync::lock(&self.scheduler);
                    if let Some(why) = sched.cancelled.remove(task_id) {
                        Some(End::Cancelled(why))
                    } else if sched.requeue.remove(task_id) {
                        Some(End::Requeued(reason))
                    } else if reason == SHUTDOWN_REASON {
                        Some(End::Interrupted)
                    } else {
                        Some(End::Cancelled(format!(
                            "its query {query_id} was terminated: {reason}"
                        )))
                    }
                }
                _ => continue,
            };
            break;
        }
        let info = query.info();
        let mut end = end.unwrap_or_else(|| {
            End::Failed(
                TaskError {
                    kind: TaskErrorKind::Internal,
                    message: format!("query {query_id} ended without a final event"),
                },
                false,
            )
        });
        if let (End::Succeeded { text, .. }, Some(memory)) = (&end, &self.memory) {
            // Its memory keeps the answer when the spec asks for it.
            let mut done = task.clone();
            done.body.output_text = text.clone();
            if let Err(e) = memory.store_output(&spec, agent_id, &done).await {
                end = End::Failed(
                    TaskError {
                        kind: TaskErrorKind::Internal,
                        message: format!(
                            "the output could not be written to the agent's memory: {e}"
                        ),
                    },
                    true,
                );
            }
        }
        Ok((end, info.usage, info.cost_usd))
    }
}
