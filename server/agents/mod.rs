//! The agents engine: specs, agents, swarms, tasks, external workers and the
//! activity log (AgentService).
//!
//! Everything lives in the store (`AgentStore`): every change is one
//! transaction together with the activity events it causes, so the log and
//! the state agree after any crash.
//!
//! - [`types`]: specs, agents, activity events.
//! - [`validate`]: every limit and rule of the requests.
//! - [`engine`]: the engine's handle and the record conversions.
//! - [`locks`]: who may rewrite an agent's row (one agent, or all).
//! - [`specs`]: RegisterSpec, GetSpec, ListSpecs, DeleteSpec (versions).
//! - [`roster`]: the agents: Spawn, SpawnBatch (all or none, idempotency
//!   keys), GetAgent, ListAgents, StopAgent.
//! - [`activity`]: ListEvents and WatchEvents (replay, then live), with
//!   the recent events in memory ([`tail`]).
//! - [`tasks`]: tasks on internal agents, run as query sessions.
//! - [`memory`]: an agent's vector collection: context for its tasks, and
//!   their outputs written back.
//! - [`workers`]: external workers (`Work`): leases, heartbeats, fencing.
//! - [`swarms`]: CreateSwarm, GetSwarm, ListSwarms, DissolveSwarm, and how
//!   a task sent to a swarm becomes steps on its members.
//! - [`settings`]: `[agents]` in agentd.toml.
//! - [`stats`]: counts and rates for GetAgentStats.
//!
//! Every RPC of the contract is served.

pub(crate) mod activity;
pub(crate) mod engine;
pub(crate) mod locks;
pub(crate) mod memory;
pub(crate) mod roster;
pub(crate) mod settings;
pub(crate) mod specs;
pub(crate) mod stats;
pub(crate) mod swarms;
pub(crate) mod tail;
pub(crate) mod tasks;
pub(crate) mod types;
pub(crate) mod validate;
pub(crate) mod workers;

pub(crate) use engine::AgentEngine;
pub(crate) use memory::AgentMemory;
pub use settings::AgentsConfig;
pub(crate) use stats::AgentStats;
pub(crate) use tasks::graph::GraphNode;
pub(crate) use types::{
    Activity, ActivityFilter, ActivityKind, Agent, AgentBody, AgentFilter, AgentKind, AgentState,
    Execution, Routing, SpawnParams, Spec, SpecBody, SubmitParams, Swarm, SwarmBody, SwarmParams,
    SwarmState, Task, TaskBody, TaskError, TaskErrorKind, TaskState, TaskTarget, Topology,
};
pub(crate) use workers::{Ack, Checkpoint, Directive, WorkerHello, WorkerMessage};
