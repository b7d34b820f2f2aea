//! `agentd.v1` AgentService messages ⇄ the agents engine's types.
//!
//! Requests convert structurally here (enums, required messages); their
//! limits are the engine's (`agents::validate`).

use super::{duration, duration_from, json_object, proto_struct, timestamp};
use crate::agents::{
    Activity, ActivityFilter, ActivityKind, Agent, AgentBody, AgentFilter, AgentKind, AgentState,
    AgentStats, Execution, GraphNode, SpawnParams, Spec, SpecBody, SubmitParams, Task, TaskError,
    TaskErrorKind, TaskState, TaskTarget,
};
use crate::api::error::stream_error;
use crate::error::{Error, Result, Violations};
use crate::pb::v1 as pb;
use crate::query::ToolSpec;

/// A RegisterSpec's spec: its name and body (`version`, `updated_at`
/// ignored, as the proto says); its tools convert as a Start's do.
pub fn spec_from(s: pb::AgentSpec) -> Result<(String, SpecBody)> {
    let pb::AgentSpec {
        name,
        description,
        capabilities,
        model,
        fallback_models,
        system_prompt,
        context_window,
        concurrency_limit,
        memory_namespace,
        labels,
        version: _,
        updated_at: _,
        memory_top_k,
        store_output,
        tools,
        max_turns,
    } = s;
    let mut v = Violations::new();
    let mut specs = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        match ToolSpec::try_from(t) {
            Ok(t) => specs.push(t),
            Err(e) => v.absorb(e.within(&format!("spec.tools[{i}]")))?,
        }
    }
    v.finish()?;
    Ok((
        name,
        SpecBody {
            description,
            capabilities,
            model,
            fallback_models,
            system_prompt,
            context_window,
            concurrency_limit,
            memory_namespace,
            labels: labels.into_iter().collect(),
            memory_top_k,
            store_output,
            tools: specs,
            max_turns,
        },
    ))
}

impl From<Spec> for pb::AgentSpec {
    fn from(s: Spec) -> Self {
        let Spec {
            name,
            body,
            version,
            updated_at_ms,
        } = s;
        let SpecBody {
            description,
            capabilities,
            model,
            fallback_models,
            system_prompt,
            context_window,
            concurrency_limit,
            memory_namespace,
            labels,
            memory_top_k,
            store_output,
            tools,
            max_turns,
        } = body;
        pb::AgentSpec {
            name,
            description,
            capabilities,
            model,
            fallback_models,
            system_prompt,
            context_window,
            concurrency_limit,
            memory_namespace,
            labels: labels.into_iter().collect(),
            version,
            updated_at: Some(timestamp(updated_at_ms)),
            memory_top_k,
            store_output,
            tools: tools.into_iter().map(Into::into).collect(),
            max_turns,
        }
    }
}

impl From<AgentState> for pb::AgentState {
    fn from(s: AgentState) -> Self {
        match s {
            AgentState::Idle => pb::AgentState::Idle,
            AgentState::Busy => pb::AgentState::Busy,
            AgentState::Unresponsive => pb::AgentState::Unresponsive,
            AgentState::Stopped => pb::AgentState::Stopped,
        }
    }
}

impl From<Agent> for pb::Agent {
    fn from(a: Agent) -> Self {
        let Agent {
            id,
            spec_name,
            spec_version,
            swarm_id,
            state,
            created_at_ms,
            body,
        } = a;
        let AgentBody {
            kind,
            running_task_ids,
            labels,
            last_heartbeat_at_ms,
            tasks_succeeded,
            tasks_failed,
            input_tokens,
            output_tokens,
            cost_usd,
            // Internal bookkeeping, not part of the contract.
            max_concurrent_tasks: _,
            stopped_by_client: _,
        } = body;
        let kind = match kind {
            AgentKind::Internal => pb::AgentKind::Internal,
            AgentKind::Worker => pb::AgentKind::Worker,
        };
        pb::Agent {
            id,
            spec_name,
            spec_version,
            swarm_id,
            kind: kind.into(),
            state: pb::AgentState::from(state).into(),
            running_task_ids,
            labels: labels.into_iter().collect(),
            created_at: Some(timestamp(created_at_ms)),
            last_heartbeat_at: last_heartbeat_at_ms.map(timestamp),
            tasks_succeeded,
            tasks_failed,
            usage: Some(pb::TokenUsage {
                input_tokens,
                output_tokens,
            }),
            cost_usd,
        }
    }
}

impl From<pb::SpawnRequest> for SpawnParams {
    fn from(r: pb::SpawnRequest) -> Self {
        let pb::SpawnRequest {
            spec_name,
            count,
            swarm_id,
            labels,
            idempotency_key,
        } = r;
        SpawnParams {
            spec_name,
            count,
            swarm_id,
            labels: labels.into_iter().collect(),
            idempotency_key,
        }
    }
}

/// A ListAgents filter.
pub fn agent_filter(spec_name: String, swarm_id: String, state: i32) -> Result<AgentFilter> {
    let state = match pb::AgentState::try_from(state) {
        Ok(pb::AgentState::Unspecified) => None,
        Ok(pb::AgentState::Idle) => Some(AgentState::Idle),
        Ok(pb::AgentState::Busy) => Some(AgentState::Busy),
        Ok(pb::AgentState::Unresponsive) => Some(AgentState::Unresponsive),
        Ok(pb::AgentState::Stopped) => Some(AgentState::Stopped),
        Err(_) => {
            return Err(Error::invalid(
                "state",
                format!("unknown agent state {state}"),
            ));
        }
    };
    Ok(AgentFilter {
        spec_name,
        swarm_id,
        state,
    })
}

impl From<ActivityKind> for pb::AgentEventKind {
    fn from(k: ActivityKind) -> Self {
        match k {
            ActivityKind::SpecRegistered => pb::AgentEventKind::SpecRegistered,
            ActivityKind::SpecDeleted => pb::AgentEventKind::SpecDeleted,
            ActivityKind::AgentSpawned => pb::AgentEventKind::AgentSpawned,
            ActivityKind::AgentStopped => pb::AgentEventKind::AgentStopped,
            ActivityKind::SwarmCreated => pb::AgentEventKind::SwarmCreated,
            ActivityKind::SwarmDissolved => pb::AgentEventKind::SwarmDissolved,
            ActivityKind::TaskSubmitted => pb::AgentEventKind::TaskSubmitted,
            ActivityKind::TaskAssigned => pb::AgentEventKind::TaskAssigned,
            ActivityKind::TaskProgress => pb::AgentEventKind::TaskProgress,
            ActivityKind::TaskCompleted => pb::AgentEventKind::TaskCompleted,
            ActivityKind::TaskFailed => pb::AgentEventKind::TaskFailed,
            ActivityKind::TaskCancelled => pb::AgentEventKind::TaskCancelled,
            ActivityKind::HeartbeatMissed => pb::AgentEventKind::HeartbeatMissed,
            ActivityKind::WorkerConnected => pb::AgentEventKind::WorkerConnected,
            ActivityKind::WorkerDisconnected => pb::AgentEventKind::WorkerDisconnected,
            ActivityKind::TaskReassigned => pb::AgentEventKind::TaskReassigned,
            ActivityKind::TaskToolCall => pb::AgentEventKind::TaskToolCall,
            ActivityKind::TaskToolResult => pb::AgentEventKind::TaskToolResult,
        }
    }
}

impl TryFrom<pb::EventFilter> for ActivityFilter {
    type Error = Error;

    fn try_from(f: pb::EventFilter) -> Result<Self> {
        let pb::EventFilter {
            kinds,
            agent_id,
            swarm_id,
            task_id,
        } = f;
        let mut parsed = Vec::with_capacity(kinds.len());
        for (i, k) in kinds.into_iter().enumerate() {
            let kind = ActivityKind::ALL
                .into_iter()
                .find(|a| pb::AgentEventKind::from(*a) as i32 == k)
                .ok_or_else(|| {
                    Error::invalid(format!("kinds[{i}]"), format!("unknown event kind {k}"))
                })?;
            parsed.push(kind);
        }
        Ok(ActivityFilter {
            kinds: parsed,
            agent_id,
            swarm_id,
            task_id,
        })
    }
}

impl From<Activity> for pb::AgentEvent {
    fn from(a: Activity) -> Self {
        let Activity {
            id,
            kind,
            time_ms,
            agent_id,
            swarm_id,
            task_id,
            spec_name,
            message,
            details,
        } = a;
        pb::AgentEvent {
            id,
            kind: pb::AgentEventKind::from(kind).into(),
            time: Some(timestamp(time_ms)),
            agent_id,
            swarm_id,
            task_id,
            spec_name,
            message,
            details: Some(proto_struct(details)),
        }
    }
}

impl From<TaskState> for pb::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => pb::TaskState::Pending,
            TaskState::Running => pb::TaskState::Running,
            TaskState::Succeeded => pb::TaskState::Succeeded,
            TaskState::Failed => pb::TaskState::Failed,
            TaskState::Cancelled => pb::TaskState::Cancelled,
            TaskState::TimedOut => pb::TaskState::TimedOut,
        }
    }
}

/// A ListTasks state filter; UNSPECIFIED is none.
pub fn task_state_filter(s: i32) -> Result<Option<TaskState>> {
    Ok(match pb::TaskState::try_from(s) {
        Ok(pb::TaskState::Unspecified) => None,
        Ok(pb::TaskState::Pending) => Some(TaskState::Pending),
        Ok(pb::TaskState::Running) => Some(TaskState::Running),
        Ok(pb::TaskState::Succeeded) => Some(TaskState::Succeeded),
        Ok(pb::TaskState::Failed) => Some(TaskState::Failed),
        Ok(pb::TaskState::Cancelled) => Some(TaskState::Cancelled),
        Ok(pb::TaskState::TimedOut) => Some(TaskState::TimedOut),
        Err(_) => return Err(Error::invalid("state", format!("unknown task state {s}"))),
    })
}

fn target_of(t: TaskTarget) -> pb::TaskTarget {
    use pb::task_target::Target;
    pb::TaskTarget {
        target: Some(match t {
            TaskTarget::Agent(id) => Target::AgentId(id),
            TaskTarget::Swarm(id) => Target::SwarmId(id),
            TaskTarget::Capability(c) => Target::Capability(c),
        }),
    }
}

impl From<TaskError> for pb::StreamError {
    fn from(e: TaskError) -> Self {
        let TaskError { kind, message } = e;
        stream_error(match kind {
            TaskErrorKind::Provider => Error::Provider(message),
            TaskErrorKind::Timeout => Error::Timeout(message),
            TaskErrorKind::Invalid => Error::WrongState(message),
            TaskErrorKind::Overloaded => Error::Overloaded(message),
            TaskErrorKind::Budget => Error::BudgetExceeded(message),
            TaskErrorKind::Worker => Error::WorkerFailed(message),
            TaskErrorKind::LeaseLost => Error::LeaseLost(message),
            TaskErrorKind::Dependency => Error::DependencyFailed(message),
            TaskErrorKind::Internal => Error::Internal(message),
        })
    }
}

impl From<Task> for pb::Task {
    fn from(t: Task) -> Self {
        let Task {
            id,
            state,
            agent_id,
            created_at_ms,
            body,
        } = t;
        let crate::agents::TaskBody {
            target,
            prompt,
            input,
            priority,
            timeout_ms,
            attempt,
            max_attempts,
            progress,
            progress_message,
            output_text,
            output,
            error,
            query_id,
            started_at_ms,
            finished_at_ms,
            labels,
            input_tokens,
            output_tokens,
            cost_usd,
            max_cost_usd,
            checkpoint,
            depends_on,
            required_capability,
            execution,
            parent_task_id,
            child_task_ids,
            // How the engine runs it, not part of the contract.
            route: _,
            step: _,
            tool_call,
        } = body;
        pb::Task {
            id,
            target: Some(target_of(target)),
            prompt,
            input: input.map(proto_struct),
            strategy: match execution {
                Execution::Single => pb::ExecutionStrategy::Single,
                Execution::Parallel => pb::ExecutionStrategy::Parallel,
                Execution::Sequential => pb::ExecutionStrategy::Sequential,
                Execution::Dag => pb::ExecutionStrategy::Dag,
            }
            .into(),
            depends_on,
            priority,
            timeout: Some(prost_types::Duration {
                seconds: (timeout_ms / 1000) as i64,
                nanos: ((timeout_ms % 1000) * 1_000_000) as i32,
            }),
            state: pb::TaskState::from(state).into(),
            agent_id,
            attempt,
            progress,
            progress_message,
            output_text,
            output: output.map(proto_struct),
            error: error.map(Into::into),
            query_id,
            created_at: Some(timestamp(created_at_ms)),
            started_at: started_at_ms.map(timestamp),
            finished_at: finished_at_ms.map(timestamp),
            labels: labels.into_iter().collect(),
            max_attempts,
            usage: Some(pb::TokenUsage {
                input_tokens,
                output_tokens,
            }),
            cost_usd,
            max_cost_usd: max_cost_usd.unwrap_or(0.0),
            checkpoint: checkpoint.map(proto_struct),
            required_capability,
            parent_task_id,
            child_task_ids,
            tool_call: tool_call.map(Into::into),
        }
    }
}

impl TryFrom<pb::SubmitTaskRequest> for SubmitParams {
    type Error = Error;

    fn try_from(r: pb::SubmitTaskRequest) -> Result<Self> {
        use pb::task_target::Target;
        let pb::SubmitTaskRequest {
            target,
            prompt,
            input,
            strategy,
            depends_on,
            priority,
            timeout,
            idempotency_key,
            labels,
            max_attempts,
            max_cost_usd,
            required_capability,
        } = r;
        let target = target.and_then(|t| t.target).map(|t| match t {
            Target::AgentId(id) => TaskTarget::Agent(id),
            Target::SwarmId(id) => TaskTarget::Swarm(id),
            Target::Capability(c) => TaskTarget::Capability(c),
        });
        let execution = match pb::ExecutionStrategy::try_from(strategy) {
            Ok(pb::ExecutionStrategy::Unspecified | pb::ExecutionStrategy::Single) => {
                Execution::Single
            }
            Ok(pb::ExecutionStrategy::Dag) => Execution::Dag,
            Ok(pb::ExecutionStrategy::Parallel) => Execution::Parallel,
            Ok(pb::ExecutionStrategy::Sequential) => Execution::Sequential,
            Err(_) => {
                return Err(Error::invalid(
                    "strategy",
                    format!("unknown execution strategy {strategy}"),
                ));
            }
        };
        Ok(SubmitParams {
            target,
            prompt,
            input: input.map(|i| json_object(i, "input")).transpose()?,
            depends_on,
            priority,
            timeout: timeout.map(|d| duration_from(d, "timeout")).transpose()?,
            idempotency_key,
            labels: labels.into_iter().collect(),
            max_attempts,
            execution,
            required_capability,
            max_cost_usd,
        })
    }
}

impl TryFrom<pb::TaskGraphNode> for GraphNode {
    type Error = Error;

    fn try_from(n: pb::TaskGraphNode) -> Result<Self> {
        let pb::TaskGraphNode { name, task, after } = n;
        let task = task.ok_or_else(|| Error::invalid("task", "must be set"))?;
        Ok(GraphNode {
            name,
            task: SubmitParams::try_from(task).map_err(|e| e.within("task"))?,
            after,
        })
    }
}

impl From<AgentStats> for pb::GetAgentStatsResponse {
    fn from(s: AgentStats) -> Self {
        let AgentStats {
            agents_by_state,
            tasks_by_state,
            queue_depth,
            waiting_on_dependencies,
            tasks_per_second,
            task_latency_p50,
            task_latency_p99,
            workers_connected,
            swarms_active,
            window,
        } = s;
        pb::GetAgentStatsResponse {
            agents_by_state: agents_by_state.into_iter().collect(),
            tasks_by_state: tasks_by_state.into_iter().collect(),
            queue_depth,
            waiting_on_dependencies,
            tasks_per_second,
            task_latency_p50: task_latency_p50.map(duration),
            task_latency_p99: task_latency_p99.map(duration),
            workers_connected,
            swarms_active,
            window: Some(duration(window)),
        }
    }
}
