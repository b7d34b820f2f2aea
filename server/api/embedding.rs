//! `agentd.v1.EmbeddingService`: convert, call the embedding engine,
//! convert back (conversions in [`super::convert::embedding`]).

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::ResponseStream;
use super::convert::embedding::embed_response;
use super::error::stream_error;
use super::rpc::Rpc;
use crate::embed::{EmbedParams, EmbeddingEngine};
use crate::error::Error;
use crate::pb::v1 as pb;
use crate::pb::v1::embedding_service_server::EmbeddingService;

/// How many EmbedStream requests are processed at once per stream: the server
/// reads no further ahead, so a client that writes faster than it reads is
/// slowed by HTTP/2 flow control instead of growing server memory.
pub const STREAM_CONCURRENCY: usize = 4;
/// Longest `request_id` accepted on EmbedStream.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The EmbeddingService handlers.
#[derive(Debug, Clone)]
pub struct EmbeddingApi {
    engine: Arc<EmbeddingEngine>,
}

impl EmbeddingApi {
    /// Serves `engine`.
    pub fn new(engine: Arc<EmbeddingEngine>) -> Self {
        Self { engine }
    }
}

/// The model a request names, for the RPC's span ("default" when none).
fn model_name(model: &str) -> &str {
    if model.is_empty() { "default" } else { model }
}

/// One EmbedStream item: its answer, or the error of that item alone.
async fn stream_item(
    engine: &EmbeddingEngine,
    item: pb::EmbedStreamRequest,
) -> pb::EmbedStreamResponse {
    let received = Instant::now();
    let pb::EmbedStreamRequest {
        request_id,
        request,
    } = item;
    let result = if request_id.len() > MAX_REQUEST_ID_BYTES {
        Err(Error::invalid(
            "request_id",
            format!(
                "is {} bytes, more than the limit of {MAX_REQUEST_ID_BYTES}",
                request_id.len()
            ),
        ))
    } else {
        let params = EmbedParams::from(request.unwrap_or_default());
        engine.embed(params).await
    };
    let result = match result {
        Ok(out) => pb::embed_stream_response::Result::Response(embed_response(out, received)),
        Err(err) => pb::embed_stream_response::Result::Error(stream_error(err)),
    };
    pb::EmbedStreamResponse {
        request_id,
        result: Some(result),
    }
}

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let received = Instant::now();
        let r = request.into_inner();
        let rpc = Rpc::about("model", model_name(&r.model));
        rpc.unary(
            async {
                let out = self.engine.embed(EmbedParams::from(r)).await?;
                Ok(embed_response(out, received))
            }
            .await,
        )
    }

    type EmbedStreamStream = ResponseStream<pb::EmbedStreamResponse>;

    async fn embed_stream(
        &self,
        request: Request<Streaming<pb::EmbedStreamRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let engine = Arc::clone(&self.engine);
        let responses = request
            .into_inner()
            .map(move |item| {
                let engine = Arc::clone(&engine);
                async move { Ok(stream_item(&engine, item?).await) }
            })
            .buffer_unordered(STREAM_CONCURRENCY);
        Rpc::begin().stream(responses, None)
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let pb::TokenizeRequest {
            model,
            inputs,
            add_special_tokens,
        } = request.into_inner();
        let rpc = Rpc::about("model", model_name(&model));
        rpc.unary(
            async {
                let tokenized = self
                    .engine
                    .tokenize(&model, inputs, add_special_tokens.unwrap_or(true))
                    .await?;
                Ok(tokenized.into())
            }
            .await,
        )
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let pb::ListModelsRequest {} = request.into_inner();
        let models = self.engine.models().into_iter().map(Into::into).collect();
        Rpc::begin().unary(Ok(pb::ListModelsResponse { models }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let pb::GetModelRequest { id } = request.into_inner();
        let rpc = Rpc::about("model", model_name(&id));
        rpc.unary(
            self.engine
                .model(&id)
                .map_err(Status::from)
                .map(|status| pb::GetModelResponse {
                    model: Some(status.into()),
                }),
        )
    }
}
