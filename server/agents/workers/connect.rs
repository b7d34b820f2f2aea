//! A worker's stream: hello (a new worker agent, or a reattach that gets
//! its leases sent again), then heartbeats, checkpoints, progress, results
//! and failures, each report answered by an [`Ack`]; and the stream's end,
//! which starts the grace period of its leases.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;

use super::{Ack, Checkpoint, Directive, Link, Refusal, WorkerHello, WorkerMessage, WorkerSession};
use crate::agents::engine::{AgentEngine, agent_of, new_event, row_of, slot_of, spec_of};
use crate::agents::tasks::outcome::End;
use crate::agents::types::{
    ActivityKind, Agent, AgentBody, AgentKind, AgentState, TaskError, TaskErrorKind,
};
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::sync::lock;
use crate::error::{Error, Result, Violations};
use crate::store::{SpawnWrite, Spawned, TaskWrite};

/// Most tasks a worker may ask to run at once.
pub const MAX_CONCURRENT_TASKS: u32 = 1000;
/// Longest progress message, in bytes.
const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Largest checkpoint, as JSON.
const MAX_CHECKPOINT_BYTES: usize = 1 << 20;

fn check_hello(h: &WorkerHello) -> Result<()> {
    let mut v = Violations::new();
    if h.spec_name.is_empty() {
        v.add("hello.spec_name", "must name the spec the worker serves");
    }
    if h.max_concurrent_tasks > MAX_CONCURRENT_TASKS {
        v.add(
            "hello.max_concurrent_tasks",
            format!(
                "must be at most {MAX_CONCURRENT_TASKS}, got {}",
                h.max_concurrent_tasks
            ),
        );
    }
    if h.labels.len() > 32 {
        v.add("hello.labels", "must hold at most 32 labels");
    }
    v.finish()
}

impl AgentEngine {
    /// Attaches a worker: registers a new worker agent of `hello.spec_name`,
    /// or reattaches `hello.agent_id` (a newer stream replaces an older one,
    /// and the leases the agent still holds are sent again).
    pub async fn connect_worker(&self, hello: WorkerHello) -> Result<WorkerSession> {
        check_hello(&hello)?;
        let writing = self.agent_writes.every().await;
        let now = now_ms();
        let (agent, spec, events) = if hello.agent_id.is_empty() {
            self.register_worker(&hello, now).await?
        } else {
            self.reattach_worker(&hello, now).await?
        };
        drop(writing);
        self.appended(&events);

        let (outbox, directives) = mpsc::unbounded_channel();
        let settings = &self.settings;
        let (conn, held) = {
            let mut workers = lock(&self.workers);
            workers.last_conn += 1;
            let conn = workers.last_conn;
            let link = Link {
                conn,
                outbox: Some(outbox.clone()),
                last_heartbeat: Instant::now(),
                persisted_heartbeat: Instant::now(),
                lapse_at: None,
                unresponsive: false,
            };
            if let Some(old) = workers.links.insert(agent.id.clone(), link)
                && let Some(old) = old.outbox
            {
                let _ = old.send(Err(Error::Superseded(format!(
                    "a newer Work stream attached as agent {}",
                    agent.id
                ))));
            }
            let _ = outbox.send(Ok(Directive::Registered {
                agent_id: agent.id.clone(),
                heartbeat_interval: settings.worker_heartbeat_interval,
                lease_timeout: settings.worker_lease_timeout,
            }));
            let held: Vec<String> = workers
                .leases
                .iter()
                .filter(|(_, l)| l.agent_id == agent.id)
                .map(|(t, _)| t.clone())
                .collect();
            (conn, held)
        };
        for task_id in held {
            let task = self.load_task(&task_id).await?;
            let dependency_outputs = self.dependency_outputs(&task).await?;
            let _ = outbox.send(Ok(Directive::Assign {
                task: Box::new(task),
                dependency_outputs,
            }));
        }
        {
            let mut scheduler = lock(&self.scheduler);
            let slot = scheduler
                .agents
                .entry(agent.id.clone())
                .or_insert_with(|| slot_of(&agent, &spec));
            *slot = crate::agents::tasks::scheduler::Slot {
                running: std::mem::take(&mut slot.running),
                online: true,
                ..slot_of(&agent, &spec)
            };
        }
        self.dispatch();
        Ok(WorkerSession {
            agent,
            conn,
            directives,
        })
    }

    async fn register_worker(
        &self,
        hello: &WorkerHello,
        now: i64,
    ) -> Result<(Agent, crate::agents::Spec, Vec<crate::store::StoredEvent>)> {
        let name = hello.spec_name.clone();
        let found = with_store(&self.store, move |s| s.get_spec(&name, None)).await?;
        let spec = spec_of(found.ok_or_else(|| Error::NotFound {
            kind: "spec",
            name: hello.spec_name.clone(),
        })?)?;
        let agent = Agent {
            id: ulid::Ulid::new().to_string(),
            spec_name: spec.name.clone(),
            spec_version: spec.version,
            swarm_id: String::new(),
            state: AgentState::Idle,
            created_at_ms: now,
            body: AgentBody {
                kind: AgentKind::Worker,
                labels: hello.labels.clone(),
                last_heartbeat_at_ms: Some(now),
                max_concurrent_tasks: hello.max_concurrent_tasks,
                ..Default::default()
            },
        };
        let mut spawned = new_event(
            ActivityKind::AgentSpawned,
            format!(
                "worker agent {} registered for spec {} v{}",
                agent.id, spec.name, spec.version
            ),
        );
        spawned.agent_id = agent.id.clone();
        spawned.spec_name = spec.name.clone();
        spawned.details = json!({ "spec_version": spec.version, "worker": true }).to_string();
        let mut connected = new_event(
            ActivityKind::WorkerConnected,
            format!("a worker connected as agent {}", agent.id),
        );
        connected.agent_id = agent.id.clone();
        connected.spec_name = spec.name.clone();
        let write = SpawnWrite {
            agents: vec![row_of(&agent)],
            specs: vec![(spec.name.clone(), spec.version)],
            keys: Vec::new(),
            swarms: Vec::new(),
            events: vec![spawned, connected],
        };
        match with_store(&self.store, move |s| s.spawn(&write, i64::MIN)).await? {
            Spawned::Created(events) => Ok((agent, spec, events)),
            Spawned::SpecChanged(name) => Err(Error::WrongState(format!(
                "spec {name} was replaced or deleted while the worker registered; try again"
            ))),
        }
    }

    async fn reattach_worker(
        &self,
        hello: &WorkerHello,
        now: i64,
    ) -> Result<(Agent, crate::agents::Spec, Vec<crate::store::StoredEvent>)> {
        let id = hello.agent_id.clone();
        let found = with_store(&self.store, move |s| s.get_agent(&id)).await?;
        let mut agent = agent_of(found.ok_or_else(|| Error::NotFound {
            kind: "agent",
            name: hello.agent_id.clone(),
        })?)?;
        if agent.body.kind != AgentKind::Worker {
            return Err(Error::WrongState(format!(
                "agent {} is an internal agent: no worker can serve it",
                agent.id
            )));
        }
        if agent.spec_name != hello.spec_name {
            return Err(Error::invalid(
                "hello.spec_name",
                format!("agent {} serves spec {}", agent.id, agent.spec_name),
            ));
        }
        if agent.state == AgentState::Stopped && agent.body.stopped_by_client {
            return Err(Error::WrongState(format!(
                "agent {} was stopped by StopAgent; register a new worker agent",
                agent.id
            )));
        }
        agent.state = if agent.body.running_task_ids.is_empty() {
            AgentState::Idle
        } else {
            AgentState::Busy
        };
        agent.body.last_heartbeat_at_ms = Some(now);
        agent.body.max_concurrent_tasks = hello.max_concurrent_tasks;
        let mut event = new_event(
            ActivityKind::WorkerConnected,
            format!("a worker reattached as agent {}", agent.id),
        );
        event.agent_id = agent.id.clone();
        event.spec_name = agent.spec_name.clone();
        event.swarm_id = agent.swarm_id.clone();
        event.details = json!({ "reattached": true }).to_string();
        let row = row_of(&agent);
        let events = with_store(&self.store, move |s| s.update_agent(&row, vec![event])).await?;
        let (name, version) = (agent.spec_name.clone(), agent.spec_version);
        let spec = with_store(&self.store, move |s| s.get_spec(&name, Some(version))).await?;
        let spec = spec_of(spec.ok_or_else(|| {
            Error::Internal(format!("agent {}'s spec version is gone", agent.id))
        })?)?;
        Ok((agent, spec, events))
    }

    /// Handles one message of stream `conn` of worker `agent_id`. An error
    /// ends the stream.
    pub async fn worker_message(
        &self,
        agent_id: &str,
        conn: u64,
        msg: WorkerMessage,
    ) -> Result<()> {
        let outbox = {
            let workers = lock(&self.workers);
            match workers.links.get(agent_id) {
                Some(l) if l.conn == conn => l.outbox.clone(),
                _ => {
                    return Err(Error::Superseded(format!(
                        "this stream of agent {agent_id} was replaced or closed"
                    )));
                }
            }
        };
        let reply = |ack: Ack| {
            if let Some(outbox) = &outbox {
                let _ = outbox.send(Ok(Directive::Ack(ack)));
            }
        };
        match msg {
            WorkerMessage::Heartbeat(checkpoints) => {
                self.heartbeat(agent_id).await?;
                for c in checkpoints {
                    reply(self.checkpoint(agent_id, c).await?);
                }
            }
            WorkerMessage::Progress {
                task_id,
                attempt,
                fraction,
                message,
            } => reply(
                self.progress(agent_id, &task_id, attempt, fraction, message)
                    .await?,
            ),
            WorkerMessage::Result {
                task_id,
                attempt,
                output_text,
                output,
            } => {
                let end = End::Succeeded {
                    text: output_text,
                    output,
                };
                let done = self.end_lease(&task_id, agent_id, attempt, end, None).await;
                reply(ack("result", task_id, attempt, done));
            }
            WorkerMessage::Failure {
                task_id,
                attempt,
                message,
                retryable,
            } => {
                let error = TaskError {
                    kind: TaskErrorKind::Worker,
                    message,
                };
                let end = End::Failed(error, retryable);
                let done = self.end_lease(&task_id, agent_id, attempt, end, None).await;
                reply(ack("failure", task_id, attempt, done));
            }
        }
        Ok(())
    }

    /// A heartbeat: the worker is alive (again, if it was unresponsive).
    async fn heartbeat(&self, agent_id: &str) -> Result<()> {
        let every = self.settings.worker_heartbeat_interval / 2;
        let (revived, persist) = {
            let mut workers = lock(&self.workers);
            let Some(link) = workers.links.get_mut(agent_id) else {
                return Ok(());
            };
            link.last_heartbeat = Instant::now();
            let revived = std::mem::take(&mut link.unresponsive);
            let persist = revived || link.persisted_heartbeat.elapsed() >= every;
            if persist {
                link.persisted_heartbeat = Instant::now();
            }
            (revived, persist)
        };
        if !persist {
            return Ok(());
        }
        {
            let _writing = self.agent_writes.agent(agent_id).await;
            let id = agent_id.to_owned();
            let Some(found) = with_store(&self.store, move |s| s.get_agent(&id)).await? else {
                return Ok(());
            };
            let mut agent = agent_of(found)?;
            agent.body.last_heartbeat_at_ms = Some(now_ms());
            let mut events = Vec::new();
            if revived && agent.state == AgentState::Unresponsive {
                agent.state = if agent.body.running_task_ids.is_empty() {
                    AgentState::Idle
                } else {
                    AgentState::Busy
                };
                let mut event = new_event(
                    ActivityKind::WorkerConnected,
                    format!("the worker of agent {agent_id} heartbeats again"),
                );
                event.agent_id = agent_id.to_owned();
                event.spec_name = agent.spec_name.clone();
                event.swarm_id = agent.swarm_id.clone();
                event.details = json!({ "revived": true }).to_string();
                events.push(event);
            }
            let row = row_of(&agent);
            let events = with_store(&self.store, move |s| s.update_agent(&row, events)).await?;
            self.appended(&events);
        }
        if revived {
            if let Some(slot) = lock(&self.scheduler).agents.get_mut(agent_id) {
                slot.online = true;
            }
            self.dispatch();
        }
        Ok(())
    }

    /// Saves a checkpoint of a task the worker holds.
    async fn checkpoint(&self, agent_id: &str, c: Checkpoint) -> Result<Ack> {
        let Checkpoint {
            task_id,
            attempt,
            data,
        } = c;
        let size = serde_json::Value::Object(data.clone()).to_string().len();
        if size > MAX_CHECKPOINT_BYTES {
            return Ok(refused(
                "checkpoint",
                task_id,
                attempt,
                "data",
                format!("must be at most {MAX_CHECKPOINT_BYTES} bytes as JSON, got {size}"),
            ));
        }
        // Under the lock every task rewrite takes, so that the lease
        // checked is still the lease when the task is written.
        let _writing = self.agent_writes.agent(agent_id).await;
        let attempt = match lock(&self.workers).held(&task_id, agent_id, attempt) {
            Ok(a) => a,
            Err(r) => return Ok(ack("checkpoint", task_id, attempt, Err(r))),
        };
        let mut task = self.load_task(&task_id).await?;
        task.body.checkpoint = Some(data);
        let write = TaskWrite {
            task: crate::agents::engine::task_row(&task),
            agent: None,
            events: Vec::new(),
        };
        with_store(&self.store, move |s| s.save_task(&write)).await?;
        Ok(ack("checkpoint", task_id, attempt, Ok(attempt)))
    }

    /// Records progress on a task the worker holds.
    async fn progress(
        &self,
        agent_id: &str,
        task_id: &str,
        attempt: u32,
        fraction: f32,
        message: String,
    ) -> Result<Ack> {
        let task_id = task_id.to_owned();
        if !(0.0..=1.0).contains(&fraction) {
            return Ok(refused(
                "progress",
                task_id,
                attempt,
                "fraction",
                format!("must be 0 to 1, got {fraction}"),
            ));
        }
        if message.len() > MAX_PROGRESS_MESSAGE {
            return Ok(refused(
                "progress",
                task_id,
                attempt,
                "message",
                format!("must be at most {MAX_PROGRESS_MESSAGE} bytes"),
            ));
        }
        let _writing = self.agent_writes.agent(agent_id).await;
        let attempt = match lock(&self.workers).held(&task_id, agent_id, attempt) {
            Ok(a) => a,
            Err(r) => return Ok(ack("progress", task_id, attempt, Err(r))),
        };
        let mut task = self.load_task(&task_id).await?;
        task.body.progress = fraction;
        task.body.progress_message = message;
        let mut event = new_event(
            ActivityKind::TaskProgress,
            format!(
                "task {task_id} at {:.0}%: {}",
                fraction * 100.0,
                task.body.progress_message
            ),
        );
        event.task_id = task_id.clone();
        event.agent_id = agent_id.to_owned();
        event.details = json!({ "attempt": attempt, "fraction": fraction }).to_string();
        let write = TaskWrite {
            task: crate::agents::engine::task_row(&task),
            agent: None,
            events: vec![event],
        };
        let events = with_store(&self.store, move |s| s.save_task(&write)).await?;
        self.appended(&events);
        Ok(ack("progress", task_id, attempt, Ok(attempt)))
    }

    /// Stream `conn` of worker `agent_id` ended: its leases wait out the
    /// grace period for it to reconnect.
    pub async fn worker_detached(&self, agent_id: &str, conn: u64) {
        let grace = self.settings.worker_grace;
        let ours = {
            let mut workers = lock(&self.workers);
            match workers.links.get_mut(agent_id) {
                Some(l) if l.conn == conn && l.outbox.is_some() => {
                    l.outbox = None;
                    l.lapse_at = Some(Instant::now() + grace);
                    true
                }
                _ => false,
            }
        };
        if !ours {
            return;
        }
        if let Some(slot) = lock(&self.scheduler).agents.get_mut(agent_id) {
            slot.online = false;
        }
        let result: Result<()> = async {
            let id = agent_id.to_owned();
            let Some(found) = with_store(&self.store, move |s| s.get_agent(&id)).await? else {
                return Ok(());
            };
            let agent = agent_of(found)?;
            let mut event = new_event(
                ActivityKind::WorkerDisconnected,
                format!(
                    "the worker of agent {agent_id} disconnected; its leases last {}",
                    humantime::format_duration(grace)
                ),
            );
            event.agent_id = agent_id.to_owned();
            event.spec_name = agent.spec_name.clone();
            event.swarm_id = agent.swarm_id.clone();
            event.details = json!({ "grace_ms": grace.as_millis() as u64 }).to_string();
            let row = row_of(&agent);
            let events =
                with_store(&self.store, move |s| s.update_agent(&row, vec![event])).await?;
            self.appended(&events);
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(agent = %agent_id, error = %e, "cannot record a worker's disconnection");
        }
    }

    /// Outputs of `task`'s dependencies, by task id.
    pub(crate) async fn dependency_outputs(
        &self,
        task: &crate::agents::Task,
    ) -> Result<BTreeMap<String, String>> {
        let mut outputs = BTreeMap::new();
        for id in &task.body.depends_on {
            let dep = self.load_task(id).await?;
            outputs.insert(id.clone(), dep.body.output_text);
        }
        Ok(outputs)
    }
}

/// The answer to a report: accepted for `done`'s attempt, or refused with
/// the field at fault under `of`.
fn ack(
    of: &'static str,
    task_id: String,
    attempt: u32,
    done: std::result::Result<u32, Refusal>,
) -> Ack {
    match done {
        Ok(attempt) => Ack {
            task_id,
            attempt,
            accepted: true,
            reason: String::new(),
            of,
        },
        Err(r) => refused(of, task_id, attempt, r.field, r.why),
    }
}

fn refused(of: &'static str, task_id: String, attempt: u32, field: &str, why: String) -> Ack {
    Ack {
        task_id,
        attempt,
        accepted: false,
        reason: format!("{of}.{field}: {why}"),
        of,
    }
}
