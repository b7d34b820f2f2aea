//! The most recent activity events, in memory, for watchers that follow
//! the log live: without it each watcher reads the store after each
//! append (100 watchers at 1,000 events/s would be 100,000 reads a
//! second). The store stays the source of truth: a watcher behind the
//! tail's start, or facing a hole in it (an event committed whose append
//! has not reached the tail yet), reads the store as before.

use std::collections::BTreeMap;

use super::types::{Activity, ActivityFilter};

/// Events kept.
const CAPACITY: usize = 8192;

/// Recent events by id.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    events: BTreeMap<u64, Activity>,
}

/// What the tail can tell a watcher whose last event is `next`.
#[derive(Debug, PartialEq)]
pub(crate) enum TailRead {
    /// The events after it that match its filter (possibly none), and the
    /// id it has now read up to.
    Events(Vec<Activity>, u64),
    /// Nothing newer has been appended.
    UpToDate,
    /// The tail cannot say: read the store.
    Miss,
}

/// Whether `a` is an event `f` asks for.
pub(crate) fn matches(f: &ActivityFilter, a: &Activity) -> bool {
    (f.kinds.is_empty() || f.kinds.contains(&a.kind))
        && (f.agent_id.is_empty() || f.agent_id == a.agent_id)
        && (f.swarm_id.is_empty() || f.swarm_id == a.swarm_id)
        && (f.task_id.is_empty() || f.task_id == a.task_id)
}

impl Tail {
    /// Adds an event just appended to the store.
    pub fn push(&mut self, event: Activity) {
        self.events.insert(event.id, event);
        while self.events.len() > CAPACITY {
            self.events.pop_first();
        }
    }

    /// Events after `next`, in id order and without a hole, that match
    /// `filter`; at most `limit` of them.
    pub fn read_after(&self, next: u64, filter: &ActivityFilter, limit: usize) -> TailRead {
        let Some((&first, _)) = self.events.first_key_value() else {
            return TailRead::Miss;
        };
        let last = *self.events.keys().next_back().expect("not empty");
        if next >= last {
            return TailRead::UpToDate;
        }
        if first > next + 1 {
            return TailRead::Miss;
        }
        let (mut found, mut upto) = (Vec::new(), next);
        for (&id, event) in self.events.range(next + 1..) {
            if id != upto + 1 || found.len() == limit {
                break;
            }
            upto = id;
            if matches(filter, event) {
                found.push(event.clone());
            }
        }
        if upto == next {
            TailRead::Miss
        } else {
            TailRead::Events(found, upto)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::types::ActivityKind;

    fn event(id: u64, task: &str) -> Activity {
        Activity {
            id,
            kind: ActivityKind::TaskProgress,
            time_ms: 0,
            agent_id: String::new(),
            swarm_id: String::new(),
            task_id: task.into(),
            spec_name: String::new(),
            message: String::new(),
            details: Default::default(),
        }
    }

    #[test]
    fn reads_are_contiguous_filtered_and_fall_back_to_the_store() {
        let mut tail = Tail::default();
        let all = ActivityFilter::default();
        assert_eq!(
            tail.read_after(0, &all, 10),
            TailRead::Miss,
            "empty: the store"
        );
        for id in [5, 6, 7, 9] {
            tail.push(event(id, if id % 2 == 0 { "a" } else { "b" }));
        }
        assert_eq!(
            tail.read_after(2, &all, 10),
            TailRead::Miss,
            "behind the tail"
        );
        let ids = |r: TailRead| match r {
            TailRead::Events(e, upto) => (e.iter().map(|e| e.id).collect::<Vec<_>>(), upto),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ids(tail.read_after(4, &all, 10)),
            (vec![5, 6, 7], 7),
            "stops at the hole"
        );
        assert_eq!(
            tail.read_after(7, &all, 10),
            TailRead::Miss,
            "8 not here yet: the store"
        );
        let only_a = ActivityFilter {
            task_id: "a".into(),
            ..Default::default()
        };
        assert_eq!(
            ids(tail.read_after(4, &only_a, 10)),
            (vec![6], 7),
            "filtered, but read up to 7"
        );
        assert_eq!(
            ids(tail.read_after(4, &all, 2)),
            (vec![5, 6], 6),
            "at most the limit"
        );
        assert_eq!(tail.read_after(9, &all, 10), TailRead::UpToDate);
        for id in 10..10 + CAPACITY as u64 {
            tail.push(event(id, "a"));
        }
        assert_eq!(tail.events.len(), CAPACITY);
    }
}
