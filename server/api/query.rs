//! `agentd.v1.QueryControlService`.
//!
//! The query engine (`server/query`) is not built yet, so every RPC answers
//! UNIMPLEMENTED naming it.

use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, not_built};
use crate::error::Engine;
use crate::pb::v1::query_control_service_server::{QueryControlService, QueryControlServiceServer};
use crate::pb::v1::*;

type Server = QueryControlServiceServer<QueryApi>;
const ENGINE: Engine = Engine::Query;

/// The QueryControlService handlers.
#[derive(Debug, Default, Clone)]
pub struct QueryApi {}

#[tonic::async_trait]
impl QueryControlService for QueryApi {
    type SessionStream = ResponseStream<SessionResponse>;

    async fn session(
        &self,
        _: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        not_built::<Server, _>(ENGINE, "Session")
    }

    type AttachStream = ResponseStream<AttachResponse>;

    async fn attach(
        &self,
        _: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        not_built::<Server, _>(ENGINE, "Attach")
    }

    async fn pause(&self, _: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Pause")
    }

    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<ResumeResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Resume")
    }

    async fn switch_model(
        &self,
        _: Request<SwitchModelRequest>,
    ) -> Result<Response<SwitchModelResponse>, Status> {
        not_built::<Server, _>(ENGINE, "SwitchModel")
    }

    async fn terminate(
        &self,
        _: Request<TerminateRequest>,
    ) -> Result<Response<TerminateResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Terminate")
    }

    async fn get_query(
        &self,
        _: Request<GetQueryRequest>,
    ) -> Result<Response<GetQueryResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetQuery")
    }

    async fn list_queries(
        &self,
        _: Request<ListQueriesRequest>,
    ) -> Result<Response<ListQueriesResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListQueries")
    }

    async fn list_query_models(
        &self,
        _: Request<ListQueryModelsRequest>,
    ) -> Result<Response<ListQueryModelsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListQueryModels")
    }
}
