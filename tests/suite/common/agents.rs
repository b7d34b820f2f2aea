//! Helpers for AgentService tests: a client, spawning, submitting to an
//! agent, a capability or a swarm, and reading a task (now, or once it
//! reaches a state).

#![allow(dead_code)]

use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;

/// An AgentService client.
pub fn agents(channel: Channel) -> AgentServiceClient<Channel> {
    AgentServiceClient::new(channel)
}

/// Spawns `count` agents of `spec`.
pub async fn spawn(c: &mut AgentServiceClient<Channel>, spec: &str, count: u32) -> Vec<Agent> {
    c.spawn(SpawnRequest {
        spec_name: spec.into(),
        count,
        ..Default::default()
    })
    .await
    .expect("Spawn")
    .into_inner()
    .agents
}

/// Task `id` now.
pub async fn task(c: &mut AgentServiceClient<Channel>, id: &str) -> Task {
    c.get_task(GetTaskRequest { id: id.into() })
        .await
        .expect("GetTask")
        .into_inner()
        .task
        .expect("task set")
}

/// Task `id` once `ready` holds for it (within 10 s).
pub async fn task_when(
    c: &mut AgentServiceClient<Channel>,
    id: &str,
    ready: impl Fn(&Task) -> bool,
) -> Task {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = task(c, id).await;
        if ready(&t) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} did not get there within 10 s: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a task has ended (any state but pending and running).
pub fn ended(t: &Task) -> bool {
    ![TaskState::Pending as i32, TaskState::Running as i32].contains(&t.state)
}

/// A SubmitTask of `prompt` to `target`.
pub fn to(target: task_target::Target, prompt: &str) -> SubmitTaskRequest {
    SubmitTaskRequest {
        target: Some(TaskTarget {
            target: Some(target),
        }),
        prompt: prompt.into(),
        ..Default::default()
    }
}

/// A SubmitTask of `prompt` to agent `id`.
pub fn to_agent(id: &str, prompt: &str) -> SubmitTaskRequest {
    to(task_target::Target::AgentId(id.into()), prompt)
}

/// A SubmitTask of `prompt` to any agent with `capability`.
pub fn to_capability(capability: &str, prompt: &str) -> SubmitTaskRequest {
    to(task_target::Target::Capability(capability.into()), prompt)
}

/// A SubmitTask of `prompt` to swarm `id`.
pub fn to_swarm(id: &str, prompt: &str) -> SubmitTaskRequest {
    to(task_target::Target::SwarmId(id.into()), prompt)
}

/// Submits `r`; the task as recorded.
pub async fn submit(c: &mut AgentServiceClient<Channel>, r: SubmitTaskRequest) -> Task {
    c.submit_task(r)
        .await
        .expect("SubmitTask")
        .into_inner()
        .task
        .expect("task")
}
