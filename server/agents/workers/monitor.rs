//! The workers' clock, ticking a few times per grace period: a worker
//! silent for the lease timeout becomes UNRESPONSIVE and loses its leases;
//! one whose stream stayed broken past the grace period loses its leases
//! and its agent stops (a worker may reattach to it later); a lease past
//! its task's timeout ends the task TIMED_OUT and tells the worker.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::agents::engine::{AgentEngine, agent_of, new_event, row_of};
use crate::agents::tasks::outcome::End;
use crate::agents::types::{ActivityKind, AgentState, TaskError, TaskErrorKind};
use crate::common::blocking::with_store;
use crate::common::sync::lock;
use crate::error::Result;

impl AgentEngine {
    /// Starts the clock; it runs until the handle is aborted.
    pub(crate) fn watch_workers(&self) -> tokio::task::JoinHandle<()> {
        let s = &self.settings;
        let period = (s.worker_grace.min(s.worker_lease_timeout) / 5)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                engine.check_workers().await;
            }
        })
    }

    async fn check_workers(&self) {
        let now = Instant::now();
        let timeout = self.settings.worker_lease_timeout;
        let (silent, lapsed, overdue) = {
            let mut workers = lock(&self.workers);
            let mut silent = Vec::new();
            let mut lapsed = Vec::new();
            for (agent, link) in workers.links.iter_mut() {
                if link.outbox.is_some() {
                    if !link.unresponsive && now.duration_since(link.last_heartbeat) > timeout {
                        link.unresponsive = true;
                        silent.push(agent.clone());
                    }
                } else if link.lapse_at.is_some_and(|at| at <= now) {
                    lapsed.push(agent.clone());
                }
            }
            for agent in &lapsed {
                workers.links.remove(agent);
            }
            let overdue: Vec<(String, String, u32)> = workers
                .leases
                .iter()
                .filter(|(_, l)| l.timeout_at <= now)
                .map(|(t, l)| (t.clone(), l.agent_id.clone(), l.attempt))
                .collect();
            (silent, lapsed, overdue)
        };
        for agent in silent {
            let why = format!("no heartbeat for {}", humantime::format_duration(timeout));
            self.worker_gone(&agent, AgentState::Unresponsive, &why)
                .await;
        }
        for agent in lapsed {
            let why = format!(
                "its worker's stream stayed closed for {}",
                humantime::format_duration(self.settings.worker_grace)
            );
            self.worker_gone(&agent, AgentState::Stopped, &why).await;
        }
        for (task, agent, attempt) in overdue {
            let error = TaskError {
                kind: TaskErrorKind::Timeout,
                message: format!("task {task} ran past its timeout on agent {agent}"),
            };
            let why = "the task's timeout elapsed".to_owned();
            let _ = self
                .end_lease(&task, &agent, attempt, End::Failed(error, false), Some(why))
                .await;
        }
    }

    /// Marks worker agent `agent_id` UNRESPONSIVE or STOPPED (`state`) for
    /// `why`, then hands its tasks on.
    async fn worker_gone(&self, agent_id: &str, state: AgentState, why: &str) {
        if let Some(slot) = lock(&self.scheduler).agents.get_mut(agent_id) {
            slot.online = false;
        }
        if let Err(e) = self.record_gone(agent_id, state, why).await {
            tracing::error!(agent = %agent_id, error = %e, "cannot record a lost worker");
        }
        self.lose_leases(agent_id, why).await;
    }

    async fn record_gone(&self, agent_id: &str, state: AgentState, why: &str) -> Result<()> {
        let _writing = self.agent_writes.agent(agent_id).await;
        let id = agent_id.to_owned();
        let Some(found) = with_store(&self.store, move |s| s.get_agent(&id)).await? else {
            return Ok(());
        };
        let mut agent = agent_of(found)?;
        if agent.state == AgentState::Stopped {
            return Ok(());
        }
        agent.state = state;
        let (kind, message) = match state {
            AgentState::Stopped => (
                ActivityKind::AgentStopped,
                format!("agent {agent_id} stopped: {why}"),
            ),
            _ => (
                ActivityKind::HeartbeatMissed,
                format!("agent {agent_id} is unresponsive: {why}; its tasks go to other agents"),
            ),
        };
        let mut event = new_event(kind, message);
        event.agent_id = agent_id.to_owned();
        event.spec_name = agent.spec_name.clone();
        event.swarm_id = agent.swarm_id.clone();
        event.details = json!({ "reason": why }).to_string();
        let row = row_of(&agent);
        let events = with_store(&self.store, move |s| s.update_agent(&row, vec![event])).await?;
        self.appended(&events);
        if state == AgentState::Stopped
            && let Some(slot) = lock(&self.scheduler).agents.get_mut(agent_id)
        {
            slot.stopped = true;
        }
        Ok(())
    }
}
