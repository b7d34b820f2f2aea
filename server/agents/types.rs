//! The plain types of the agents engine: specs, agents and activity
//! events. `api::convert::agents` converts them to and from protobuf; the
//! store keeps their bodies as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::query::{ToolCall, ToolSpec};

/// A template for agents.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    /// Unique name.
    pub name: String,
    /// What it is, for humans.
    pub body: SpecBody,
    /// Version, from 1 (set by the engine).
    pub version: u64,
    /// When this version was registered, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// Everything of a spec but its name and version: what the store keeps as
/// JSON for each version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecBody {
    /// Free text.
    pub description: String,
    /// Capability tags.
    pub capabilities: Vec<String>,
    /// Model alias; empty for worker-only specs.
    pub model: String,
    /// Fallback aliases.
    pub fallback_models: Vec<String>,
    /// System prompt of every task.
    pub system_prompt: String,
    /// Context tokens; 0 means the model's window.
    pub context_window: u32,
    /// Tasks one agent runs at once; 0 means 1.
    pub concurrency_limit: u32,
    /// The vector collection tasks read and write; empty means
    /// `agent-<name>`.
    pub memory_namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Memories given to each task as context.
    pub memory_top_k: u32,
    /// Write outputs back to memory.
    pub store_output: bool,
    /// Tools the model may call during a task (server and worker tools).
    pub tools: Vec<ToolSpec>,
    /// Most model turns of a task's query; 0 is the query default.
    pub max_turns: u32,
}

impl Spec {
    /// The collection the agent's memory lives in.
    pub fn memory_collection(&self) -> String {
        if self.body.memory_namespace.is_empty() {
            format!("agent-{}", self.name)
        } else {
            self.body.memory_namespace.clone()
        }
    }
}

/// Lifecycle state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Ready for tasks.
    Idle,
    /// Running a task.
    Busy,
    /// A worker missed heartbeats.
    Unresponsive,
    /// Takes no tasks.
    Stopped,
}

impl AgentState {
    /// The name the store and filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Idle => "idle",
            AgentState::Busy => "busy",
            AgentState::Unresponsive => "unresponsive",
            AgentState::Stopped => "stopped",
        }
    }

    /// The state of a stored name.
    pub fn parse(name: &str) -> Option<AgentState> {
        Some(match name {
            "idle" => AgentState::Idle,
            "busy" => AgentState::Busy,
            "unresponsive" => AgentState::Unresponsive,
            "stopped" => AgentState::Stopped,
            _ => return None,
        })
    }
}

/// Who runs an agent's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AgentKind {
    /// agentd, as query sessions.
    #[default]
    Internal,
    /// An external worker.
    Worker,
}

/// An agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Id (ULID).
    pub id: String,
    /// Spec name.
    pub spec_name: String,
    /// Spec version it was spawned with.
    pub spec_version: u64,
    /// Swarm, or empty.
    pub swarm_id: String,
    /// State.
    pub state: AgentState,
    /// When it was spawned, Unix milliseconds.
    pub created_at_ms: i64,
    /// The rest.
    pub body: AgentBody,
}

/// Everything of an agent the store keeps as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentBody {
    /// Internal or worker.
    pub kind: AgentKind,
    /// Tasks it runs now.
    pub running_task_ids: Vec<String>,
    /// Labels given at spawn.
    pub labels: BTreeMap<String, String>,
    /// Last heartbeat (workers), Unix milliseconds.
    pub last_heartbeat_at_ms: Option<i64>,
    /// Tasks finished successfully.
    pub tasks_succeeded: u64,
    /// Failed attempts.
    pub tasks_failed: u64,
    /// Input tokens of its tasks' queries.
    pub input_tokens: u64,
    /// Output tokens of its tasks' queries.
    pub output_tokens: u64,
    /// Cost of its tasks' queries, US dollars.
    pub cost_usd: f64,
    /// Workers: most tasks at once, from the worker's hello; 0 means the
    /// spec's concurrency limit.
    pub max_concurrent_tasks: u32,
    /// Stopped by StopAgent (a worker may not reattach), as opposed to
    /// stopped because its worker went away (it may).
    pub stopped_by_client: bool,
}

/// What kind of activity an event records (agent.proto's
/// `AgentEventKind`; the swarm kinds are recorded once swarms are built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    /// A spec was registered or replaced.
    SpecRegistered,
    /// A spec was deleted.
    SpecDeleted,
    /// An agent was spawned.
    AgentSpawned,
    /// An agent stopped.
    AgentStopped,
    /// A swarm was created.
    SwarmCreated,
    /// A swarm was dissolved.
    SwarmDissolved,
    /// A task was submitted.
    TaskSubmitted,
    /// A task was assigned.
    TaskAssigned,
    /// A task reported progress.
    TaskProgress,
    /// A task succeeded.
    TaskCompleted,
    /// A task failed or timed out.
    TaskFailed,
    /// A task was cancelled.
    TaskCancelled,
    /// A worker missed its heartbeats.
    HeartbeatMissed,
    /// A worker connected.
    WorkerConnected,
    /// A worker's stream ended.
    WorkerDisconnected,
    /// A task's attempt was lost; it goes to another agent.
    TaskReassigned,
    /// A task's model called a tool.
    TaskToolCall,
    /// A task's tool call got its result.
    TaskToolResult,
}

impl ActivityKind {
    /// Every kind.
    pub const ALL: [ActivityKind; 18] = [
        ActivityKind::SpecRegistered,
        ActivityKind::SpecDeleted,
        ActivityKind::AgentSpawned,
        ActivityKind::AgentStopped,
        ActivityKind::SwarmCreated,
        ActivityKind::SwarmDissolved,
        ActivityKind::TaskSubmitted,
        ActivityKind::TaskAssigned,
        ActivityKind::TaskProgress,
        ActivityKind::TaskCompleted,
        ActivityKind::TaskFailed,
        ActivityKind::TaskCancelled,
        ActivityKind::HeartbeatMissed,
        ActivityKind::WorkerConnected,
        ActivityKind::WorkerDisconnected,
        ActivityKind::TaskReassigned,
        ActivityKind::TaskToolCall,
        ActivityKind::TaskToolResult,
    ];

    /// The name the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::SpecRegistered => "spec_registered",
            ActivityKind::SpecDeleted => "spec_deleted",
            ActivityKind::AgentSpawned => "agent_spawned",
            ActivityKind::AgentStopped => "agent_stopped",
            ActivityKind::SwarmCreated => "swarm_created",
            ActivityKind::SwarmDissolved => "swarm_dissolved",
            ActivityKind::TaskSubmitted => "task_submitted",
            ActivityKind::TaskAssigned => "task_assigned",
            ActivityKind::TaskProgress => "task_progress",
            ActivityKind::TaskCompleted => "task_completed",
            ActivityKind::TaskFailed => "task_failed",
            ActivityKind::TaskCancelled => "task_cancelled",
            ActivityKind::HeartbeatMissed => "heartbeat_missed",
            ActivityKind::WorkerConnected => "worker_connected",
            ActivityKind::WorkerDisconnected => "worker_disconnected",
            ActivityKind::TaskReassigned => "task_reassigned",
            ActivityKind::TaskToolCall => "task_tool_call",
            ActivityKind::TaskToolResult => "task_tool_result",
        }
    }

    /// The kind of a stored name.
    pub fn parse(name: &str) -> Option<ActivityKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One entry of the activity log.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// Position, from 1, strictly increasing.
    pub id: u64,
    /// Kind.
    pub kind: ActivityKind,
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// Agent concerned, or empty.
    pub agent_id: String,
    /// Swarm concerned, or empty.
    pub swarm_id: String,
    /// Task concerned, or empty.
    pub task_id: String,
    /// Spec concerned, or empty.
    pub spec_name: String,
    /// Summary.
    pub message: String,
    /// Kind-specific details.
    pub details: Map<String, Value>,
}

/// Which events a list or watch wants (empty fields match everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActivityFilter {
    /// Only these kinds.
    pub kinds: Vec<ActivityKind>,
    /// Only this agent's.
    pub agent_id: String,
    /// Only this swarm's.
    pub swarm_id: String,
    /// Only this task's.
    pub task_id: String,
}

/// Agents to spawn from one spec.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpawnParams {
    /// Spec name.
    pub spec_name: String,
    /// How many.
    pub count: u32,
    /// Swarm to join, or empty.
    pub swarm_id: String,
    /// Labels of the new agents.
    pub labels: BTreeMap<String, String>,
    /// Retry key, or empty.
    pub idempotency_key: String,
}

/// Which agents a list wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentFilter {
    /// Only of this spec.
    pub spec_name: String,
    /// Only members of this swarm.
    pub swarm_id: String,
    /// Only in this state.
    pub state: Option<AgentState>,
}

/// Where a task should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskTarget {
    /// This agent.
    Agent(String),
    /// A swarm's members.
    Swarm(String),
    /// Any agent whose spec has this capability.
    Capability(String),
}

impl Default for TaskTarget {
    fn default() -> Self {
        TaskTarget::Agent(String::new())
    }
}

/// Lifecycle state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for a free agent.
    Pending,
    /// An agent runs it.
    Running,
    /// Done, with an output.
    Succeeded,
    /// Failed after its attempts.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Its timeout elapsed.
    TimedOut,
}

impl TaskState {
    /// The name the store and filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::TimedOut => "timed_out",
        }
    }

    /// The state of a stored name.
    pub fn parse(name: &str) -> Option<TaskState> {
        Some(match name {
            "pending" => TaskState::Pending,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            "timed_out" => TaskState::TimedOut,
            _ => return None,
        })
    }

    /// True once the task can no longer change.
    pub fn is_finished(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskErrorKind {
    /// The model's provider failed (after the query's own retries and
    /// fallbacks).
    Provider,
    /// The task's timeout elapsed.
    Timeout,
    /// The task's request could not run (e.g. a model it names is gone).
    Invalid,
    /// The server was too busy to start it.
    Overloaded,
    /// Its `max_cost_usd` was reached.
    Budget,
    /// The external worker reported a failure.
    Worker,
    /// The worker holding its lease went away, on its last attempt.
    LeaseLost,
    /// A task it depends on did not succeed; it never ran.
    Dependency,
    /// Anything else.
    Internal,
}

/// A task's failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// Kind.
    pub kind: TaskErrorKind,
    /// What went wrong.
    pub message: String,
}

/// Everything of a task the store keeps as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskBody {
    /// Where it was sent.
    pub target: TaskTarget,
    /// The instruction.
    pub prompt: String,
    /// Structured input.
    pub input: Option<Map<String, Value>>,
    /// Higher runs first.
    pub priority: i32,
    /// Longest run time, milliseconds (pauses of its query excluded).
    pub timeout_ms: u64,
    /// Attempts started.
    pub attempt: u32,
    /// Most attempts.
    pub max_attempts: u32,
    /// Progress, 0 to 1.
    pub progress: f32,
    /// Latest progress message.
    pub progress_message: String,
    /// The answer.
    pub output_text: String,
    /// Structured output (workers).
    pub output: Option<Map<String, Value>>,
    /// Why it failed.
    pub error: Option<TaskError>,
    /// The query of the latest attempt.
    pub query_id: String,
    /// When it started running, Unix milliseconds.
    pub started_at_ms: Option<i64>,
    /// When it ended, Unix milliseconds.
    pub finished_at_ms: Option<i64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Tokens in, every attempt.
    pub input_tokens: u64,
    /// Tokens out, every attempt.
    pub output_tokens: u64,
    /// Cost, every attempt.
    pub cost_usd: f64,
    /// The most its queries may cost together.
    pub max_cost_usd: Option<f64>,
    /// The latest checkpoint a worker saved.
    pub checkpoint: Option<Map<String, Value>>,
    /// Tasks that must succeed first.
    pub depends_on: Vec<String>,
    /// Sent to a swarm: only members with this capability.
    pub required_capability: String,
    /// How a swarm runs it.
    pub execution: Execution,
    /// Where the scheduler sends it (None: its target).
    pub route: Option<Route>,
    /// The task this one is a step of.
    pub parent_task_id: String,
    /// Its steps.
    pub child_task_ids: Vec<String>,
    /// Its part in a swarm's handling.
    pub step: Step,
    /// The worker tool call it runs, if it runs one.
    pub tool_call: Option<ToolCall>,
}

impl TaskBody {
    /// Where the scheduler sends it.
    pub fn route(&self) -> Route {
        if let Some(route) = &self.route {
            return route.clone();
        }
        let capability =
            (!self.required_capability.is_empty()).then(|| self.required_capability.clone());
        match &self.target {
            TaskTarget::Agent(id) => Route::Agent(id.clone()),
            TaskTarget::Capability(c) => Route::Capability(c.clone()),
            TaskTarget::Swarm(id) => Route::Swarm {
                id: id.clone(),
                capability,
                exclude: None,
            },
        }
    }
}

/// A task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Id (ULID).
    pub id: String,
    /// State.
    pub state: TaskState,
    /// Agent running it (the last one), or empty.
    pub agent_id: String,
    /// When it was submitted, Unix milliseconds.
    pub created_at_ms: i64,
    /// The rest.
    pub body: TaskBody,
}

/// A task to submit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubmitParams {
    /// Where to run it; None is invalid.
    pub target: Option<TaskTarget>,
    /// The instruction.
    pub prompt: String,
    /// Structured input.
    pub input: Option<Map<String, Value>>,
    /// Tasks that must succeed first.
    pub depends_on: Vec<String>,
    /// -100 to 100.
    pub priority: i32,
    /// Longest run time.
    pub timeout: Option<std::time::Duration>,
    /// Retry key, or empty.
    pub idempotency_key: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Most attempts; 0 means 3.
    pub max_attempts: u32,
    /// How a swarm runs it.
    pub execution: Execution,
    /// Sent to a swarm: only members with this capability.
    pub required_capability: String,
    /// The most its queries may cost together.
    pub max_cost_usd: Option<f64>,
}

/// How a swarm's members are connected (agent.proto's `SwarmTopology`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Topology {
    /// A coordinator plans, members do, the coordinator merges.
    Hierarchical,
    /// Any member takes a task; members hand off.
    #[default]
    Mesh,
    /// Each member gets the previous one's output, round after round.
    Ring,
    /// The hub fans out to every member and merges.
    Star,
}

/// How a swarm picks a member for a task (agent.proto's `SwarmStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Routing {
    /// Members in turn.
    RoundRobin,
    /// The member with the fewest running tasks.
    #[default]
    LeastBusy,
    /// Only members with the task's capability.
    CapabilityMatch,
}

/// Lifecycle state of a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwarmState {
    /// Takes tasks.
    Active,
    /// Dissolved; kept for history.
    Dissolved,
}

impl SwarmState {
    /// The name the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            SwarmState::Active => "active",
            SwarmState::Dissolved => "dissolved",
        }
    }

    /// The state of a stored name.
    pub fn parse(name: &str) -> Option<SwarmState> {
        match name {
            "active" => Some(SwarmState::Active),
            "dissolved" => Some(SwarmState::Dissolved),
            _ => None,
        }
    }
}

/// A swarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Swarm {
    /// Id (ULID).
    pub id: String,
    /// State.
    pub state: SwarmState,
    /// When it was created, Unix milliseconds.
    pub created_at_ms: i64,
    /// The rest.
    pub body: SwarmBody,
}

/// Everything of a swarm the store keeps as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SwarmBody {
    /// Name for humans.
    pub name: String,
    /// Topology.
    pub topology: Topology,
    /// Most members.
    pub max_agents: u32,
    /// Member selection.
    pub routing: Routing,
    /// Members in join order (the first is the coordinator or hub).
    pub members: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// RING rounds.
    pub max_rounds: u32,
}

/// A swarm to create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SwarmParams {
    /// Name for humans.
    pub name: String,
    /// Topology; None is invalid.
    pub topology: Option<Topology>,
    /// Most members.
    pub max_agents: u32,
    /// Member selection.
    pub routing: Routing,
    /// Existing agents to add.
    pub member_ids: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Retry key, or empty.
    pub idempotency_key: String,
    /// RING rounds; 0 means 1.
    pub max_rounds: u32,
}

/// How a task sent to a swarm is run (agent.proto's `ExecutionStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Execution {
    /// As the swarm's topology says.
    #[default]
    Single,
    /// Every eligible member at once.
    Parallel,
    /// Members one after another.
    Sequential,
    /// As SINGLE, after `depends_on` (the proto's DAG).
    Dag,
}

/// Where the scheduler sends a task: its target made concrete (a swarm
/// task's steps go to members), or a join that runs nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// This agent.
    Agent(String),
    /// Any agent whose spec has this capability.
    Capability(String),
    /// Any external worker whose spec has this capability (a worker tool's
    /// call: agentd does not run it on a model).
    Worker(String),
    /// A member of this swarm, picked by its routing.
    Swarm {
        /// The swarm.
        id: String,
        /// Only members with this capability.
        capability: Option<String>,
        /// Not this member (a coordinator keeps out of its plan's steps; a
        /// member that hands off does not get the task back).
        exclude: Option<String>,
    },
    /// No agent: the task ends when its steps (dependencies) have, with
    /// their outputs listed.
    Join,
}

/// What part a task plays in a swarm's handling of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Step {
    /// An ordinary task (or a plain step).
    #[default]
    Task,
    /// A HIERARCHICAL coordinator's plan: its output is parsed into steps.
    Plan,
    /// The task itself, merging its steps' outputs (STAR, HIERARCHICAL).
    Merge,
}
