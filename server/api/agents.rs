//! `agentd.v1.AgentService`: convert, call the agents engine, convert back
//! (conversions in [`super::convert::agents`]).
//!
//! Every RPC of the contract is served.

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::ResponseStream;
use super::convert::agents::{agent_filter, spec_from, task_state_filter};
use super::convert::workers::worker_message;
use super::rpc::Rpc;
use crate::agents::{
    ActivityFilter, AgentEngine, GraphNode, SpawnParams, SubmitParams, SwarmParams, WorkerHello,
};
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::pb::v1::agent_service_server::AgentService;
use crate::pb::v1::{WorkRequest, WorkResponse, work_request};

/// The AgentService handlers.
#[derive(Debug, Clone)]
pub struct AgentApi {
    engine: AgentEngine,
}

impl AgentApi {
    /// Serves `engine`.
    pub fn new(engine: AgentEngine) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register_spec(
        &self,
        request: Request<pb::RegisterSpecRequest>,
    ) -> Result<Response<pb::RegisterSpecResponse>, Status> {
        let pb::RegisterSpecRequest { spec } = request.into_inner();
        let spec = spec.unwrap_or_default();
        let rpc = Rpc::about("spec", &spec.name);
        rpc.unary(
            async {
                let (name, body) = spec_from(spec)?;
                let registered = self.engine.register_spec(name, body).await?;
                Ok(pb::RegisterSpecResponse {
                    spec: Some(registered.spec.into()),
                    created: registered.created,
                })
            }
            .await,
        )
    }

    async fn get_spec(
        &self,
        request: Request<pb::GetSpecRequest>,
    ) -> Result<Response<pb::GetSpecResponse>, Status> {
        let pb::GetSpecRequest { name } = request.into_inner();
        let rpc = Rpc::about("spec", &name);
        rpc.unary(
            async {
                let spec = self.engine.get_spec(name).await?;
                Ok(pb::GetSpecResponse {
                    spec: Some(spec.into()),
                })
            }
            .await,
        )
    }

    async fn list_specs(
        &self,
        request: Request<pb::ListSpecsRequest>,
    ) -> Result<Response<pb::ListSpecsResponse>, Status> {
        let pb::ListSpecsRequest {
            capability,
            page_size,
            page_token,
        } = request.into_inner();
        Rpc::begin().unary(
            async {
                let page = self
                    .engine
                    .list_specs(capability, page_size as usize, &page_token)
                    .await?;
                Ok(pb::ListSpecsResponse {
                    specs: page.items.into_iter().map(Into::into).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn delete_spec(
        &self,
        request: Request<pb::DeleteSpecRequest>,
    ) -> Result<Response<pb::DeleteSpecResponse>, Status> {
        let pb::DeleteSpecRequest { name } = request.into_inner();
        let rpc = Rpc::about("spec", &name);
        rpc.unary(
            async {
                let deleted = self.engine.delete_spec(name).await?;
                Ok(pb::DeleteSpecResponse { deleted })
            }
            .await,
        )
    }

    async fn spawn(
        &self,
        request: Request<pb::SpawnRequest>,
    ) -> Result<Response<pb::SpawnResponse>, Status> {
        let params = SpawnParams::from(request.into_inner());
        let rpc = Rpc::about("spec", &params.spec_name);
        rpc.unary(
            async {
                let agents = self.engine.spawn(params).await?;
                Ok(pb::SpawnResponse {
                    agents: agents.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn spawn_batch(
        &self,
        request: Request<pb::SpawnBatchRequest>,
    ) -> Result<Response<pb::SpawnBatchResponse>, Status> {
        let pb::SpawnBatchRequest { requests } = request.into_inner();
        let params = requests.into_iter().map(SpawnParams::from).collect();
        Rpc::begin().unary(
            async {
                let made = self.engine.spawn_batch(params, "requests").await?;
                Ok(pb::SpawnBatchResponse {
                    results: made
                        .into_iter()
                        .map(|agents| pb::SpawnResponse {
                            agents: agents.into_iter().map(Into::into).collect(),
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let pb::GetAgentRequest { id } = request.into_inner();
        let rpc = Rpc::about("agent", &id);
        rpc.unary(
            async {
                let agent = self.engine.get_agent(id).await?;
                Ok(pb::GetAgentResponse {
                    agent: Some(agent.into()),
                })
            }
            .await,
        )
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let pb::ListAgentsRequest {
            spec_name,
            swarm_id,
            state,
            page_size,
            page_token,
        } = request.into_inner();
        Rpc::begin().unary(
            async {
                let filter = agent_filter(spec_name, swarm_id, state)?;
                let page = self
                    .engine
                    .list_agents(filter, page_size as usize, &page_token)
                    .await?;
                Ok(pb::ListAgentsResponse {
                    agents: page.items.into_iter().map(Into::into).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn stop_agent(
        &self,
        request: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::StopAgentResponse>, Status> {
        let pb::StopAgentRequest { id, cancel_tasks } = request.into_inner();
        let rpc = Rpc::about("agent", &id);
        rpc.unary(
            async {
                let agent = self.engine.stop_agent(id, cancel_tasks).await?;
                Ok(pb::StopAgentResponse {
                    agent: Some(agent.into()),
                })
            }
            .await,
        )
    }

    async fn create_swarm(
        &self,
        request: Request<pb::CreateSwarmRequest>,
    ) -> Result<Response<pb::CreateSwarmResponse>, Status> {
        let request = request.into_inner();
        Rpc::begin().unary(
            async {
                let swarm = self
                    .engine
                    .create_swarm(SwarmParams::try_from(request)?)
                    .await?;
                Ok(pb::CreateSwarmResponse {
                    swarm: Some(swarm.into()),
                })
            }
            .await,
        )
    }

    async fn get_swarm(
        &self,
        request: Request<pb::GetSwarmRequest>,
    ) -> Result<Response<pb::GetSwarmResponse>, Status> {
        let pb::GetSwarmRequest { id } = request.into_inner();
        let rpc = Rpc::about("swarm", &id);
        rpc.unary(
            async {
                let swarm = self.engine.get_swarm(id).await?;
                Ok(pb::GetSwarmResponse {
                    swarm: Some(swarm.into()),
                })
            }
            .await,
        )
    }

    async fn list_swarms(
        &self,
        request: Request<pb::ListSwarmsRequest>,
    ) -> Result<Response<pb::ListSwarmsResponse>, Status> {
        let pb::ListSwarmsRequest {
            include_dissolved,
            page_size,
            page_token,
        } = request.into_inner();
        Rpc::begin().unary(
            async {
                let page = self
                    .engine
                    .list_swarms(include_dissolved, page_size as usize, &page_token)
                    .await?;
                Ok(pb::ListSwarmsResponse {
                    swarms: page.items.into_iter().map(Into::into).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn dissolve_swarm(
        &self,
        request: Request<pb::DissolveSwarmRequest>,
    ) -> Result<Response<pb::DissolveSwarmResponse>, Status> {
        let pb::DissolveSwarmRequest { id, stop_agents } = request.into_inner();
        let rpc = Rpc::about("swarm", &id);
        rpc.unary(
            async {
                let swarm = self.engine.dissolve_swarm(id, stop_agents).await?;
                Ok(pb::DissolveSwarmResponse {
                    swarm: Some(swarm.into()),
                })
            }
            .await,
        )
    }

    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::SubmitTaskResponse>, Status> {
        let request = request.into_inner();
        Rpc::begin().unary(
            async {
                let params = SubmitParams::try_from(request)?;
                let task = self.engine.submit_task(params).await?;
                Ok(pb::SubmitTaskResponse {
                    task: Some(task.into()),
                })
            }
            .await,
        )
    }

    async fn submit_task_graph(
        &self,
        request: Request<pb::SubmitTaskGraphRequest>,
    ) -> Result<Response<pb::SubmitTaskGraphResponse>, Status> {
        let pb::SubmitTaskGraphRequest {
            nodes,
            idempotency_key,
        } = request.into_inner();
        Rpc::begin().unary(
            async {
                let nodes = nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        GraphNode::try_from(n).map_err(|e| e.within(&format!("nodes[{i}]")))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let tasks = self
                    .engine
                    .submit_task_graph(nodes, idempotency_key)
                    .await?;
                Ok(pb::SubmitTaskGraphResponse {
                    tasks: tasks.into_iter().map(Into::into).collect(),
                })
            }
            .await,
        )
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let pb::GetTaskRequest { id } = request.into_inner();
        let rpc = Rpc::about("task", &id);
        rpc.unary(
            async {
                let task = self.engine.get_task(id).await?;
                Ok(pb::GetTaskResponse {
                    task: Some(task.into()),
                })
            }
            .await,
        )
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let pb::ListTasksRequest {
            state,
            agent_id,
            page_size,
            page_token,
        } = request.into_inner();
        Rpc::begin().unary(
            async {
                let state = task_state_filter(state)?;
                let page = self
                    .engine
                    .list_tasks(state, agent_id, page_size as usize, &page_token)
                    .await?;
                Ok(pb::ListTasksResponse {
                    tasks: page.items.into_iter().map(Into::into).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let pb::CancelTaskRequest { id, reason } = request.into_inner();
        let rpc = Rpc::about("task", &id);
        rpc.unary(
            async {
                let task = self.engine.cancel_task(id, reason).await?;
                Ok(pb::CancelTaskResponse {
                    task: Some(task.into()),
                })
            }
            .await,
        )
    }

    type WatchTaskStream = ResponseStream<pb::WatchTaskResponse>;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let pb::WatchTaskRequest { id } = request.into_inner();
        let rpc = Rpc::about("task", &id);
        let updates = match self.engine.watch_task(id).await {
            Ok(updates) => updates,
            Err(e) => return rpc.unary(Err(e.into())),
        };
        let updates = updates.map(|t| {
            t.map(|task| pb::WatchTaskResponse {
                task: Some(task.into()),
            })
            .map_err(Status::from)
        });
        rpc.stream(updates, None)
    }

    type WorkStream = ResponseStream<WorkResponse>;

    async fn work(
        &self,
        request: Request<Streaming<WorkRequest>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        let mut incoming = request.into_inner();
        let rpc = Rpc::begin();
        let attached = async {
            let first = incoming
                .message()
                .await?
                .ok_or_else(|| Error::invalid("hello", "a Work stream must start with a hello"))?;
            let Some(work_request::Message::Hello(hello)) = first.message else {
                return Err(Error::invalid(
                    "hello",
                    "the first message of a Work stream must be hello",
                )
                .into());
            };
            Ok::<_, Status>(self.engine.connect_worker(WorkerHello::from(hello)).await?)
        }
        .await;
        let session = match attached {
            Ok(session) => session,
            Err(status) => return rpc.unary(Err(status)),
        };
        let agent_id = session.agent.id.clone();
        rpc.record_resource("agent", &agent_id);

        // The worker's messages, in order; a protocol error or the end of
        // the stream detaches the worker (its leases keep their grace).
        let engine = self.engine.clone();
        let (conn, reader_agent) = (session.conn, agent_id.clone());
        let (errors_tx, errors_rx) = tokio::sync::mpsc::unbounded_channel::<Status>();
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                let handled = match worker_message(message) {
                    Ok(m) => engine.worker_message(&reader_agent, conn, m).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = handled {
                    let _ = errors_tx.send(e.into());
                    break;
                }
            }
            // On its own task: dropping the response aborts this one.
            tokio::spawn(async move { engine.worker_detached(&reader_agent, conn).await });
        });
        let engine = self.engine.clone();
        let on_drop = Box::new(move || {
            reader.abort();
            tokio::spawn(async move { engine.worker_detached(&agent_id, conn).await });
        });
        // Directives until the engine closes the stream (an error ends it)
        // or the worker's side ends.
        let state = (session.directives, errors_rx, false);
        let out = futures::stream::unfold(state, |(mut directives, mut errors, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                biased;
                d = directives.recv() => match d {
                    Some(Ok(d)) => Some((Ok(pb::WorkResponse::from(d)), (directives, errors, false))),
                    Some(Err(e)) => Some((Err(Status::from(e)), (directives, errors, true))),
                    // Closed by the worker's own protocol error: say which.
                    None => errors
                        .try_recv()
                        .ok()
                        .map(|status| (Err(status), (directives, errors, true))),
                },
                e = errors.recv() => e.map(|status| (Err(status), (directives, errors, true))),
            }
        });
        rpc.stream(out, Some(on_drop))
    }

    type WatchEventsStream = ResponseStream<pb::WatchEventsResponse>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let pb::WatchEventsRequest {
            filter,
            after_id,
            from_start,
        } = request.into_inner();
        let rpc = Rpc::begin();
        let started = async {
            let filter = ActivityFilter::try_from(filter.unwrap_or_default())
                .map_err(|e| e.within("filter"))?;
            let after = match (from_start, after_id) {
                (true, _) => Some(0),
                (false, 0) => None,
                (false, id) => Some(id),
            };
            self.engine.watch_events(filter, after).await
        }
        .await;
        let events = match started {
            Ok(events) => events,
            Err(e) => return rpc.unary(Err(e.into())),
        };
        let events = events.map(|e| {
            e.map(|event| pb::WatchEventsResponse {
                event: Some(event.into()),
            })
            .map_err(Status::from)
        });
        rpc.stream(events, None)
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let pb::ListEventsRequest {
            filter,
            page_size,
            page_token,
        } = request.into_inner();
        Rpc::begin().unary(
            async {
                let filter = ActivityFilter::try_from(filter.unwrap_or_default())
                    .map_err(|e| e.within("filter"))?;
                let page = self
                    .engine
                    .list_events(filter, page_size as usize, &page_token)
                    .await?;
                Ok(pb::ListEventsResponse {
                    events: page.items.into_iter().map(Into::into).collect(),
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn get_agent_stats(
        &self,
        request: Request<pb::GetAgentStatsRequest>,
    ) -> Result<Response<pb::GetAgentStatsResponse>, Status> {
        let pb::GetAgentStatsRequest { window } = request.into_inner();
        Rpc::begin().unary(
            async {
                let window = window
                    .map(|w| super::convert::duration_from(w, "window"))
                    .transpose()?;
                let stats = self.engine.stats(window).await?;
                Ok(pb::GetAgentStatsResponse::from(stats))
            }
            .await,
        )
    }
}
