//! `agentd.v1.AgentService`.
//!
//! The agents engine (`server/agents`) is not built yet, so every RPC answers
//! UNIMPLEMENTED naming it.

use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, not_built};
use crate::error::Engine;
use crate::pb::v1::agent_service_server::{AgentService, AgentServiceServer};
use crate::pb::v1::{
    CancelTaskRequest, CancelTaskResponse, CreateSwarmRequest, CreateSwarmResponse,
    DeleteSpecRequest, DeleteSpecResponse, DissolveSwarmRequest, DissolveSwarmResponse,
    GetAgentRequest, GetAgentResponse, GetSpecRequest, GetSpecResponse, GetSwarmRequest,
    GetSwarmResponse, GetTaskRequest, GetTaskResponse, ListAgentsRequest, ListAgentsResponse,
    ListEventsRequest, ListEventsResponse, ListSpecsRequest, ListSpecsResponse, ListSwarmsRequest,
    ListSwarmsResponse, ListTasksRequest, ListTasksResponse, RegisterSpecRequest,
    RegisterSpecResponse, SpawnBatchRequest, SpawnBatchResponse, SpawnRequest, SpawnResponse,
    StopAgentRequest, StopAgentResponse, SubmitTaskRequest, SubmitTaskResponse, WatchEventsRequest,
    WatchEventsResponse, WatchTaskRequest, WatchTaskResponse, WorkRequest, WorkResponse,
};

type Server = AgentServiceServer<AgentApi>;
const ENGINE: Engine = Engine::Agents;

/// The AgentService handlers.
#[derive(Debug, Default, Clone)]
pub struct AgentApi {}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register_spec(
        &self,
        _: Request<RegisterSpecRequest>,
    ) -> Result<Response<RegisterSpecResponse>, Status> {
        not_built::<Server, _>(ENGINE, "RegisterSpec")
    }

    async fn get_spec(
        &self,
        _: Request<GetSpecRequest>,
    ) -> Result<Response<GetSpecResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetSpec")
    }

    async fn list_specs(
        &self,
        _: Request<ListSpecsRequest>,
    ) -> Result<Response<ListSpecsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListSpecs")
    }

    async fn delete_spec(
        &self,
        _: Request<DeleteSpecRequest>,
    ) -> Result<Response<DeleteSpecResponse>, Status> {
        not_built::<Server, _>(ENGINE, "DeleteSpec")
    }

    async fn spawn(&self, _: Request<SpawnRequest>) -> Result<Response<SpawnResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Spawn")
    }

    async fn spawn_batch(
        &self,
        _: Request<SpawnBatchRequest>,
    ) -> Result<Response<SpawnBatchResponse>, Status> {
        not_built::<Server, _>(ENGINE, "SpawnBatch")
    }

    async fn get_agent(
        &self,
        _: Request<GetAgentRequest>,
    ) -> Result<Response<GetAgentResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetAgent")
    }

    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListAgents")
    }

    async fn stop_agent(
        &self,
        _: Request<StopAgentRequest>,
    ) -> Result<Response<StopAgentResponse>, Status> {
        not_built::<Server, _>(ENGINE, "StopAgent")
    }

    async fn create_swarm(
        &self,
        _: Request<CreateSwarmRequest>,
    ) -> Result<Response<CreateSwarmResponse>, Status> {
        not_built::<Server, _>(ENGINE, "CreateSwarm")
    }

    async fn get_swarm(
        &self,
        _: Request<GetSwarmRequest>,
    ) -> Result<Response<GetSwarmResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetSwarm")
    }

    async fn list_swarms(
        &self,
        _: Request<ListSwarmsRequest>,
    ) -> Result<Response<ListSwarmsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListSwarms")
    }

    async fn dissolve_swarm(
        &self,
        _: Request<DissolveSwarmRequest>,
    ) -> Result<Response<DissolveSwarmResponse>, Status> {
        not_built::<Server, _>(ENGINE, "DissolveSwarm")
    }

    async fn submit_task(
        &self,
        _: Request<SubmitTaskRequest>,
    ) -> Result<Response<SubmitTaskResponse>, Status> {
        not_built::<Server, _>(ENGINE, "SubmitTask")
    }

    async fn get_task(
        &self,
        _: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetTask")
    }

    async fn list_tasks(
        &self,
        _: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListTasks")
    }

    async fn cancel_task(
        &self,
        _: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        not_built::<Server, _>(ENGINE, "CancelTask")
    }

    type WatchTaskStream = ResponseStream<WatchTaskResponse>;

    async fn watch_task(
        &self,
        _: Request<WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        not_built::<Server, _>(ENGINE, "WatchTask")
    }

    type WorkStream = ResponseStream<WorkResponse>;

    async fn work(
        &self,
        _: Request<Streaming<WorkRequest>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        not_built::<Server, _>(ENGINE, "Work")
    }

    type WatchEventsStream = ResponseStream<WatchEventsResponse>;

    async fn watch_events(
        &self,
        _: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        not_built::<Server, _>(ENGINE, "WatchEvents")
    }

    async fn list_events(
        &self,
        _: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListEvents")
    }
}
