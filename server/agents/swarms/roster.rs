//! CreateSwarm, GetSwarm, ListSwarms, DissolveSwarm.

use std::collections::HashSet;

use serde_json::json;

use crate::agents::engine::{AgentEngine, agent_of, new_event, row_of};
use crate::agents::tasks::scheduler::SwarmSlot;
use crate::agents::types::{
    ActivityKind, AgentState, Swarm, SwarmBody, SwarmParams, SwarmState, TaskState, TaskTarget,
};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{self, Page};
use crate::common::sync::lock;
use crate::error::{Error, Result, Violations};
use crate::store::{StoredSwarm, Submitted, SwarmWrite};

/// Most members of a swarm.
pub const MAX_SWARM_AGENTS: u32 = 10_000;
/// Most RING rounds.
pub const MAX_ROUNDS: u32 = 10;
const KEY_RETENTION_MS: i64 = 24 * 3600 * 1000;

fn unreadable(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored swarm is unreadable: {e}"))
}

/// A swarm from its row.
pub(crate) fn swarm_of(s: StoredSwarm) -> Result<Swarm> {
    Ok(Swarm {
        state: SwarmState::parse(&s.state).ok_or_else(|| unreadable(&s.state))?,
        body: serde_json::from_str(&s.body).map_err(unreadable)?,
        id: s.id,
        created_at_ms: s.created_at,
    })
}

/// The row of a swarm.
pub(crate) fn swarm_row(s: &Swarm) -> StoredSwarm {
    StoredSwarm {
        id: s.id.clone(),
        state: s.state.as_str().to_owned(),
        created_at: s.created_at_ms,
        body: serde_json::to_string(&s.body).unwrap_or_default(),
    }
}

/// What the scheduler needs of a swarm.
pub(crate) fn swarm_slot(s: &Swarm) -> SwarmSlot {
    SwarmSlot {
        members: s.body.members.clone(),
        routing: s.body.routing,
        next: 0,
    }
}

fn fingerprint(p: &SwarmParams) -> String {
    json!({
        "name": p.name,
        "topology": format!("{:?}", p.topology),
        "max_agents": p.max_agents,
        "routing": format!("{:?}", p.routing),
        "member_ids": p.member_ids,
        "labels": p.labels,
        "max_rounds": p.max_rounds,
    })
    .to_string()
}

fn check(p: &SwarmParams) -> Result<()> {
    let mut v = Violations::new();
    if p.name.len() > 128 {
        v.add("name", "must be at most 128 bytes");
    }
    if p.topology.is_none() {
        v.add("topology", "must be HIERARCHICAL, MESH, RING or STAR");
    }
    if p.max_agents == 0 || p.max_agents > MAX_SWARM_AGENTS {
        v.add(
            "max_agents",
            format!("must be 1 to {MAX_SWARM_AGENTS}, got {}", p.max_agents),
        );
    } else if p.member_ids.len() > p.max_agents as usize {
        v.add(
            "member_ids",
            format!(
                "holds {} agents, more than max_agents {}",
                p.member_ids.len(),
                p.max_agents
            ),
        );
    }
    if p.max_rounds > MAX_ROUNDS {
        v.add(
            "max_rounds",
            format!("must be at most {MAX_ROUNDS}, got {}", p.max_rounds),
        );
    }
    if p.idempotency_key.len() > 128 {
        v.add("idempotency_key", "must be at most 128 bytes");
    }
    if p.labels.len() > 32 {
        v.add("labels", "must hold at most 32 labels");
    }
    let mut seen = HashSet::new();
    for (i, m) in p.member_ids.iter().enumerate() {
        if !seen.insert(m) {
            v.add(format!("member_ids[{i}]"), "repeats an earlier member");
        }
    }
    v.finish()
}

impl AgentEngine {
    /// Creates a swarm with existing agents as members (fields as
    /// CreateSwarmRequest's).
    pub async fn create_swarm(&self, p: SwarmParams) -> Result<Swarm> {
        check(&p)?;
        let _writing = self.agent_writes.every().await;
        // A retry answers with the first swarm (whose members are taken by
        // now, so before they are checked).
        if !p.idempotency_key.is_empty() {
            let key = p.idempotency_key.clone();
            let since = now_ms() - KEY_RETENTION_MS;
            if let Some((id, print)) =
                with_store(&self.store, move |s| s.swarm_key(&key, since)).await?
            {
                if print != fingerprint(&p) {
                    return Err(Error::invalid(
                        "idempotency_key",
                        "was used for a different swarm within 24 hours",
                    ));
                }
                return self.get_swarm(id).await;
            }
        }
        let mut agents = Vec::with_capacity(p.member_ids.len());
        let mut v = Violations::new();
        for (i, id) in p.member_ids.iter().enumerate() {
            let key = id.clone();
            let Some(found) = with_store(&self.store, move |s| s.get_agent(&key)).await? else {
                v.add(
                    format!("member_ids[{i}]"),
                    format!("no agent has the id {id:?}"),
                );
                continue;
            };
            let agent = agent_of(found)?;
            if agent.state == AgentState::Stopped {
                v.add(format!("member_ids[{i}]"), format!("agent {id} is stopped"));
            } else if !agent.swarm_id.is_empty() {
                v.add(
                    format!("member_ids[{i}]"),
                    format!("agent {id} belongs to swarm {}", agent.swarm_id),
                );
            }
            agents.push(agent);
        }
        v.finish()?;
        let now = now_ms();
        let swarm = Swarm {
            id: ulid::Ulid::new().to_string(),
            state: SwarmState::Active,
            created_at_ms: now,
            body: SwarmBody {
                name: p.name.clone(),
                topology: p.topology.unwrap_or_default(),
                max_agents: p.max_agents,
                routing: p.routing,
                members: p.member_ids.clone(),
                labels: p.labels.clone(),
                max_rounds: p.max_rounds.max(1),
            },
        };
        for agent in &mut agents {
            agent.swarm_id = swarm.id.clone();
        }
        let mut event = new_event(
            ActivityKind::SwarmCreated,
            format!(
                "swarm {} ({:?}, {} members) created",
                swarm.id,
                swarm.body.topology,
                agents.len()
            ),
        );
        event.swarm_id = swarm.id.clone();
        event.details = json!({ "members": swarm.body.members }).to_string();
        let write = SwarmWrite {
            swarm: swarm_row(&swarm),
            agents: agents.iter().map(row_of).collect(),
            events: vec![event],
        };
        let key =
            (!p.idempotency_key.is_empty()).then(|| (p.idempotency_key.clone(), fingerprint(&p)));
        let since = now - KEY_RETENTION_MS;
        let created = with_store(&self.store, move |s| {
            s.create_swarm(
                &write,
                key.as_ref().map(|(k, f)| (k.as_str(), f.as_str())),
                since,
            )
        })
        .await?;
        match created {
            Submitted::Created(events) => {
                self.appended(&events);
                lock(&self.scheduler)
                    .swarms
                    .insert(swarm.id.clone(), swarm_slot(&swarm));
                Ok(swarm)
            }
            Submitted::Existing(ids, print) => {
                if print != fingerprint(&p) {
                    return Err(Error::invalid(
                        "idempotency_key",
                        "was used for a different swarm within 24 hours",
                    ));
                }
                self.get_swarm(ids.into_iter().next().unwrap_or_default())
                    .await
            }
        }
    }

    /// One swarm.
    pub async fn get_swarm(&self, id: String) -> Result<Swarm> {
        if id.is_empty() {
            return Err(Error::invalid("id", "must not be empty"));
        }
        let key = id.clone();
        let found = with_store(&self.store, move |s| s.get_swarm(&key)).await?;
        swarm_of(found.ok_or(Error::NotFound {
            kind: "swarm",
            name: id,
        })?)
    }

    /// Swarms in creation order.
    pub async fn list_swarms(
        &self,
        include_dissolved: bool,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Swarm>> {
        let limit = page::page_size(page_size);
        let after = page::cursor(page_token)?;
        let rows = with_store(&self.store, move |s| {
            s.list_swarms(include_dissolved, &after, limit + 1)
        })
        .await?;
        let swarms = rows.into_iter().map(swarm_of).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(swarms, limit, |s| s.id.clone()))
    }

    /// Dissolves a swarm: its pending tasks are cancelled, its members
    /// freed (or stopped, with `stop_agents`). Already dissolved:
    /// unchanged.
    pub async fn dissolve_swarm(&self, id: String, stop_agents: bool) -> Result<Swarm> {
        let mut swarm = self.get_swarm(id.clone()).await?;
        if swarm.state == SwarmState::Dissolved {
            return Ok(swarm);
        }
        // No new task is routed to it from now on.
        lock(&self.scheduler).swarms.remove(&id);
        let unfinished = with_store(&self.store, |s| s.unfinished_tasks()).await?;
        let reason = format!("swarm {id} was dissolved");
        for row in unfinished {
            if row.state != TaskState::Pending.as_str() {
                continue;
            }
            let task = crate::agents::engine::task_of(row)?;
            if task.body.target == TaskTarget::Swarm(id.clone()) {
                self.cancel_task(task.id, reason.clone()).await?;
            }
        }
        if stop_agents {
            for member in &swarm.body.members {
                self.stop_agent(member.clone(), false).await?;
            }
        }
        let _writing = self.agent_writes.every().await;
        let mut agents = Vec::new();
        for member in &swarm.body.members {
            let key = member.clone();
            if let Some(found) = with_store(&self.store, move |s| s.get_agent(&key)).await? {
                let mut agent = agent_of(found)?;
                if agent.swarm_id == id {
                    agent.swarm_id.clear();
                    agents.push(agent);
                }
            }
        }
        swarm.state = SwarmState::Dissolved;
        let mut event = new_event(
            ActivityKind::SwarmDissolved,
            format!(
                "swarm {id} dissolved; its members are {}",
                if stop_agents {
                    "stopped"
                } else {
                    "free agents"
                }
            ),
        );
        event.swarm_id = id.clone();
        event.details = json!({ "stop_agents": stop_agents }).to_string();
        let write = SwarmWrite {
            swarm: swarm_row(&swarm),
            agents: agents.iter().map(row_of).collect(),
            events: vec![event],
        };
        let events = with_store(&self.store, move |s| s.save_swarm(&write)).await?;
        self.appended(&events);
        Ok(swarm)
    }
}
