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
//! - [`specs`]: RegisterSpec, GetSpec, ListSpecs, DeleteSpec (versions).
//! - [`roster`]: the agents: Spawn, SpawnBatch (all or none, idempotency
//!   keys), GetAgent, ListAgents, StopAgent.
//! - [`activity`]: ListEvents and WatchEvents (replay, then live).
//!
//! Built so far: specs, agents and the log. Swarms, tasks (run as query
//! sessions on internal agents, or leased to external workers through
//! `Work`) come next; their RPCs answer UNIMPLEMENTED until then.

pub(crate) mod activity;
pub(crate) mod engine;
pub(crate) mod roster;
pub(crate) mod specs;
pub(crate) mod types;
pub(crate) mod validate;

pub(crate) use engine::AgentEngine;
pub(crate) use types::{
    Activity, ActivityFilter, ActivityKind, Agent, AgentBody, AgentFilter, AgentKind, AgentState,
    SpawnParams, Spec, SpecBody,
};
