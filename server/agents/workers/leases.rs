//! Leases: a task granted to a worker (recorded RUNNING with its attempt,
//! then pushed down the worker's stream) and ended exactly once.

use std::time::{Duration, Instant};

use super::{Directive, Lease, Refusal};
use crate::agents::engine::AgentEngine;
use crate::agents::tasks::outcome::End;
use crate::common::sync::lock;
use crate::error::Result;
use crate::query::TokenUsage;

impl AgentEngine {
    /// Grants `task_id` to the worker of `agent_id` (already counted as
    /// running there by the scheduler).
    pub(crate) async fn lease(self, task_id: String, agent_id: String) {
        if let Err(e) = self.grant(&task_id, &agent_id).await {
            // Nothing was leased: the task waits for the next agent.
            tracing::error!(task = %task_id, agent = %agent_id, error = %e, "cannot lease a task");
            let requeue = self.load_task(&task_id).await.ok();
            let mut scheduler = lock(&self.scheduler);
            scheduler.release(&agent_id, &task_id);
            if let Some(task) = requeue.filter(|t| !t.state.is_finished()) {
                let route = task.body.route();
                scheduler.enqueue(task.id, task.body.priority, route);
            }
        }
    }

    async fn grant(&self, task_id: &str, agent_id: &str) -> Result<()> {
        let Some((task, _)) = self.mark_running(task_id, agent_id, "").await? else {
            // Cancelled while it waited to be picked up.
            lock(&self.scheduler).release(agent_id, task_id);
            self.dispatch();
            return Ok(());
        };
        let dependency_outputs = self.dependency_outputs(&task).await?;
        {
            let mut workers = lock(&self.workers);
            workers.leases.insert(
                task_id.to_owned(),
                Lease {
                    agent_id: agent_id.to_owned(),
                    attempt: task.body.attempt,
                    timeout_at: Instant::now() + Duration::from_millis(task.body.timeout_ms),
                },
            );
            workers.send(
                agent_id,
                Directive::Assign {
                    task: Box::new(task),
                    dependency_outputs,
                },
            );
        }
        // A CancelTask that came while the lease was granted found no lease
        // to end; it left its reason for this check.
        let cancelled = lock(&self.scheduler).cancelled.get(task_id).cloned();
        if let Some(reason) = cancelled {
            let _ = self
                .end_lease(
                    task_id,
                    agent_id,
                    0,
                    End::Cancelled(reason.clone()),
                    Some(reason),
                )
                .await;
        }
        Ok(())
    }

    /// Ends the lease `agent_id` holds on `task_id` (`attempt` 0: whichever
    /// it holds) with `end`: takes it out, tells the worker to stop when
    /// `cancel` gives a reason, records the end and frees the agent's
    /// place. The lease's attempt, or why there was no such lease (another
    /// path ended it first, and recorded its own end).
    pub(crate) async fn end_lease(
        &self,
        task_id: &str,
        agent_id: &str,
        attempt: u32,
        end: End,
        cancel: Option<String>,
    ) -> std::result::Result<u32, Refusal> {
        // Taken first: from here on the worker's reports are refused.
        let lease = lock(&self.workers).take(task_id, agent_id, attempt)?;
        if let Err(e) = self
            .record_end(task_id, agent_id, end, TokenUsage::default(), 0.0)
            .await
        {
            tracing::error!(task = %task_id, error = %e, "cannot record the end of a lease");
        }
        // Told once the end is recorded, so what it reads back agrees.
        if let Some(reason) = cancel {
            lock(&self.workers).send(
                agent_id,
                Directive::Cancel {
                    task_id: task_id.to_owned(),
                    reason,
                },
            );
        }
        lock(&self.scheduler).release(agent_id, task_id);
        self.dispatch();
        Ok(lease.attempt)
    }

    /// Ends every lease of `agent_id` as lost (`why`): each task goes to
    /// another agent as its next attempt, or fails on its last.
    pub(crate) async fn lose_leases(&self, agent_id: &str, why: &str) {
        let tasks: Vec<String> = lock(&self.workers)
            .leases
            .iter()
            .filter(|(_, l)| l.agent_id == agent_id)
            .map(|(t, _)| t.clone())
            .collect();
        for task in tasks {
            let end = End::Lost(why.to_owned());
            let _ = self
                .end_lease(&task, agent_id, 0, end, Some(why.to_owned()))
                .await;
        }
    }
}
