//! Helpers for AgentService tests: a client, spawning, and reading a task
//! (now, or once it reaches a state).

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
