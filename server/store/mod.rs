//! Durable storage, the source of truth for every engine.
//!
//! Engines talk to the store through narrow traits ([`KvStore`],
//! [`CollectionStore`], [`PointStore`], [`QueryStore`], [`AgentStore`], [`TaskStore`]), so that a
//! PostgreSQL implementation (planned, for several replicas sharing one
//! store; see `docs/architecture.md`) can be added without touching them. The embedded implementation is
//! [`SqliteStore`]: one SQLite file in WAL mode under `--data-dir`, with
//! `synchronous = FULL`, so a call returns only after its transaction is on
//! disk — an acknowledged write survives a crash or a power cut.
//!
//! Store calls block (disk I/O, fsync): callers run them on the blocking
//! pool (`common::blocking::with_store`).
//!
//! One file per trait: [`kv`], [`collections`], [`points`], [`queries`],
//! [`agents`], [`tasks`];
//! the SQLite implementation of each is in the same-named file under
//! [`sqlite`].

mod agents;
mod collections;
mod kv;
mod migrations;
mod points;
mod queries;
mod sqlite;
mod swarms;
mod tasks;

pub(crate) use agents::{
    AgentQuery, AgentStore, EventQuery, NewEvent, SpawnWrite, Spawned, SpecDeleted, SpecRegistered,
    StoredAgent, StoredEvent, StoredSpec,
};
pub(crate) use collections::{CollectionStore, StoredCollection};
pub(crate) use kv::{KvEntry, KvListQuery, KvStore, KvWrite};
pub(crate) use points::{
    IndexSource, LabelledVectors, PointStore, PointsWrite, StoredPoint, UpsertedPoint,
};
pub(crate) use queries::{QueryStore, StoredQuery};
pub(crate) use sqlite::SqliteStore;
pub(crate) use swarms::{StoredSwarm, SwarmStore, SwarmWrite};
pub(crate) use tasks::{StoredTask, Submitted, TaskChange, TaskStore, TaskWrite};

/// Everything the agents engine keeps: its records and its tasks, in one
/// store (a task write also rewrites its agent's row).
pub(crate) trait AgentsStore: AgentStore + TaskStore + SwarmStore {}

impl<T: AgentStore + TaskStore + SwarmStore> AgentsStore for T {}
