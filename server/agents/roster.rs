//! Agents: spawned from a spec's current version, all or none per call
//! (one store transaction with their events), retried spawns recognised by
//! their idempotency key; listed in spawn order; stopped.

use std::collections::HashMap;

use serde_json::json;

use super::engine::{AgentEngine, agent_of, new_event, row_of, slot_of, spec_of};
use super::tasks::outcome::End;
use super::types::{
    ActivityKind, Agent, AgentBody, AgentFilter, AgentKind, AgentState, SpawnParams, Spec,
};
use super::validate::{MAX_BATCH, check_spawn};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{self, Page};
use crate::error::{Error, Result, Violations};
use crate::store::{AgentQuery, SpawnWrite, Spawned};

/// How long a spawn's idempotency key is remembered.
const KEY_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// What a request spawns, for comparing a retry with the first call.
fn fingerprint(p: &SpawnParams) -> String {
    json!({
        "spec_name": p.spec_name,
        "count": p.count,
        "swarm_id": p.swarm_id,
        "labels": p.labels,
    })
    .to_string()
}

impl AgentEngine {
    /// Spawns the agents of one request (fields as SpawnRequest's).
    pub async fn spawn(&self, params: SpawnParams) -> Result<Vec<Agent>> {
        let mut batch = self.spawn_batch(vec![params], "").await?;
        Ok(batch.pop().unwrap_or_default())
    }

    /// Spawns the agents of every request, all or none; each request's
    /// agents in order. Field paths are under `prefix[i].` when `prefix`
    /// is not empty (SpawnBatch's `requests`).
    pub async fn spawn_batch(
        &self,
        requests: Vec<SpawnParams>,
        prefix: &str,
    ) -> Result<Vec<Vec<Agent>>> {
        let path = |i: usize| {
            if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}[{i}].")
            }
        };
        let mut v = Violations::new();
        if !prefix.is_empty() && (requests.is_empty() || requests.len() > MAX_BATCH) {
            v.add(
                prefix,
                format!(
                    "must hold 1 to {MAX_BATCH} requests, got {}",
                    requests.len()
                ),
            );
        }
        for (i, p) in requests.iter().enumerate() {
            check_spawn(&path(i), p, &mut v);
        }
        v.finish()?;

        let now = now_ms();
        // Retried requests answer with the agents of their first call.
        let mut replayed: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, p) in requests.iter().enumerate() {
            if p.idempotency_key.is_empty() {
                continue;
            }
            let key = p.idempotency_key.clone();
            let since = now - KEY_RETENTION_MS;
            if let Some((print, ids)) =
                with_store(&self.store, move |s| s.spawn_key(&key, since)).await?
            {
                if print != fingerprint(p) {
                    return Err(Error::invalid(
                        format!("{}idempotency_key", path(i)),
                        "was used for a different spawn request within 24 hours",
                    ));
                }
                replayed.insert(i, ids);
            }
        }

        let mut specs: HashMap<String, Spec> = HashMap::new();
        for (i, p) in requests.iter().enumerate() {
            if replayed.contains_key(&i) || specs.contains_key(&p.spec_name) {
                continue;
            }
            let name = p.spec_name.clone();
            let found = with_store(&self.store, move |s| s.get_spec(&name, None)).await?;
            let spec = found.ok_or_else(|| Error::NotFound {
                kind: "spec",
                name: p.spec_name.clone(),
            })?;
            specs.insert(p.spec_name.clone(), spec_of(spec)?);
        }

        // Swarms joined: checked and grown under the lock their other
        // changes take, so max_agents holds against concurrent spawns.
        let joins_swarm = requests.iter().any(|p| !p.swarm_id.is_empty());
        let _writing = if joins_swarm {
            Some(self.agent_writes.every().await)
        } else {
            None
        };
        let mut swarms: HashMap<String, crate::agents::Swarm> = HashMap::new();
        for (i, p) in requests.iter().enumerate() {
            if p.swarm_id.is_empty() || replayed.contains_key(&i) {
                continue;
            }
            if !swarms.contains_key(&p.swarm_id) {
                let swarm = self.get_swarm(p.swarm_id.clone()).await?;
                if swarm.state != crate::agents::SwarmState::Active {
                    return Err(Error::WrongState(format!(
                        "swarm {} is dissolved and takes no agents",
                        swarm.id
                    )));
                }
                swarms.insert(swarm.id.clone(), swarm);
            }
        }

        let mut write = SpawnWrite {
            agents: Vec::new(),
            specs: specs
                .values()
                .map(|s| (s.name.clone(), s.version))
                .collect(),
            keys: Vec::new(),
            swarms: Vec::new(),
            events: Vec::new(),
        };
        let mut made: Vec<Vec<Agent>> = Vec::with_capacity(requests.len());
        let mut generator = ulid::Generator::new();
        for (i, p) in requests.iter().enumerate() {
            if replayed.contains_key(&i) {
                made.push(Vec::new());
                continue;
            }
            let spec = &specs[&p.spec_name];
            let mut agents = Vec::with_capacity(p.count as usize);
            for _ in 0..p.count {
                let id = generator
                    .generate()
                    .map_err(|e| Error::Internal(format!("agent id: {e}")))?
                    .to_string();
                let agent = Agent {
                    id,
                    spec_name: spec.name.clone(),
                    spec_version: spec.version,
                    swarm_id: p.swarm_id.clone(),
                    state: AgentState::Idle,
                    created_at_ms: now,
                    body: AgentBody {
                        kind: if spec.body.model.is_empty() {
                            AgentKind::Worker
                        } else {
                            AgentKind::Internal
                        },
                        labels: p.labels.clone(),
                        ..Default::default()
                    },
                };
                let mut event = new_event(
                    ActivityKind::AgentSpawned,
                    format!(
                        "agent {} spawned from spec {} v{}",
                        agent.id, spec.name, spec.version
                    ),
                );
                event.agent_id = agent.id.clone();
                event.spec_name = spec.name.clone();
                event.swarm_id = p.swarm_id.clone();
                event.details = json!({ "spec_version": spec.version }).to_string();
                write.events.push(event);
                write.agents.push(row_of(&agent));
                agents.push(agent);
            }
            if let Some(swarm) = swarms.get_mut(&p.swarm_id) {
                swarm
                    .body
                    .members
                    .extend(agents.iter().map(|a| a.id.clone()));
                if swarm.body.members.len() > swarm.body.max_agents as usize {
                    return Err(Error::WrongState(format!(
                        "{}swarm_id: swarm {} holds at most {} agents; this spawn would make {}",
                        path(i),
                        swarm.id,
                        swarm.body.max_agents,
                        swarm.body.members.len()
                    )));
                }
            }
            if !p.idempotency_key.is_empty() {
                let ids = agents.iter().map(|a| a.id.clone()).collect();
                write
                    .keys
                    .push((p.idempotency_key.clone(), fingerprint(p), ids));
            }
            made.push(agents);
        }

        write.swarms = swarms
            .values()
            .map(crate::agents::swarms::roster::swarm_row)
            .collect();
        if !write.agents.is_empty() {
            let forget_before = now - KEY_RETENTION_MS;
            match with_store(&self.store, move |s| s.spawn(&write, forget_before)).await? {
                Spawned::Created(events) => {
                    self.appended(&events);
                    {
                        let mut scheduler = crate::common::sync::lock(&self.scheduler);
                        for agent in made.iter().flatten() {
                            let spec = &specs[&agent.spec_name];
                            scheduler
                                .agents
                                .insert(agent.id.clone(), slot_of(agent, spec));
                        }
                        for swarm in swarms.values() {
                            if let Some(slot) = scheduler.swarms.get_mut(&swarm.id) {
                                slot.members = swarm.body.members.clone();
                            }
                        }
                    }
                    // Tasks waiting for a capability may have an agent now.
                    self.dispatch();
                }
                Spawned::SpecChanged(name) => {
                    return Err(Error::WrongState(format!(
                        "spec {name} was replaced or deleted during the spawn; nothing was \
                         spawned, try again"
                    )));
                }
            }
        }
        for (i, ids) in replayed {
            let mut agents = Vec::with_capacity(ids.len());
            for id in ids {
                agents.push(self.get_agent(id).await?);
            }
            made[i] = agents;
        }
        Ok(made)
    }

    /// One agent.
    pub async fn get_agent(&self, id: String) -> Result<Agent> {
        if id.is_empty() {
            return Err(Error::invalid("id", "must not be empty"));
        }
        let key = id.clone();
        let found = with_store(&self.store, move |s| s.get_agent(&key)).await?;
        agent_of(found.ok_or(Error::NotFound {
            kind: "agent",
            name: id,
        })?)
    }

    /// Agents in spawn order, filtered.
    pub async fn list_agents(
        &self,
        filter: AgentFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Agent>> {
        let limit = page::page_size(page_size);
        let after = page::cursor(page_token)?;
        let query = AgentQuery {
            spec_name: filter.spec_name,
            swarm_id: filter.swarm_id,
            state: filter
                .state
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
        };
        let rows = with_store(&self.store, move |s| {
            s.list_agents(&query, &after, limit + 1)
        })
        .await?;
        let agents = rows.into_iter().map(agent_of).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(agents, limit, |a| a.id.clone()))
    }

    /// Stops an agent (already stopped: unchanged). Its running tasks are
    /// cancelled (`cancel_tasks`) or go to another agent; a worker's stream
    /// is closed and it may not reattach.
    pub async fn stop_agent(&self, id: String, cancel_tasks: bool) -> Result<Agent> {
        let writing = self.agent_writes.every().await;
        let mut agent = self.get_agent(id).await?;
        if agent.state == AgentState::Stopped {
            if !agent.body.stopped_by_client {
                // Stopped when its worker went away: now for good.
                agent.body.stopped_by_client = true;
                let row = row_of(&agent);
                with_store(&self.store, move |s| s.update_agent(&row, Vec::new())).await?;
            }
            return Ok(agent);
        }
        agent.state = AgentState::Stopped;
        agent.body.stopped_by_client = true;
        let internal = agent.body.kind == AgentKind::Internal;
        let why = format!("agent {} stopped", agent.id);
        let running = {
            let mut scheduler = crate::common::sync::lock(&self.scheduler);
            if let Some(slot) = scheduler.agents.get_mut(&agent.id) {
                slot.stopped = true;
            }
            let running = scheduler
                .agents
                .get(&agent.id)
                .map(|s| s.running.clone())
                .unwrap_or_default();
            // Internal agents' runners read these when their queries end; a
            // worker's leases are ended below.
            for task in running.iter().filter(|_| internal) {
                if cancel_tasks {
                    scheduler.cancelled.insert(task.clone(), why.clone());
                } else {
                    scheduler.requeue.insert(task.clone());
                }
            }
            running
        };
        let mut event = new_event(ActivityKind::AgentStopped, why.clone());
        event.agent_id = agent.id.clone();
        event.spec_name = agent.spec_name.clone();
        event.swarm_id = agent.swarm_id.clone();
        let row = row_of(&agent);
        let events = with_store(&self.store, move |s| s.update_agent(&row, vec![event])).await?;
        self.appended(&events);
        drop(writing);
        if internal {
            // Their runners see the queries end and cancel or requeue them.
            if let Some(query) = &self.query {
                for task in running {
                    if let Ok(t) = self.load_task(&task).await
                        && !t.body.query_id.is_empty()
                    {
                        let _ = query.terminate(&t.body.query_id, why.clone()).await;
                    }
                }
            }
        } else {
            for task in running {
                let end = if cancel_tasks {
                    End::Cancelled(why.clone())
                } else {
                    End::Requeued(why.clone())
                };
                let _ = self
                    .end_lease(&task, &agent.id, 0, end, Some(why.clone()))
                    .await;
            }
            let link = crate::common::sync::lock(&self.workers)
                .links
                .remove(&agent.id);
            if let Some(outbox) = link.and_then(|l| l.outbox) {
                let _ = outbox.send(Err(Error::WrongState(format!(
                    "{why} by StopAgent: this worker may not reattach as it"
                ))));
            }
        }
        self.get_agent(agent.id).await
    }
}
