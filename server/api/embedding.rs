//! `agentd.v1.EmbeddingService`.
//!
//! The embedding engine (`server/embed`) is not built yet, so every RPC
//! answers UNIMPLEMENTED naming it.

use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, not_built};
use crate::error::Engine;
use crate::pb::v1::embedding_service_server::{EmbeddingService, EmbeddingServiceServer};
use crate::pb::v1::*;

type Server = EmbeddingServiceServer<EmbeddingApi>;
const ENGINE: Engine = Engine::Embedding;

/// The EmbeddingService handlers.
#[derive(Debug, Default, Clone)]
pub struct EmbeddingApi {}

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    async fn embed(&self, _: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Embed")
    }

    type EmbedStreamStream = ResponseStream<EmbedStreamResponse>;

    async fn embed_stream(
        &self,
        _: Request<Streaming<EmbedStreamRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        not_built::<Server, _>(ENGINE, "EmbedStream")
    }

    async fn tokenize(
        &self,
        _: Request<TokenizeRequest>,
    ) -> Result<Response<TokenizeResponse>, Status> {
        not_built::<Server, _>(ENGINE, "Tokenize")
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        not_built::<Server, _>(ENGINE, "ListModels")
    }

    async fn get_model(
        &self,
        _: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        not_built::<Server, _>(ENGINE, "GetModel")
    }
}
