//! The agents engine: its handle, what it shares, and how records and
//! events go between the engine's types and the store's rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::memory::AgentMemory;
use super::settings::AgentsConfig;
use super::tasks::scheduler::{Scheduler, Slot};
use super::types::{
    Activity, ActivityKind, Agent, AgentBody, AgentKind, AgentState, Spec, SpecBody, Task,
    TaskBody, TaskState,
};
use super::workers::{Lease, Link, Workers};
use crate::common::sync::lock;
use crate::error::{Error, Result};
use crate::query::QueryEngine;
use crate::store::{
    AgentQuery, AgentsStore, NewEvent, StoredAgent, StoredEvent, StoredSpec, StoredTask, TaskWrite,
};

/// The agents engine (cheap to clone).
#[derive(Debug, Clone)]
pub struct AgentEngine {
    pub(super) store: Arc<dyn AgentsStore>,
    /// The query engine, whose model aliases specs name and which runs
    /// internal agents' tasks; None when the query service is off.
    pub(super) query: Option<QueryEngine>,
    /// The id of the last event appended, for watchers to wake on.
    pub(super) last_event: Arc<watch::Sender<u64>>,
    /// Which task runs where (derived from the store).
    pub(super) scheduler: Arc<Mutex<Scheduler>>,
    /// Who may change each agent's row, and when (`agents::locks`).
    pub(super) agent_writes: Arc<super::locks::AgentWrites>,
    /// The memory engine, for agents' context and outputs; None when the
    /// memory service is off.
    pub(super) memory: Option<AgentMemory>,
    /// Worker heartbeats and leases.
    pub(super) settings: Arc<AgentsConfig>,
    /// External workers' streams and leases.
    pub(super) workers: Arc<Mutex<Workers>>,
    /// Held while new tasks are registered with the scheduler and while an
    /// ended task releases its dependents (`tasks::graph`). Never held
    /// across an await: a thousand submissions at once would otherwise
    /// queue for it behind every busy task of the runtime.
    pub(super) dependencies: Arc<Mutex<()>>,
    /// Tasks that ended recently, for GetAgentStats.
    pub(super) ended: Arc<Mutex<super::stats::Ended>>,
    /// The most recent events, for live watchers.
    pub(super) tail: Arc<Mutex<super::tail::Tail>>,
    /// One bell per watched task, rung by its events (WatchTask), so that
    /// a thousand watched tasks do not each wake on every event.
    pub(super) bells: Arc<Mutex<HashMap<String, watch::Sender<Rung>>>>,
    /// Spec versions agents ran tasks on, by (name, version): a version
    /// never changes once registered (DeleteSpec keeps the rows, and a
    /// name registered again gets the next version), so an attempt's start
    /// need not read it again. A deleted name's versions are dropped, as
    /// no agent runs them any more.
    pub(super) spec_versions: Arc<Mutex<HashMap<(String, u64), Spec>>>,
}

impl AgentEngine {
    /// An engine on `store`, running internal agents' tasks on `query`,
    /// with their memories in `memory`.
    /// Rebuilds the scheduler from the store: every agent, and the tasks
    /// pending or running when the server stopped. Running ones start
    /// again as their next attempt on internal agents; on workers they
    /// stay leased for the lease timeout, for the worker to reconnect.
    pub fn new(
        store: Arc<dyn AgentsStore>,
        query: Option<QueryEngine>,
        memory: Option<AgentMemory>,
        settings: AgentsConfig,
    ) -> Result<Self> {
        let last = store.last_event_id()?;
        let mut scheduler = Scheduler::default();
        let mut specs: HashMap<(String, u64), Spec> = HashMap::new();
        let mut after = String::new();
        loop {
            let page = store.list_agents(&AgentQuery::default(), &after, 1000)?;
            let Some(last_agent) = page.last() else { break };
            after = last_agent.id.clone();
            for row in page {
                let agent = agent_of(row)?;
                let key = (agent.spec_name.clone(), agent.spec_version);
                if !specs.contains_key(&key) {
                    let stored = store.get_spec(&key.0, Some(key.1))?.ok_or_else(|| {
                        Error::Internal(format!("agent {}'s spec version is gone", agent.id))
                    })?;
                    specs.insert(key.clone(), spec_of(stored)?);
                }
                scheduler
                    .agents
                    .insert(agent.id.clone(), slot_of(&agent, &specs[&key]));
            }
        }
        let mut after = String::new();
        loop {
            let page = store.list_swarms(false, &after, 1000)?;
            let Some(last_swarm) = page.last() else { break };
            after = last_swarm.id.clone();
            for row in page {
                let swarm = super::swarms::roster::swarm_of(row)?;
                scheduler
                    .swarms
                    .insert(swarm.id.clone(), super::swarms::roster::swarm_slot(&swarm));
            }
        }
        let unfinished = store.unfinished_tasks()?;
        let engine = Self {
            store,
            query,
            last_event: Arc::new(watch::channel(last).0),
            scheduler: Arc::new(Mutex::new(scheduler)),
            agent_writes: Arc::default(),
            memory,
            settings: Arc::new(settings),
            workers: Arc::new(Mutex::new(Workers::default())),
            dependencies: Arc::new(Mutex::new(())),
            ended: Arc::default(),
            tail: Arc::default(),
            bells: Arc::default(),
            spec_versions: Arc::default(),
        };
        let lapse_at = Instant::now() + engine.settings.worker_lease_timeout;
        for row in unfinished {
            let mut task = task_of(row)?;
            if task.body.tool_call.is_some() {
                // The query that waited for this call ended with the
                // server: its result has nowhere to go.
                let mut write = super::tasks::tools::orphaned(&mut task);
                if let Some(row) = engine.store.get_agent(&task.agent_id)? {
                    let mut agent = agent_of(row)?;
                    agent.body.running_task_ids.retain(|t| *t != task.id);
                    if agent.body.running_task_ids.is_empty() && agent.state == AgentState::Busy {
                        agent.state = AgentState::Idle;
                    }
                    write.agent = Some(row_of(&agent));
                }
                engine.store.save_task(&write)?;
                continue;
            }
            let on_worker = task.state == TaskState::Running
                && lock(&engine.scheduler)
                    .agents
                    .get(&task.agent_id)
                    .is_some_and(|s| !s.internal);
            if on_worker {
                // Its worker may still run it: the lease waits for the
                // worker to reconnect, and lapses like a broken stream's.
                let mut workers = lock(&engine.workers);
                workers.leases.insert(
                    task.id.clone(),
                    Lease {
                        agent_id: task.agent_id.clone(),
                        attempt: task.body.attempt,
                        timeout_at: Instant::now() + Duration::from_millis(task.body.timeout_ms),
                    },
                );
                workers
                    .links
                    .entry(task.agent_id.clone())
                    .or_insert_with(|| Link {
                        conn: 0,
                        outbox: None,
                        last_heartbeat: Instant::now(),
                        persisted_heartbeat: Instant::now(),
                        lapse_at: Some(lapse_at),
                        unresponsive: false,
                    });
                drop(workers);
                if let Some(slot) = lock(&engine.scheduler).agents.get_mut(&task.agent_id) {
                    slot.running.push(task.id.clone());
                }
                continue;
            }
            if task.state == TaskState::Running {
                // Its query ended with the server: run it again.
                task.state = TaskState::Pending;
                engine.store.save_task(&TaskWrite {
                    task: task_row(&task),
                    agent: None,
                    events: Vec::new(),
                })?;
            }
            // Dependencies, read now: tasks come in submission order, so a
            // dependency failed just above reads as failed here.
            let mut waits = std::collections::HashSet::new();
            let mut doomed = None;
            for dep in &task.body.depends_on {
                let state = engine
                    .store
                    .get_task(dep)?
                    .and_then(|row| TaskState::parse(&row.state))
                    .unwrap_or(TaskState::Failed);
                match state {
                    TaskState::Succeeded => {}
                    s if s.is_finished() => doomed = Some((dep.clone(), s)),
                    _ => {
                        waits.insert(dep.clone());
                    }
                }
            }
            if let Some((dep, state)) = doomed {
                engine
                    .store
                    .save_task(&super::tasks::graph::unrun(&mut task, &dep, state))?;
                continue;
            }
            lock(&engine.scheduler).block(
                task.id.clone(),
                task.body.priority,
                task.body.route(),
                waits,
            );
        }
        Ok(engine)
    }

    /// Starts the tasks the store had pending or running (at start-up),
    /// the workers' clock, and the leasing of worker tool calls; abort the
    /// handles to stop them.
    pub fn resume(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.dispatch();
        let mut background = vec![self.watch_workers()];
        background.extend(self.serve_worker_tools());
        background
    }

    /// Starts every task that has a free agent now: a runner for an
    /// internal agent, a lease for a worker.
    pub(super) fn dispatch(&self) {
        let assigned: Vec<(String, String, bool)> = {
            let mut scheduler = lock(&self.scheduler);
            let pairs = scheduler.dispatch();
            pairs
                .into_iter()
                .map(|(task, agent)| {
                    let internal = scheduler.agents.get(&agent).is_some_and(|s| s.internal);
                    (task, agent, internal)
                })
                .collect()
        };
        for (task, agent, internal) in assigned {
            if agent.is_empty() {
                tokio::spawn(self.clone().complete_join(task));
            } else if internal {
                tokio::spawn(self.clone().run_attempt(task, agent));
            } else {
                tokio::spawn(self.clone().lease(task, agent));
            }
        }
    }

    /// Whether `alias` is a model of the query engine (None: no engine).
    pub(super) fn is_model(&self, alias: &str) -> Option<bool> {
        let query = self.query.as_ref()?;
        Some(query.models().iter().any(|m| m.spec.alias == alias))
    }

    /// A receiver that changes when an event about task `id` is appended.
    pub(super) fn task_bell(&self, id: &str) -> watch::Receiver<Rung> {
        let mut bells = lock(&self.bells);
        if bells.len() > 4096 {
            // Watchers gone without a last event of their task.
            bells.retain(|_, bell| bell.receiver_count() > 0);
        }
        bells
            .entry(id.to_owned())
            .or_insert_with(|| watch::channel(Rung::default()).0)
            .subscribe()
    }

    /// Tells watchers about events just appended (into the tail first, so
    /// that a watcher woken finds them there).
    pub(super) fn appended(&self, events: &[StoredEvent]) {
        self.appended_with(events, None);
    }

    /// [`AgentEngine::appended`], for events written with `task` as it is
    /// now (in the same transaction): its watchers get it with the ring
    /// instead of reading it back.
    pub(super) fn appended_task(&self, events: &[StoredEvent], task: &Task) {
        self.appended_with(events, Some(task));
    }

    fn appended_with(&self, events: &[StoredEvent], task: Option<&Task>) {
        {
            let mut tail = lock(&self.tail);
            for e in events {
                match activity_of(e.clone()) {
                    Ok(a) => tail.push(a),
                    Err(err) => {
                        tracing::error!(error = %err, "an event just appended is unreadable")
                    }
                }
            }
        }
        {
            let mut bells = lock(&self.bells);
            // Copied once, and only when someone watches it.
            let mut snapshot: Option<Arc<Task>> = None;
            if !bells.is_empty() {
                for e in events {
                    if let Some(bell) = bells.get(&e.event.task_id) {
                        if bell.receiver_count() == 0 {
                            bells.remove(&e.event.task_id);
                        } else {
                            let task = task.filter(|t| t.id == e.event.task_id).map(|t| {
                                snapshot.get_or_insert_with(|| Arc::new(t.clone())).clone()
                            });
                            // The newest event wins: appends of one task from
                            // two places may be announced out of order.
                            bell.send_if_modified(|rung| {
                                let newer = e.id > rung.event;
                                if newer {
                                    *rung = Rung { event: e.id, task };
                                }
                                newer
                            });
                        }
                    }
                }
            }
        }
        if let Some(last) = events.iter().map(|e| e.id).max() {
            self.last_event.send_if_modified(|current| {
                let newer = last > *current;
                if newer {
                    *current = last;
                }
                newer
            });
        }
    }
}

/// What a task's bell says: the newest event appended about it, and the
/// task as that event's write left it, when the writer had it at hand
/// (otherwise a watcher reads it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rung {
    /// Event id.
    pub event: u64,
    /// The task after it.
    pub task: Option<Arc<Task>>,
}

/// An event to append.
pub(super) fn new_event(kind: ActivityKind, message: String) -> NewEvent {
    NewEvent {
        time: crate::common::clock::now_ms(),
        kind: kind.as_str().to_owned(),
        message,
        details: "{}".to_owned(),
        ..Default::default()
    }
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored {what} is unreadable: {e}"))
}

/// A spec from its stored version.
pub(super) fn spec_of(s: StoredSpec) -> Result<Spec> {
    let body: SpecBody = serde_json::from_str(&s.body).map_err(|e| unreadable("spec", e))?;
    Ok(Spec {
        name: s.name,
        body,
        version: s.version,
        updated_at_ms: s.updated_at,
    })
}

/// An agent from its row.
pub(super) fn agent_of(a: StoredAgent) -> Result<Agent> {
    let body: AgentBody = serde_json::from_str(&a.body).map_err(|e| unreadable("agent", e))?;
    let state = AgentState::parse(&a.state).ok_or_else(|| unreadable("agent state", &a.state))?;
    Ok(Agent {
        id: a.id,
        spec_name: a.spec_name,
        spec_version: a.spec_version,
        swarm_id: a.swarm_id,
        state,
        created_at_ms: a.created_at,
        body,
    })
}

/// The row of an agent.
pub(super) fn row_of(a: &Agent) -> StoredAgent {
    StoredAgent {
        id: a.id.clone(),
        spec_name: a.spec_name.clone(),
        spec_version: a.spec_version,
        swarm_id: a.swarm_id.clone(),
        state: a.state.as_str().to_owned(),
        created_at: a.created_at_ms,
        body: serde_json::to_string(&a.body).unwrap_or_default(),
    }
}

/// An event from its row.
pub(super) fn activity_of(e: StoredEvent) -> Result<Activity> {
    let StoredEvent { id, event } = e;
    let kind =
        ActivityKind::parse(&event.kind).ok_or_else(|| unreadable("event kind", &event.kind))?;
    let details = match serde_json::from_str(&event.details) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(unreadable("event details", &event.details)),
    };
    Ok(Activity {
        id,
        kind,
        time_ms: event.time,
        agent_id: event.agent_id,
        swarm_id: event.swarm_id,
        task_id: event.task_id,
        spec_name: event.spec_name,
        message: event.message,
        details,
    })
}

/// What the scheduler needs of an agent spawned from `spec` (a worker
/// agent is offline until its worker connects).
pub(super) fn slot_of(agent: &Agent, spec: &Spec) -> Slot {
    let limit = match agent.body.max_concurrent_tasks {
        0 => spec.body.concurrency_limit.max(1),
        n => n,
    };
    let internal = agent.body.kind == AgentKind::Internal;
    Slot {
        capabilities: spec.body.capabilities.clone(),
        limit: limit as usize,
        running: Vec::new(),
        stopped: agent.state == AgentState::Stopped,
        internal,
        online: internal,
    }
}

/// A task from its row.
pub(super) fn task_of(t: StoredTask) -> Result<Task> {
    let body: TaskBody = serde_json::from_str(&t.body).map_err(|e| unreadable("task", e))?;
    let state = TaskState::parse(&t.state).ok_or_else(|| unreadable("task state", &t.state))?;
    Ok(Task {
        id: t.id,
        state,
        agent_id: t.agent_id,
        created_at_ms: t.created_at,
        body,
    })
}

/// The row of a task.
pub(super) fn task_row(t: &Task) -> StoredTask {
    StoredTask {
        id: t.id.clone(),
        state: t.state.as_str().to_owned(),
        agent_id: t.agent_id.clone(),
        created_at: t.created_at_ms,
        body: serde_json::to_string(&t.body).unwrap_or_default(),
    }
}
