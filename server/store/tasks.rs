//! The agents engine's tasks: the [`TaskStore`] trait.
//!
//! A task's body is JSON the agents engine owns. A task write may carry the
//! row of the agent it changes (busy, counters) and the activity events it
//! causes: one transaction for all three.

use crate::error::Result;
use crate::store::{NewEvent, StoredAgent, StoredEvent};

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTask {
    /// Id (ULID).
    pub id: String,
    /// State name.
    pub state: String,
    /// Agent running it (the last one), or empty.
    pub agent_id: String,
    /// When it was submitted, Unix milliseconds.
    pub created_at: i64,
    /// JSON body.
    pub body: String,
}

/// A task write: the task, optionally an agent row, and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskWrite {
    /// The task (inserted or rewritten).
    pub task: StoredTask,
    /// The agent it changes, if any.
    pub agent: Option<StoredAgent>,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// How [`TaskStore::update_task`] rewrites a task: given the task's row and
/// its agent's (None when the agent id is empty or unknown) as they are
/// inside the transaction, the write to make, or None to write nothing. It
/// may run more than once (a group commit that fails runs each write
/// again on its own), so it must only compute.
pub type TaskChange = std::sync::Arc<
    dyn Fn(StoredTask, Option<StoredAgent>) -> Result<Option<TaskWrite>> + Send + Sync,
>;

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Recorded; the events appended.
    Created(Vec<StoredEvent>),
    /// The key was used before: the tasks it made (in order), and the
    /// fingerprint of that submission.
    Existing(Vec<String>, String),
}

/// Tasks.
pub trait TaskStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records new tasks, all or none (with `key`: (key, request
    /// fingerprint), unless the key is known since `since`, and forgets
    /// keys older than it).
    fn submit_tasks(
        &self,
        writes: &[TaskWrite],
        key: Option<(&str, &str)>,
        since: i64,
    ) -> Result<Submitted>;

    /// Rewrites a task (and the agent row, if given) and appends events.
    fn save_task(&self, write: &TaskWrite) -> Result<Vec<StoredEvent>>;

    /// Rewrites task `task_id` (and agent `agent_id`'s row, and appends
    /// events) from what the rows hold inside the write transaction:
    /// `change` reads them and says what to write. A read-modify-write
    /// that needs no lock around it, for changes that commute (tasks
    /// starting and ending on one agent). None when `change` wrote
    /// nothing; NotFound when the task does not exist.
    fn update_task(
        &self,
        task_id: &str,
        agent_id: &str,
        change: TaskChange,
    ) -> Result<Option<Vec<StoredEvent>>>;

    /// One task.
    fn get_task(&self, id: &str) -> Result<Option<StoredTask>>;

    /// Tasks newest first before the one with id `before` (empty: from the
    /// newest), in `state` and of `agent_id` when not empty; at most
    /// `limit`.
    fn list_tasks(
        &self,
        state: &str,
        agent_id: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<StoredTask>>;

    /// Every task pending or running, in submission order (for a restart).
    fn unfinished_tasks(&self) -> Result<Vec<StoredTask>>;

    /// How many tasks are in each state: (state name, count).
    fn count_tasks_by_state(&self) -> Result<Vec<(String, u64)>>;
}
