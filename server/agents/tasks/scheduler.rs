//! Which task runs on which agent, and when: the in-memory roster of
//! agents (their specs' capabilities and concurrency limits, the tasks each
//! runs) and the queue of pending tasks, by priority then arrival.
//!
//! It is derived state: rebuilt from the store at start-up (agents, and
//! tasks pending or running then), changed only together with a store
//! write. Dispatch is a pure decision here; the engine starts the runners.

use std::collections::{HashMap, HashSet};

use crate::agents::types::{Route, Routing};

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

/// What the scheduler knows of a swarm: whom it routes to, and how.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SwarmSlot {
    /// Members in join order.
    pub members: Vec<String>,
    /// How a member is picked.
    pub routing: Routing,
    /// ROUND_ROBIN: the member to try first next time.
    pub next: usize,
}

/// A task waiting for an agent.
#[derive(Debug, Clone, PartialEq)]
struct Waiting {
    priority: i32,
    arrival: u64,
    id: String,
    route: Route,
}

/// A task waiting for its dependencies.
#[derive(Debug, Clone, PartialEq)]
struct Blocked {
    priority: i32,
    route: Route,
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
    /// Active swarms by id.
    pub swarms: HashMap<String, SwarmSlot>,
    queue: Vec<Waiting>,
    arrivals: u64,
    /// Tasks a client cancelled while they run or wait to retry: why.
    pub cancelled: HashMap<String, String>,
    /// Running tasks whose agent stopped: they go to another agent.
    pub requeue: HashSet<String>,
}

impl Scheduler {
    /// Queues a task (by priority, then arrival).
    pub fn enqueue(&mut self, id: String, priority: i32, route: Route) {
        self.arrivals += 1;
        let waiting = Waiting {
            priority,
            arrival: self.arrivals,
            id,
            route,
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
    pub fn block(&mut self, id: String, priority: i32, route: Route, deps: HashSet<String>) {
        if deps.is_empty() {
            return self.enqueue(id, priority, route);
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
                route,
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
                    self.enqueue(id, b.priority, b.route);
                }
            } else {
                self.blocked.remove(&id);
                doomed.push(id);
            }
        }
        doomed
    }

    /// Tasks ready and waiting for an agent.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Tasks waiting for their dependencies.
    pub fn blocked(&self) -> usize {
        self.blocked.len()
    }

    /// Adds `more` to what blocked task `id` waits for (a plan's steps).
    pub fn also_wait_for(&mut self, id: &str, more: &[String]) {
        if let Some(blocked) = self.blocked.get_mut(id) {
            for dep in more {
                blocked.left.insert(dep.clone());
                self.dependents
                    .entry(dep.clone())
                    .or_default()
                    .push(id.to_owned());
            }
        }
    }

    /// The free member of swarm `id` a task goes to.
    fn pick_member(
        &mut self,
        id: &str,
        capability: Option<&str>,
        exclude: Option<&str>,
    ) -> Option<String> {
        let swarm = self.swarms.get(id)?;
        let agents = &self.agents;
        let eligible = |m: &String| {
            Some(m.as_str()) != exclude
                && agents.get(m).is_some_and(|s| {
                    s.free() && capability.is_none_or(|c| s.capabilities.iter().any(|x| x == c))
                })
        };
        match swarm.routing {
            Routing::RoundRobin => {
                let n = swarm.members.len();
                let start = swarm.next;
                let found = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| eligible(&swarm.members[i]))?;
                let member = swarm.members[found].clone();
                if let Some(s) = self.swarms.get_mut(id) {
                    s.next = found + 1;
                }
                Some(member)
            }
            Routing::LeastBusy | Routing::CapabilityMatch => swarm
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| eligible(m))
                .min_by_key(|(i, m)| (agents[*m].running.len(), *i))
                .map(|(_, m)| m.clone()),
        }
    }

    /// Assigns every waiting task that has a free agent, in queue order:
    /// (task, agent) pairs, already counted as running on their agents. A
    /// join comes out with an empty agent: it runs nowhere.
    pub fn dispatch(&mut self) -> Vec<(String, String)> {
        let mut assigned = Vec::new();
        // Nothing frees up during a pass: the agents free at its start are
        // all there is, and a capability or swarm that found none finds
        // none for the rest of it. So a long queue behind busy agents costs
        // one cheap look per task, not one scan of the agents per task.
        let mut free: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, s)| s.free())
            .map(|(id, _)| id.clone())
            .collect();
        let mut no_capability: HashSet<String> = HashSet::new();
        let mut no_worker: HashSet<String> = HashSet::new();
        let mut no_member: HashSet<(String, Option<String>)> = HashSet::new();
        let mut i = 0;
        while i < self.queue.len() {
            let route = &self.queue[i].route;
            if free.is_empty() && *route != Route::Join {
                i += 1;
                continue;
            }
            let agent = match route {
                Route::Agent(id) => self.agents.get(id).filter(|s| s.free()).map(|_| id.clone()),
                Route::Capability(c) if no_capability.contains(c) => None,
                Route::Worker(c) if no_worker.contains(c) => None,
                Route::Capability(c) | Route::Worker(c) => {
                    let agents = &self.agents;
                    let workers_only = matches!(route, Route::Worker(_));
                    let found = free
                        .iter()
                        .filter(|id| {
                            let slot = &agents[*id];
                            slot.capabilities.contains(c) && !(workers_only && slot.internal)
                        })
                        .min_by(|a, b| {
                            (agents[*a].running.len(), a).cmp(&(agents[*b].running.len(), b))
                        })
                        .cloned();
                    if found.is_none() {
                        if workers_only {
                            no_worker.insert(c.clone());
                        } else {
                            no_capability.insert(c.clone());
                        }
                    }
                    found
                }
                Route::Swarm {
                    id,
                    capability,
                    exclude,
                } => {
                    let key = (id.clone(), capability.clone());
                    if exclude.is_none() && no_member.contains(&key) {
                        None
                    } else {
                        let (id, capability, exclude) =
                            (id.clone(), capability.clone(), exclude.clone());
                        let found =
                            self.pick_member(&id, capability.as_deref(), exclude.as_deref());
                        if found.is_none() && exclude.is_none() {
                            no_member.insert(key);
                        }
                        found
                    }
                }
                Route::Join => Some(String::new()),
            };
            match agent {
                Some(agent) => {
                    let task = self.queue.remove(i);
                    if let Some(slot) = self.agents.get_mut(&agent) {
                        slot.running.push(task.id.clone());
                        if !slot.free() {
                            free.retain(|a| *a != agent);
                        }
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
    fn a_worker_tool_call_goes_to_a_worker_never_to_an_internal_agent() {
        let mut s = Scheduler::default();
        s.agents.insert("model".into(), slot(&["search"], 4));
        s.enqueue("call".into(), 100, Route::Worker("search".into()));
        s.enqueue("task".into(), 0, Route::Capability("search".into()));
        // The internal agent takes the ordinary task; the call waits.
        assert_eq!(
            s.dispatch(),
            vec![("task".to_string(), "model".to_string())]
        );
        let mut worker = slot(&["search"], 1);
        worker.internal = false;
        s.agents.insert("worker".into(), worker);
        assert_eq!(
            s.dispatch(),
            vec![("call".to_string(), "worker".to_string())]
        );
    }

    #[test]
    fn priority_then_arrival_within_each_agents_limit() {
        let mut s = Scheduler::default();
        s.agents.insert("a".into(), slot(&["code"], 1));
        s.agents.insert("b".into(), slot(&["code"], 2));
        s.enqueue("low".into(), 0, Route::Capability("code".into()));
        s.enqueue("high".into(), 5, Route::Capability("code".into()));
        s.enqueue("later".into(), 5, Route::Capability("code".into()));
        s.enqueue("mine".into(), 9, Route::Agent("a".into()));
        s.enqueue("none".into(), 0, Route::Capability("art".into()));
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
        s.enqueue("x".into(), 0, Route::Agent("a".into()));
        assert!(s.dispatch().is_empty(), "a stopped agent takes nothing");
        s.agents.get_mut("a").unwrap().stopped = false;
        s.agents.get_mut("a").unwrap().online = false;
        assert!(s.dispatch().is_empty(), "an offline worker takes nothing");
        s.agents.get_mut("a").unwrap().online = true;
        assert_eq!(s.dispatch(), vec![("x".to_string(), "a".to_string())]);
    }

    #[test]
    fn swarms_route_round_robin_least_busy_and_by_capability() {
        let mut s = Scheduler::default();
        s.agents.insert("m1".into(), slot(&["code"], 5));
        s.agents.insert("m2".into(), slot(&["art"], 5));
        s.agents.insert("m3".into(), slot(&["code"], 5));
        let members = vec!["m1".to_string(), "m2".into(), "m3".into()];
        s.swarms.insert(
            "rr".into(),
            SwarmSlot {
                members: members.clone(),
                routing: Routing::RoundRobin,
                next: 0,
            },
        );
        let to = |cap: Option<&str>, exclude: Option<&str>| Route::Swarm {
            id: "rr".into(),
            capability: cap.map(str::to_owned),
            exclude: exclude.map(str::to_owned),
        };
        for t in ["t1", "t2", "t3", "t4"] {
            s.enqueue(t.into(), 0, to(None, None));
        }
        let got: Vec<String> = s.dispatch().into_iter().map(|(_, a)| a).collect();
        assert_eq!(got, ["m1", "m2", "m3", "m1"], "in turn");
        s.enqueue("c".into(), 0, to(Some("code"), Some("m3")));
        assert_eq!(s.dispatch(), vec![("c".to_string(), "m1".to_string())]);
        s.swarms.get_mut("rr").unwrap().routing = Routing::LeastBusy;
        s.enqueue("l".into(), 0, to(None, None));
        assert_eq!(
            s.dispatch(),
            vec![("l".to_string(), "m2".to_string())],
            "m2 runs 1, m1 3, m3 1: first of the least busy"
        );
        s.enqueue("j".into(), 0, Route::Join);
        assert_eq!(s.dispatch(), vec![("j".to_string(), String::new())]);
    }

    #[test]
    fn a_task_waits_for_all_its_dependencies_and_is_doomed_by_a_failed_one() {
        let mut s = Scheduler::default();
        s.agents.insert("a".into(), slot(&["code"], 10));
        let code = || Route::Capability("code".into());
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
