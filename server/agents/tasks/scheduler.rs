//! Which task runs on which agent, and when: the in-memory roster of
//! agents (their specs' capabilities and concurrency limits, the tasks each
//! runs) and the queue of pending tasks, by priority then arrival.
//!
//! It is derived state: rebuilt from the store at start-up (agents, and
//! tasks pending or running then), changed only together with a store
//! write. Dispatch is a pure decision here; the engine starts the runners.

use std::collections::{HashMap, HashSet};

use crate::agents::types::TaskTarget;

/// What the scheduler knows of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Its spec's capabilities.
    pub capabilities: Vec<String>,
    /// Tasks it may run at once.
    pub limit: usize,
    /// Tasks it runs now.
    pub running: Vec<String>,
    /// Takes no tasks.
    pub stopped: bool,
    /// agentd runs its tasks (not an external worker).
    pub internal: bool,
    /// Can take tasks now: always for internal agents; for a worker, while
    /// its stream is open and it heartbeats.
    pub online: bool,
}

impl Slot {
    fn free(&self) -> bool {
        self.online && !self.stopped && self.running.len() < self.limit
    }
}

/// A task waiting for an agent.
#[derive(Debug, Clone, PartialEq)]
struct Waiting {
    priority: i32,
    arrival: u64,
    id: String,
    target: TaskTarget,
}

/// A task waiting for its dependencies.
#[derive(Debug, Clone, PartialEq)]
struct Blocked {
    priority: i32,
    target: TaskTarget,
    /// Dependencies that have not succeeded yet.
    left: HashSet<String>,
}

/// The roster and the queue.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Tasks waiting for dependencies, by id.
    blocked: HashMap<String, Blocked>,
    /// Blocked tasks by the dependency they wait for.
    dependents: HashMap<String, Vec<String>>,
    /// Agents by id.
    pub agents: HashMap<String, Slot>,
    queue: Vec<Waiting>,
    arrivals: u64,
    /// Tasks a client cancelled while they run or wait to retry: why.
    pub cancelled: HashMap<String, String>,
    /// Running tasks whose agent stopped: they go to another agent.
    pub requeue: HashSet<String>,
}

impl Scheduler {
    /// Queues a task (by priority, then arrival).
    pub fn enqueue(&mut self, id: String, priority: i32, target: TaskTarget) {
        self.arrivals += 1;
        let waiting = Waiting {
            priority,
            arrival: self.arrivals,
            id,
            target,
        };
        let at = self
            .queue
            .partition_point(|w| (-w.priority, w.arrival) <= (-waiting.priority, waiting.arrival));
        self.queue.insert(at, waiting);
    }

    /// Takes a task out of the queue (or out of the wait for its
    /// dependencies); true when it was there.
    pub fn dequeue(&mut self, id: &str) -> bool {
        let before = self.queue.len();
        self.queue.retain(|w| w.id != id);
        self.queue.len() != before || self.blocked.remove(id).is_some()
    }

    /// Holds a task until every one of `deps` has succeeded (then queues
    /// it).
    pub fn block(&mut self, id: String, priority: i32, target: TaskTarget, deps: HashSet<String>) {
        if deps.is_empty() {
            return self.enqueue(id, priority, target);
        }
        for dep in &deps {
            self.dependents
                .entry(dep.clone())
                .or_default()
                .push(id.clone());
        }
        self.blocked.insert(
            id,
            Blocked {
                priority,
                target,
                left: deps,
            },
        );
    }

    /// Task `dep` ended: its dependents that waited only for it are
    /// queued when it `succeeded`; otherwise they can never run and are
    /// returned, for the caller to end.
    pub fn dependency_ended(&mut self, dep: &str, succeeded: bool) -> Vec<String> {
        let mut doomed = Vec::new();
        for id in self.dependents.remove(dep).unwrap_or_default() {
            let Some(blocked) = self.blocked.get_mut(&id) else {
                continue;
            };
            if succeeded {
                blocked.left.remove(dep);
                if blocked.left.is_empty()
                    && let Some(b) = self.blocked.remove(&id)
                {
                    self.enqueue(id, b.priority, b.target);
                }
            } else {
                self.blocked.remove(&id);
                doomed.push(id);
            }
        }
        doomed
    }

    /// Tasks waiting now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Assigns every waiting task that has a free agent, in queue order:
    /// (task, agent) pairs, already counted as running on their agents.
    pub fn dispatch(&mut self) -> Vec<(String, String)> {
        let mut assigned = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let agent = match &self.queue[i].target {
                TaskTarget::Agent(id) => {
                    self.agents.get(id).filter(|s| s.free()).map(|_| id.clone())
                }
                TaskTarget::Capability(c) => self
                    .agents
                    .iter()
                    .filter(|(_, s)| s.free() && s.capabilities.contains(c))
                    .min_by(|(a, x), (b, y)| (x.running.len(), a).cmp(&(y.running.len(), b)))
                    .map(|(id, _)| id.clone()),
                TaskTarget::Swarm(_) => None,
            };
            match agent {
                Some(agent) => {
                    let task = self.queue.remove(i);
                    if let Some(slot) = self.agents.get_mut(&agent) {
                        slot.running.push(task.id.clone());
                    }
                    assigned.push((task.id, agent));
                }
                None => i += 1,
            }
        }
        assigned
    }

    /// The task no longer runs on `agent`.
    pub fn release(&mut self, agent: &str, task: &str) {
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.running.retain(|t| t != task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(capabilities: &[&str], limit: usize) -> Slot {
        Slot {
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            limit,
            running: Vec::new(),
            stopped: false,
            internal: true,
            online: true,
        }
    }

    #[test]
    fn priority_then_arrival_within_each_agents_limit() {
        let mut s = Scheduler::default();
        s.agents.insert("a".into(), slot(&["code"], 1));
        s.agents.insert("b".into(), slot(&["code"], 2));
        s.enqueue("low".into(), 0, TaskTarget::Capability("code".into()));
        s.enqueue("high".into(), 5, TaskTarget::Capability("code".into()));
        s.enqueue("later".into(), 5, TaskTarget::Capability("code".into()));
        s.enqueue("mine".into(), 9, TaskTarget::Agent("a".into()));
        s.enqueue("none".into(), 0, TaskTarget::Capability("art".into()));
        let got = s.dispatch();
        // "mine" takes a's only place; the others go to b (least busy),
        // highest priority first, two at most.
        assert_eq!(
            got,
            vec![
                ("mine".to_string(), "a".to_string()),
                ("high".to_string(), "b".to_string()),
                ("later".to_string(), "b".to_string()),
            ]
        );
        assert_eq!(s.waiting(), 2);
        s.release("b", "high");
        assert_eq!(s.dispatch(), vec![("low".to_string(), "b".to_string())]);
        assert!(s.dequeue("none"));
        assert_eq!(s.waiting(), 0);
        s.agents.get_mut("a").unwrap().stopped = true;
        s.release("a", "mine");
        s.enqueue("x".into(), 0, TaskTarget::Agent("a".into()));
        assert!(s.dispatch().is_empty(), "a stopped agent takes nothing");
        s.agents.get_mut("a").unwrap().stopped = false;
        s.agents.get_mut("a").unwrap().online = false;
        assert!(s.dispatch().is_empty(), "an offline worker takes nothing");
        s.agents.get_mut("a").unwrap().online = true;
        assert_eq!(s.dispatch(), vec![("x".to_string(), "a".to_string())]);
    }

    #[test]
    fn a_task_waits_for_all_its_dependencies_and_is_doomed_by_a_failed_one() {
        let mut s = Scheduler::default();
        s.agents.insert("a".into(), slot(&["code"], 10));
        let code = || TaskTarget::Capability("code".into());
        let deps = |d: &[&str]| d.iter().map(|x| (*x).to_owned()).collect();
        s.block("c".into(), 0, code(), deps(&["a1", "b1"]));
        s.block("d".into(), 0, code(), deps(&["b1"]));
        s.block("e".into(), 0, code(), deps(&["x1"]));
        assert!(s.dispatch().is_empty(), "all wait");
        assert!(s.dependency_ended("a1", true).is_empty());
        assert!(s.dispatch().is_empty(), "c still waits for b1");
        assert!(s.dependency_ended("b1", true).is_empty());
        let mut got: Vec<String> = s.dispatch().into_iter().map(|(t, _)| t).collect();
        got.sort();
        assert_eq!(got, vec!["c", "d"]);
        assert_eq!(s.dependency_ended("x1", false), vec!["e".to_string()]);
        assert!(s.dispatch().is_empty(), "e never runs");
        s.block("f".into(), 0, code(), deps(&["y1"]));
        assert!(s.dequeue("f"), "a waiting task can be cancelled");
        assert!(s.dependency_ended("y1", true).is_empty());
        assert!(s.dispatch().is_empty());
    }
}
