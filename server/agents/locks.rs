//! Who may rewrite an agent's row, and when.
//!
//! An agent's row (its running tasks, counters and state) is changed by
//! every task that starts or ends on it, and by its worker's reports.
//! Two kinds of change:
//!
//! - a task's start and end are applied inside the store's transaction
//!   (`TaskStore::update_task` reads the row there): they commute, so any
//!   number run at once ([`AgentWrites::in_transaction`]). Ten tasks
//!   starting on one agent used to take turns at a lock, each holding it
//!   for a read and a commit: under load that made the last one wait a
//!   second.
//! - the other changes read the row, change it and write it back: they
//!   hold the agent alone ([`AgentWrites::agent`]), and wait for the
//!   in-transaction ones (whose writes their read must see).
//!
//! Tasks on different agents write at once either way (and the store
//! commits their writes together: `store::sqlite::group`). A change that
//! spans agents (a swarm's members, a spawn into a swarm, a worker's
//! hello, StopAgent) takes every agent at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{
    OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use crate::common::sync::lock;

/// Entries kept before the locks no one holds are dropped.
const PRUNE_AT: usize = 4096;

/// The locks (one per agent, and one over all of them).
#[derive(Debug, Default)]
pub(crate) struct AgentWrites {
    all: RwLock<()>,
    one: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

/// Held while one agent's row is read, changed and written back.
#[derive(Debug)]
pub(crate) struct OneAgent<'a> {
    _agent: OwnedRwLockWriteGuard<()>,
    _all: RwLockReadGuard<'a, ()>,
}

/// Held while a change to one agent's row is applied inside the store's
/// transaction.
#[derive(Debug)]
pub(crate) struct InTransaction<'a> {
    _agent: OwnedRwLockReadGuard<()>,
    _all: RwLockReadGuard<'a, ()>,
}

impl AgentWrites {
    /// Waits until agent `id`'s row may be read, changed and written back.
    pub(crate) async fn agent(&self, id: &str) -> OneAgent<'_> {
        let all = self.all.read().await;
        OneAgent {
            _agent: self.lock_of(id).write_owned().await,
            _all: all,
        }
    }

    /// Waits until a change to agent `id`'s row may be applied inside the
    /// store's transaction: at once, unless a read-modify-write of the row
    /// holds it or waits for it.
    pub(crate) async fn in_transaction(&self, id: &str) -> InTransaction<'_> {
        let all = self.all.read().await;
        InTransaction {
            _agent: self.lock_of(id).read_owned().await,
            _all: all,
        }
    }

    fn lock_of(&self, id: &str) -> Arc<RwLock<()>> {
        let mut map = lock(&self.one);
        if map.len() >= PRUNE_AT {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        map.entry(id.to_owned()).or_default().clone()
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

    #[tokio::test]
    async fn changes_in_the_transaction_run_together_and_exclude_a_rewrite() {
        let locks = Arc::new(AgentWrites::default());
        let first = locks.in_transaction("a").await;
        let second =
            tokio::time::timeout(Duration::from_millis(50), locks.in_transaction("a")).await;
        assert!(second.is_ok(), "changes in the transaction commute");
        let rewrite = tokio::time::timeout(Duration::from_millis(50), locks.agent("a")).await;
        assert!(rewrite.is_err(), "a rewrite waits for them");
        drop((first, second));
        let rewrite = locks.agent("a").await;
        let change =
            tokio::time::timeout(Duration::from_millis(50), locks.in_transaction("a")).await;
        assert!(change.is_err(), "and they for it");
        drop(rewrite);
        let all = locks.every().await;
        let change =
            tokio::time::timeout(Duration::from_millis(50), locks.in_transaction("b")).await;
        assert!(change.is_err(), "no change while every agent is held");
        drop(all);
    }
}
