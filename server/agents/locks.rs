//! Who may rewrite an agent's row, and when.
//!
//! An agent's row (its running tasks, counters and state) is read,
//! changed and written back by every task that starts or ends on it, and
//! by its worker's reports. Those read-modify-writes are serialised per
//! agent, so that tasks on different agents write at once (and the store
//! commits their writes together: `store::sqlite::group`). A change that
//! spans agents (a swarm's members, a spawn into a swarm, a worker's
//! hello, StopAgent) takes every agent at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::common::sync::lock;

/// Entries kept before the locks no one holds are dropped.
const PRUNE_AT: usize = 4096;

/// The locks (one per agent, and one over all of them).
#[derive(Debug, Default)]
pub(crate) struct AgentWrites {
    all: RwLock<()>,
    one: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one agent's row is rewritten.
#[derive(Debug)]
pub(crate) struct OneAgent<'a> {
    _agent: OwnedMutexGuard<()>,
    _all: RwLockReadGuard<'a, ()>,
}

impl AgentWrites {
    /// Waits until agent `id`'s row may be rewritten.
    pub(crate) async fn agent(&self, id: &str) -> OneAgent<'_> {
        let all = self.all.read().await;
        let mutex = {
            let mut map = lock(&self.one);
            if map.len() >= PRUNE_AT {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            map.entry(id.to_owned()).or_default().clone()
        };
        OneAgent {
            _agent: mutex.lock_owned().await,
            _all: all,
        }
    }

    /// Waits until every agent's row may be rewritten.
    pub(crate) async fn every(&self) -> RwLockWriteGuard<'_, ()> {
        self.all.write().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn agents_are_locked_apart_and_every_waits_for_all() {
        let locks = Arc::new(AgentWrites::default());
        let a = locks.agent("a").await;
        // Another agent is free; the same one waits.
        let b = tokio::time::timeout(Duration::from_millis(50), locks.agent("b")).await;
        assert!(b.is_ok());
        drop(b);
        let again = tokio::time::timeout(Duration::from_millis(50), locks.agent("a")).await;
        assert!(again.is_err(), "agent a is held");
        let all = tokio::time::timeout(Duration::from_millis(50), locks.every()).await;
        assert!(all.is_err(), "every agent waits for a");
        drop(a);
        let all = locks.every().await;
        let one = tokio::time::timeout(Duration::from_millis(50), locks.agent("c")).await;
        assert!(one.is_err(), "no agent while every agent is held");
        drop(all);
    }
}
