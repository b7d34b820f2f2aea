//! SubmitTask, GetTask, ListTasks, CancelTask and WatchTask.
//!
//! A submitted task is recorded PENDING (with its idempotency key, in one
//! transaction) and queued; the scheduler gives it a free agent, by
//! priority then arrival, and a runner runs it.

use futures::{Stream, StreamExt};

use serde_json::json;

use super::outcome::End;
use super::runner::DEFAULT_TIMEOUT;
use crate::agents::engine::{AgentEngine, new_event, task_of, task_row};
use crate::agents::types::{
    ActivityKind, AgentState, SubmitParams, Task, TaskBody, TaskState, TaskTarget,
};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{self, Page};
use crate::common::sync::lock;
use crate::error::{Error, Result, Violations};
use crate::store::{Submitted, TaskWrite};

/// Longest prompt, in bytes.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
/// Most attempts a task may ask for.
pub const MAX_ATTEMPTS: u32 = 10;
/// Attempts when a task asks for none.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Longest task timeout.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How long a submission's idempotency key is remembered.
pub(super) const KEY_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// What a submission asks for, to compare a retry with the first.
pub(super) fn fingerprint(p: &SubmitParams) -> String {
    json!({
        "depends_on": p.depends_on,
        "target": format!("{:?}", p.target),
        "prompt": p.prompt,
        "input": p.input,
        "priority": p.priority,
        "timeout": p.timeout.map(|t| t.as_millis()),
        "labels": p.labels,
        "max_attempts": p.max_attempts,
        "max_cost_usd": p.max_cost_usd,
        "required_capability": p.required_capability,
        "execution": format!("{:?}", p.execution),
    })
    .to_string()
}

/// The limits of a submission, field by field.
pub(super) fn check(p: &SubmitParams) -> Result<()> {
    let mut v = Violations::new();
    match &p.target {
        None => v.add(
            "target",
            "must name an agent_id, a swarm_id or a capability",
        ),
        Some(TaskTarget::Agent(id)) if id.is_empty() => {
            v.add("target.agent_id", "must not be empty")
        }
        Some(TaskTarget::Capability(c)) if c.is_empty() => {
            v.add("target.capability", "must not be empty")
        }
        _ => {}
    }
    if p.prompt.is_empty() && p.input.is_none() {
        v.add("prompt", "must be set unless input is");
    }
    if p.prompt.len() > MAX_PROMPT_BYTES {
        v.add(
            "prompt",
            format!("must be at most {MAX_PROMPT_BYTES} bytes"),
        );
    }
    if let Some(input) = &p.input {
        let size = serde_json::Value::Object(input.clone()).to_string().len();
        if size > MAX_PROMPT_BYTES {
            v.add(
                "input",
                format!("must be at most {MAX_PROMPT_BYTES} bytes as JSON"),
            );
        }
    }
    if !(-100..=100).contains(&p.priority) {
        v.add(
            "priority",
            format!("must be -100 to 100, got {}", p.priority),
        );
    }
    if let Some(t) = p.timeout
        && (t < std::time::Duration::from_secs(1) || t > MAX_TIMEOUT)
    {
        v.add("timeout", "must be 1 second to 24 hours");
    }
    if p.max_attempts > MAX_ATTEMPTS {
        v.add(
            "max_attempts",
            format!("must be at most {MAX_ATTEMPTS}, got {}", p.max_attempts),
        );
    }
    if let Some(max) = p.max_cost_usd
        && !(max.is_finite() && max > 0.0)
    {
        v.add(
            "max_cost_usd",
            format!("must be a positive number of US dollars, got {max}"),
        );
    }
    if p.idempotency_key.len() > 128 {
        v.add("idempotency_key", "must be at most 128 bytes");
    }
    if p.labels.len() > 32 {
        v.add("labels", "must hold at most 32 labels");
    }
    if p.depends_on.len() > super::graph::MAX_DEPENDENCIES {
        v.add(
            "depends_on",
            format!(
                "must hold at most {} task ids, got {}",
                super::graph::MAX_DEPENDENCIES,
                p.depends_on.len()
            ),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, d) in p.depends_on.iter().enumerate() {
        if !seen.insert(d) {
            v.add(format!("depends_on[{i}]"), "repeats an earlier id");
        }
    }
    if let Some(TaskTarget::Swarm(id)) = &p.target
        && id.is_empty()
    {
        v.add("target.swarm_id", "must not be empty");
    }
    if p.required_capability.len() > 64 {
        v.add("required_capability", "must be at most 64 bytes");
    }
    v.finish()
}

/// A new PENDING task of submission `p`.
pub(crate) fn new_task(p: &SubmitParams, id: String, now: i64, depends_on: Vec<String>) -> Task {
    Task {
        id,
        state: TaskState::Pending,
        agent_id: String::new(),
        created_at_ms: now,
        body: TaskBody {
            target: p.target.clone().unwrap_or_default(),
            prompt: p.prompt.clone(),
            input: p.input.clone(),
            priority: p.priority,
            timeout_ms: p.timeout.unwrap_or(DEFAULT_TIMEOUT).as_millis() as u64,
            max_attempts: match p.max_attempts {
                0 => DEFAULT_ATTEMPTS,
                n => n,
            },
            labels: p.labels.clone(),
            max_cost_usd: p.max_cost_usd,
            depends_on,
            required_capability: p.required_capability.clone(),
            execution: p.execution,
            ..Default::default()
        },
    }
}

/// The write that records `task` as submitted.
pub(crate) fn submission(task: &Task) -> TaskWrite {
    let mut event = new_event(
        ActivityKind::TaskSubmitted,
        format!("task {} submitted", task.id),
    );
    event.task_id = task.id.clone();
    if let TaskTarget::Agent(id) = &task.body.target {
        event.agent_id = id.clone();
    }
    event.details = json!({
        "priority": task.body.priority,
        "depends_on": task.body.depends_on,
    })
    .to_string();
    TaskWrite {
        task: task_row(task),
        agent: None,
        events: vec![event],
    }
}

impl AgentEngine {
    /// A task's target agent, when it names one, exists and takes tasks.
    pub(super) async fn check_target(&self, p: &SubmitParams) -> Result<()> {
        if let Some(TaskTarget::Agent(id)) = &p.target {
            let agent = self.get_agent(id.clone()).await.map_err(|e| match e {
                Error::NotFound { .. } => Error::NotFound {
                    kind: "agent",
                    name: id.clone(),
                },
                other => other,
            })?;
            if agent.state == AgentState::Stopped {
                return Err(Error::WrongState(format!(
                    "agent {id} is stopped and takes no tasks"
                )));
            }
        }
        Ok(())
    }

    /// Records a task and queues it, or holds it for its dependencies
    /// (fields as SubmitTaskRequest's).
    pub async fn submit_task(&self, p: SubmitParams) -> Result<Task> {
        check(&p)?;
        self.check_target(&p).await?;
        let states = self.dependency_states(&p.depends_on, "depends_on").await?;
        let now = now_ms();
        let mut task = new_task(&p, ulid::Ulid::new().to_string(), now, p.depends_on.clone());
        let steps = self.expand(&mut task).await?;
        // The task first: a retried key answers with the first id.
        let writes: Vec<TaskWrite> = std::iter::once(&task)
            .chain(&steps)
            .map(submission)
            .collect();
        let key =
            (!p.idempotency_key.is_empty()).then(|| (p.idempotency_key.clone(), fingerprint(&p)));
        let since = now - KEY_RETENTION_MS;
        let submitted = with_store(&self.store, move |s| {
            s.submit_tasks(
                &writes,
                key.as_ref().map(|(k, f)| (k.as_str(), f.as_str())),
                since,
            )
        })
        .await?;
        match submitted {
            Submitted::Created(events) => {
                self.appended_task(&events, &task);
                // Steps before the task, which waits for them.
                let order: Vec<&Task> = steps.iter().chain(std::iter::once(&task)).collect();
                self.schedule_new(&order, states).await;
                Ok(task)
            }
            Submitted::Existing(ids, print) => {
                if print != fingerprint(&p) {
                    return Err(Error::invalid(
                        "idempotency_key",
                        "was used for a different task within 24 hours",
                    ));
                }
                let id = ids.into_iter().next().unwrap_or_default();
                self.load_task(&id).await
            }
        }
    }

    /// One task.
    pub async fn get_task(&self, id: String) -> Result<Task> {
        if id.is_empty() {
            return Err(Error::invalid("id", "must not be empty"));
        }
        self.load_task(&id).await
    }

    /// Tasks newest first, optionally in one state or of one agent.
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        agent_id: String,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Task>> {
        let limit = page::page_size(page_size);
        let before = page::cursor(page_token)?;
        let state = state.map(|s| s.as_str().to_owned()).unwrap_or_default();
        let rows = with_store(&self.store, move |s| {
            s.list_tasks(&state, &agent_id, &before, limit + 1)
        })
        .await?;
        let tasks = rows.into_iter().map(task_of).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(tasks, limit, |t| t.id.clone()))
    }

    /// Cancels a pending or running task (field `reason`); a finished one
    /// is answered as it is.
    pub async fn cancel_task(&self, id: String, reason: String) -> Result<Task> {
        if reason.len() > 256 {
            return Err(Error::invalid("reason", "must be at most 256 bytes"));
        }
        let reason = if reason.is_empty() {
            "cancelled by a client".to_owned()
        } else {
            reason
        };
        let task = self.get_task(id.clone()).await?;
        if task.state.is_finished() {
            return Ok(task);
        }
        let (waiting, assigned) = {
            let mut scheduler = lock(&self.scheduler);
            let waiting = scheduler.dequeue(&id);
            let assigned = scheduler.agents.values().any(|s| s.running.contains(&id));
            if !waiting {
                // Running: its runner ends it and records why. Between
                // attempts (a retry waiting out its backoff): the retry
                // finds this and stops.
                scheduler.cancelled.insert(id.clone(), reason.clone());
            }
            (waiting, assigned)
        };
        let leased = lock(&self.workers)
            .leases
            .get(&id)
            .map(|l| l.agent_id.clone());
        if waiting || !assigned {
            self.cancel_waiting(&id, reason).await?;
        } else if let Some(agent) = leased {
            // On a worker: the lease ends now, and the worker is told.
            let _ = self
                .end_lease(&id, &agent, 0, End::Cancelled(reason.clone()), Some(reason))
                .await;
        } else {
            if task.state == TaskState::Running
                && !task.body.query_id.is_empty()
                && let Some(query) = &self.query
            {
                // Already ended: the runner records the end it saw.
                let _ = query.terminate(&task.body.query_id, reason).await;
            }
            // Wait (briefly) for the runner to record it.
            let updates = self.watch_task(id.clone()).await?;
            let ended = updates
                .filter_map(|t| std::future::ready(t.ok().filter(|t| t.state.is_finished())));
            futures::pin_mut!(ended);
            if let Ok(Some(task)) =
                tokio::time::timeout(std::time::Duration::from_secs(2), ended.next()).await
            {
                return Ok(task);
            }
        }
        self.load_task(&id).await
    }

    /// Records a task that was not running as cancelled.
    pub(crate) async fn cancel_waiting(&self, id: &str, reason: String) -> Result<()> {
        let mut task = self.load_task(id).await?;
        if task.state.is_finished() {
            return Ok(());
        }
        task.state = TaskState::Cancelled;
        task.body.finished_at_ms = Some(now_ms());
        let mut event = new_event(
            ActivityKind::TaskCancelled,
            format!("task {id} cancelled: {reason}"),
        );
        event.task_id = id.to_owned();
        event.details = json!({ "reason": reason }).to_string();
        let write = TaskWrite {
            task: task_row(&task),
            agent: None,
            events: vec![event],
        };
        let events = with_store(&self.store, move |s| s.save_task(&write)).await?;
        self.appended(&events);
        self.note_end(task.created_at_ms);
        self.task_ended(id, TaskState::Cancelled).await;
        Ok(())
    }

    /// The task now, then again after each of its changes, until it ends.
    pub async fn watch_task(
        &self,
        id: String,
    ) -> Result<impl Stream<Item = Result<Task>> + Send + 'static> {
        // Subscribed before the first read: a change from here on rings,
        // whichever side of the read it lands on. Changes that come
        // together are read as one update (the task's state then).
        let bell = self.task_bell(&id);
        let first = self.get_task(id.clone()).await?;
        let engine = self.clone();
        let done = first.state.is_finished();
        // Ends right after the update that shows the task finished, without
        // waiting for another event.
        let state = (bell, engine, id, done);
        let rest = futures::stream::unfold(state, |(mut bell, engine, id, done)| async move {
            if done {
                return None;
            }
            bell.changed().await.ok()?;
            let rung = bell.borrow_and_update().clone();
            let task = match rung.task {
                Some(task) => Ok(Task::clone(&task)),
                None => engine.load_task(&id).await,
            };
            let done = task.as_ref().map_or(true, |t| t.state.is_finished());
            Some((task, (bell, engine, id, done)))
        });
        let head = futures::stream::once(std::future::ready(Ok(first)));
        Ok(head.chain(rest))
    }
}
