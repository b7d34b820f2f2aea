//! The agents engine's swarms: the [`SwarmStore`] trait.
//!
//! A swarm's body is JSON the agents engine owns. A swarm write carries the
//! agent rows whose membership it changes and the events it causes: one
//! transaction for all three.

use crate::error::Result;
use crate::store::{NewEvent, StoredAgent, StoredEvent, Submitted};

/// A swarm as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSwarm {
    /// Id (ULID).
    pub id: String,
    /// State name.
    pub state: String,
    /// When it was created, Unix milliseconds.
    pub created_at: i64,
    /// JSON body.
    pub body: String,
}

/// A swarm write: the swarm, the agents it changes, and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmWrite {
    /// The swarm (inserted or rewritten).
    pub swarm: StoredSwarm,
    /// Agents whose row changes (membership, state).
    pub agents: Vec<StoredAgent>,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// Swarms.
pub trait SwarmStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records a new swarm (with `key`: (key, request fingerprint), unless
    /// the key is known since `since`; keys older than it are forgotten).
    fn create_swarm(
        &self,
        write: &SwarmWrite,
        key: Option<(&str, &str)>,
        since: i64,
    ) -> Result<Submitted>;

    /// The swarm a CreateSwarm with `key` made since `since`, and that
    /// request's fingerprint.
    fn swarm_key(&self, key: &str, since: i64) -> Result<Option<(String, String)>>;

    /// Rewrites a swarm and its agents' rows, and appends events.
    fn save_swarm(&self, write: &SwarmWrite) -> Result<Vec<StoredEvent>>;

    /// One swarm.
    fn get_swarm(&self, id: &str) -> Result<Option<StoredSwarm>>;

    /// Swarms in creation order after the one with id `after` (empty: from
    /// the first), dissolved ones only when asked; at most `limit`.
    fn list_swarms(
        &self,
        include_dissolved: bool,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredSwarm>>;
}
