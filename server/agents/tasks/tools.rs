//! Tools in agents' tasks: worker tool calls leased as tasks, and the
//! activity events of every call.
//!
//! A call of a worker tool (a query's, or an agent spec's
//! TOOL_LOCATION_WORKER tool) becomes a task of its own: `tool_call` names
//! the tool, `input` holds the arguments, and it is routed only to external
//! workers whose spec has the tool's capability. So it gets everything a
//! task gets: a fenced lease, heartbeats, reassignment with attempt+1 when
//! a worker dies, a checkpoint, cancellation, events. Its end is the
//! call's result. When the query stops waiting for it (the tool's timeout,
//! the query terminated), the task is cancelled.
//!
//! Tasks called from an agent's task are its children (`parent_task_id`,
//! `child_task_ids`), and the task's events show each call and result.

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::submit::{DEFAULT_ATTEMPTS, submission};
use crate::agents::engine::{AgentEngine, new_event, task_of, task_row};
use crate::agents::types::{ActivityKind, Route, Task, TaskBody, TaskState, TaskTarget};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::error::{Error, Result};
use crate::query::{ToolCall, ToolLocation, ToolOutcome, WorkerToolCall};
use crate::store::{Submitted, TaskWrite};

/// The query label that names the task a query runs for.
pub(crate) const TASK_LABEL: &str = "agentd.task";
/// The query label that names the agent a query runs for.
pub(crate) const AGENT_LABEL: &str = "agentd.agent";
/// A tool task's label naming the query that made the call.
const QUERY_LABEL: &str = "agentd.query";
/// A tool task's label naming the call.
const CALL_LABEL: &str = "agentd.tool_call";
/// A tool call's task goes before ordinary tasks: a running task waits for
/// it.
const TOOL_PRIORITY: i32 = 100;
/// Most bytes of a result an event repeats (the query keeps all of it).
const EVENT_CONTENT_BYTES: usize = 1024;

impl AgentEngine {
    /// Leases the query engine's worker tool calls from now on, each as a
    /// task; None when there is no query engine or something else takes
    /// its calls. Runs until the handle is aborted (at shutdown).
    pub(crate) fn serve_worker_tools(&self) -> Option<JoinHandle<()>> {
        let mut calls = self.query.as_ref()?.take_worker_tool_calls()?;
        let engine = self.clone();
        Some(tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                tokio::spawn(engine.clone().run_worker_tool(call));
            }
        }))
    }

    /// Runs one call as a task and answers the query with its end, or
    /// cancels the task when the query stops waiting.
    async fn run_worker_tool(self, request: WorkerToolCall) {
        let WorkerToolCall {
            query_id,
            labels,
            call,
            capability,
            timeout,
            mut reply,
        } = request;
        let parent = labels.get(TASK_LABEL).cloned().unwrap_or_default();
        let parent_agent = labels.get(AGENT_LABEL).cloned().unwrap_or_default();
        let task = tool_task(&query_id, &parent, call, capability, timeout);
        let id = task.id.clone();
        if let Err(e) = self.submit_tool_task(task, &parent_agent).await {
            let _ = reply.send(ToolOutcome::error(format!(
                "the call could not be handed to a worker: {e}"
            )));
            return;
        }
        let ended = async {
            let updates = self.watch_task(id.clone()).await?;
            let mut ended = Box::pin(updates.filter_map(|t| {
                std::future::ready(match t {
                    Ok(t) if !t.state.is_finished() => None,
                    other => Some(other),
                })
            }));
            ended.next().await.unwrap_or_else(|| {
                Err(Error::Internal(format!(
                    "tool task {id} stopped being watched"
                )))
            })
        };
        tokio::select! {
            ended = ended => {
                let outcome = match ended {
                    Ok(task) => outcome_of(&task),
                    Err(e) => ToolOutcome::error(format!("the call's task was lost: {e}")),
                };
                let _ = reply.send(outcome);
            }
            () = reply.closed() => {
                let reason = "its tool call no longer waits for it (the tool's timeout passed, \
                              or its query ended)";
                if let Err(e) = self.cancel_task(id.clone(), reason.into()).await {
                    tracing::warn!(task = %id, error = %e, "cannot cancel a tool call's task");
                }
            }
        }
    }

    /// Records a tool call's task (and, in the same transaction, its place
    /// among its parent's children, under the lock of the parent's agent
    /// `parent_agent`, which rewrites the parent too) and queues it.
    async fn submit_tool_task(&self, task: Task, parent_agent: &str) -> Result<()> {
        let _writing = self.agent_writes.agent(parent_agent).await;
        let mut writes = vec![submission(&task)];
        if !task.body.parent_task_id.is_empty() {
            let parent_id = task.body.parent_task_id.clone();
            let stored = with_store(&self.store, move |s| s.get_task(&parent_id)).await?;
            if let Some(mut parent) = stored.map(task_of).transpose()? {
                parent.body.child_task_ids.push(task.id.clone());
                writes.push(TaskWrite {
                    task: task_row(&parent),
                    agent: None,
                    events: Vec::new(),
                });
            }
        }
        let since = now_ms() - super::submit::KEY_RETENTION_MS;
        match with_store(&self.store, move |s| s.submit_tasks(&writes, None, since)).await? {
            Submitted::Created(events) => self.appended(&events),
            Submitted::Existing(..) => {
                return Err(Error::Internal("a tool task has no idempotency key".into()));
            }
        }
        drop(_writing);
        self.schedule_new(&[&task], Default::default()).await;
        Ok(())
    }

    /// Records that task `task_id`'s model called a tool (kind
    /// TaskToolCall) or that the call got its result (TaskToolResult).
    /// The query holds the call either way: an event that cannot be
    /// written is logged, and the task goes on.
    pub(crate) async fn record_tool_event(
        &self,
        task_id: &str,
        agent_id: &str,
        kind: ActivityKind,
        message: String,
        details: Value,
    ) {
        let mut event = new_event(kind, message);
        event.task_id = task_id.to_owned();
        event.agent_id = agent_id.to_owned();
        event.details = details.to_string();
        match with_store(&self.store, move |s| s.append_events(vec![event])).await {
            Ok(events) => self.appended(&events),
            Err(e) => {
                tracing::error!(task = %task_id, error = %e, "cannot record a tool call's event")
            }
        }
    }
}

/// Ends a tool task left unfinished by the last run (at start-up): the
/// query that waited for it ended with the server. The write to make.
pub(crate) fn orphaned(task: &mut Task) -> TaskWrite {
    let reason = "its tool call's query ended when the server stopped";
    task.state = TaskState::Cancelled;
    task.body.finished_at_ms = Some(now_ms());
    let mut event = new_event(
        ActivityKind::TaskCancelled,
        format!("task {} cancelled: {reason}", task.id),
    );
    event.task_id = task.id.clone();
    event.agent_id = task.agent_id.clone();
    event.details = json!({ "reason": reason }).to_string();
    TaskWrite {
        task: task_row(task),
        agent: None,
        events: vec![event],
    }
}

/// The details of a TaskToolCall event.
pub(crate) fn call_details(call: &ToolCall, location: ToolLocation, turn: u32) -> Value {
    let location = match location {
        ToolLocation::Client => "client",
        ToolLocation::Server => "server",
        ToolLocation::Worker => "worker",
    };
    json!({
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "location": location,
        "turn": turn,
    })
}

/// The details of a TaskToolResult event: the content cut to
/// [`EVENT_CONTENT_BYTES`] (on a character boundary).
pub(crate) fn result_details(call_id: &str, name: &str, outcome: &ToolOutcome) -> Value {
    let mut end = outcome.content.len().min(EVENT_CONTENT_BYTES);
    while !outcome.content.is_char_boundary(end) {
        end -= 1;
    }
    json!({
        "call_id": call_id,
        "name": name,
        "is_error": outcome.is_error,
        "content": &outcome.content[..end],
        "truncated": end < outcome.content.len(),
    })
}

/// The task that runs `call` of query `query_id` (made for task `parent`,
/// or by a client when empty) on a worker with `capability`.
fn tool_task(
    query_id: &str,
    parent: &str,
    call: ToolCall,
    capability: String,
    timeout: std::time::Duration,
) -> Task {
    let labels = [
        (QUERY_LABEL.to_owned(), query_id.to_owned()),
        (CALL_LABEL.to_owned(), call.id.clone()),
    ]
    .into();
    Task {
        id: ulid::Ulid::new().to_string(),
        state: TaskState::Pending,
        agent_id: String::new(),
        created_at_ms: now_ms(),
        body: TaskBody {
            target: TaskTarget::Capability(capability.clone()),
            route: Some(Route::Worker(capability.clone())),
            required_capability: capability,
            input: call.object().cloned(),
            priority: TOOL_PRIORITY,
            timeout_ms: timeout.as_millis() as u64,
            max_attempts: DEFAULT_ATTEMPTS,
            labels,
            parent_task_id: parent.to_owned(),
            tool_call: Some(call),
            ..Default::default()
        },
    }
}

/// A tool task's end as the call's result: its structured output as JSON,
/// else its text; its failure, cancellation or timeout as an error.
fn outcome_of(task: &Task) -> ToolOutcome {
    match task.state {
        TaskState::Succeeded => match &task.body.output {
            Some(output) => ToolOutcome::ok(Value::Object(output.clone()).to_string()),
            None => ToolOutcome::ok(task.body.output_text.clone()),
        },
        _ => {
            let why = task
                .body
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| format!("its task ended {}", task.state.as_str()));
            ToolOutcome::error(format!("the worker did not run the tool: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::types::{TaskError, TaskErrorKind};

    #[test]
    fn a_tool_task_carries_the_call_and_goes_only_to_workers() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: json!({"q": "rust"}),
        };
        let t = tool_task(
            "Q",
            "P",
            call.clone(),
            "search".into(),
            std::time::Duration::from_secs(30),
        );
        assert_eq!(t.body.route(), Route::Worker("search".into()));
        assert_eq!(t.body.input, json!({"q": "rust"}).as_object().cloned());
        assert_eq!(t.body.tool_call, Some(call));
        assert_eq!(t.body.parent_task_id, "P");
        assert_eq!(t.body.timeout_ms, 30_000);
        assert_eq!(t.body.labels["agentd.query"], "Q");
        assert_eq!(t.body.labels["agentd.tool_call"], "call_1");
    }

    #[test]
    fn a_tool_tasks_end_is_the_calls_result() {
        let call = ToolCall {
            id: "c".into(),
            name: "t".into(),
            arguments: json!({}),
        };
        let mut t = tool_task("Q", "", call, "x".into(), std::time::Duration::from_secs(1));
        t.state = TaskState::Succeeded;
        t.body.output_text = "plain".into();
        assert_eq!(outcome_of(&t), ToolOutcome::ok("plain"));
        t.body.output = json!({"n": 1}).as_object().cloned();
        assert_eq!(outcome_of(&t), ToolOutcome::ok(r#"{"n":1}"#));
        t.state = TaskState::Failed;
        t.body.error = Some(TaskError {
            kind: TaskErrorKind::Worker,
            message: "disk full".into(),
        });
        let failed = outcome_of(&t);
        assert!(failed.is_error && failed.content.contains("disk full"));
        t.body.error = None;
        t.state = TaskState::Cancelled;
        assert!(outcome_of(&t).content.contains("cancelled"));
    }

    #[test]
    fn result_details_cut_long_content_on_a_character_boundary() {
        let long = "é".repeat(EVENT_CONTENT_BYTES);
        let d = result_details("c", "t", &ToolOutcome::ok(long));
        let content = d["content"].as_str().unwrap();
        assert!(content.len() <= EVENT_CONTENT_BYTES && content.chars().all(|c| c == 'é'));
        assert_eq!(d["truncated"], true);
    }
}
