//! The agents engine's records: the [`AgentStore`] trait.
//!
//! Bodies are JSON the agents engine owns; the columns beside them are what
//! the store filters and orders by. Every write takes the activity events
//! it causes and appends them in the same transaction, so the log and the
//! state never disagree, even after a crash.

use crate::error::Result;

/// A spec version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpec {
    /// Name.
    pub name: String,
    /// Version, from 1.
    pub version: u64,
    /// When it was registered, Unix milliseconds.
    pub updated_at: i64,
    /// JSON body.
    pub body: String,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAgent {
    /// Id (ULID).
    pub id: String,
    /// Spec name.
    pub spec_name: String,
    /// Spec version.
    pub spec_version: u64,
    /// Swarm, or empty.
    pub swarm_id: String,
    /// State name.
    pub state: String,
    /// When it was spawned, Unix milliseconds.
    pub created_at: i64,
    /// JSON body.
    pub body: String,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEvent {
    /// When, Unix milliseconds.
    pub time: i64,
    /// Kind name.
    pub kind: String,
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
    /// JSON object.
    pub details: String,
}

/// An appended event: its id and what was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log, from 1.
    pub id: u64,
    /// The event.
    pub event: NewEvent,
}

/// Which events a read wants (empty fields match everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// Kind names; empty means all.
    pub kinds: Vec<String>,
    /// Agent.
    pub agent_id: String,
    /// Swarm.
    pub swarm_id: String,
    /// Task.
    pub task_id: String,
}

/// Which agents a list wants (empty fields match everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentQuery {
    /// Spec name.
    pub spec_name: String,
    /// Swarm id.
    pub swarm_id: String,
    /// State name.
    pub state: String,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRegistered {
    /// The stored version.
    pub spec: StoredSpec,
    /// The name was new (or had been deleted).
    pub created: bool,
    /// The events appended.
    pub events: Vec<StoredEvent>,
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecDeleted {
    /// Deleted; the events appended.
    Deleted(Vec<StoredEvent>),
    /// No spec had that name.
    Absent,
    /// Agents of it are not stopped: how many.
    InUse(u64),
}

/// Agents to create in one spawn, all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnWrite {
    /// The agents.
    pub agents: Vec<StoredAgent>,
    /// Spec versions that must still be current: (name, version).
    pub specs: Vec<(String, u64)>,
    /// Idempotency keys to record: (key, fingerprint, ids of its agents).
    pub keys: Vec<(String, String, Vec<String>)>,
    /// Swarms the agents join (their member lists grown).
    pub swarms: Vec<crate::store::StoredSwarm>,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// What a spawn did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spawned {
    /// Created; the events appended.
    Created(Vec<StoredEvent>),
    /// A spec was deleted or replaced meanwhile: its name.
    SpecChanged(String),
}

/// Specs, agents and the activity log.
pub trait AgentStore: Send + Sync + std::fmt::Debug + 'static {
    /// Registers a new version of spec `name` with `body`, at `now`, and
    /// appends `event` (its details gain the version).
    fn register_spec(
        &self,
        name: &str,
        body: &str,
        now: i64,
        event: NewEvent,
    ) -> Result<SpecRegistered>;

    /// The current version of spec `name`, or the given version.
    fn get_spec(&self, name: &str, version: Option<u64>) -> Result<Option<StoredSpec>>;

    /// Current specs by name after `after`, with `capability` if not
    /// empty; at most `limit`.
    fn list_specs(&self, capability: &str, after: &str, limit: usize) -> Result<Vec<StoredSpec>>;

    /// Deletes spec `name` unless agents of it are not stopped.
    fn delete_spec(&self, name: &str, event: NewEvent) -> Result<SpecDeleted>;

    /// The agents an idempotency key made, with the request fingerprint it
    /// was given; None when unknown or older than `since`.
    fn spawn_key(&self, key: &str, since: i64) -> Result<Option<(String, Vec<String>)>>;

    /// Creates agents, all or none, and forgets keys older than
    /// `forget_before`.
    fn spawn(&self, write: &SpawnWrite, forget_before: i64) -> Result<Spawned>;

    /// One agent.
    fn get_agent(&self, id: &str) -> Result<Option<StoredAgent>>;

    /// Agents in spawn order after the one with id `after` (empty: from the
    /// first), matching `query`; at most `limit`.
    fn list_agents(
        &self,
        query: &AgentQuery,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredAgent>>;

    /// Rewrites an agent's state and body, and appends `events`.
    fn update_agent(&self, agent: &StoredAgent, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>>;

    /// Appends `events` that record no change of a stored record (a
    /// task's tool calls: the query keeps them).
    fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>>;

    /// Events with id greater than `after`, matching `query`, in id order;
    /// at most `limit`.
    fn list_events(&self, query: &EventQuery, after: u64, limit: usize)
    -> Result<Vec<StoredEvent>>;

    /// The id of the last event (0 for none).
    fn last_event_id(&self) -> Result<u64>;

    /// How many agents are in each state: (state name, count).
    fn count_agents_by_state(&self) -> Result<Vec<(String, u64)>>;
}
