//! `agentd.v1.EmbeddingService`: validate, convert, call the embedding
//! engine, convert back.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::ResponseStream;
use super::error::stream_error;
use crate::embed::{self, EmbedParams, EmbeddingEngine, ModelKind, ModelState, ModelStatus};
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

fn params(request: pb::EmbedRequest) -> EmbedParams {
    EmbedParams {
        model: request.model,
        inputs: request.inputs,
        normalize: request.normalize.unwrap_or(true),
        truncate: request.truncate.unwrap_or(true),
        dimensions: request.dimensions.map(|d| d as usize),
    }
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

fn response(out: embed::EmbedOutput, received: Instant) -> pb::EmbedResponse {
    let input_tokens = out.input_tokens();
    let cache_hits = out.vectors.iter().filter(|v| v.cached).count() as u32;
    pb::EmbedResponse {
        model: out.model,
        embeddings: out
            .vectors
            .into_iter()
            .map(|v| pb::Embedding {
                values: v.values,
                tokens: v.tokens as u32,
                truncated: v.truncated,
                cached: v.cached,
            })
            .collect(),
        usage: Some(pb::TokenUsage {
            input_tokens,
            output_tokens: 0,
        }),
        timing: Some(pb::Timing {
            queue: Some(duration(out.queue)),
            compute: Some(duration(out.compute)),
            total: Some(duration(received.elapsed())),
        }),
        cache_hits,
    }
}

fn model(status: ModelStatus) -> pb::EmbeddingModel {
    let (state, error) = match status.state {
        ModelState::Loading => (pb::ModelState::Loading, String::new()),
        ModelState::Ready => (pb::ModelState::Ready, String::new()),
        ModelState::Failed(reason) => (pb::ModelState::Failed, reason),
    };
    let kind = match status.kind {
        ModelKind::Bert => pb::EmbeddingModelKind::Bert,
        ModelKind::Hash => pb::EmbeddingModelKind::Hash,
    };
    let info = status.info;
    pb::EmbeddingModel {
        id: status.id,
        kind: kind.into(),
        dimensions: info.as_ref().map_or(0, |i| i.dimensions as u32),
        max_input_tokens: info.as_ref().map_or(0, |i| i.max_input_tokens as u32),
        state: state.into(),
        error,
        is_default: status.is_default,
        matryoshka_dimensions: info
            .map(|i| i.matryoshka_dimensions.iter().map(|d| *d as u32).collect())
            .unwrap_or_default(),
        cache_hits: status.cache_hits,
        cache_misses: status.cache_misses,
    }
}

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let received = Instant::now();
        let out = self.engine.embed(params(request.into_inner())).await?;
        Ok(Response::new(response(out, received)))
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
                async move {
                    let item = item?;
                    let received = Instant::now();
                    let request_id = item.request_id;
                    let result = if request_id.len() > MAX_REQUEST_ID_BYTES {
                        Err(Error::invalid(
                            "request_id",
                            format!(
                                "is {} bytes, more than the limit of {MAX_REQUEST_ID_BYTES}",
                                request_id.len()
                            ),
                        ))
                    } else {
                        let request = item.request.unwrap_or_default();
                        engine.embed(params(request)).await
                    };
                    let result = match result {
                        Ok(out) => {
                            pb::embed_stream_response::Result::Response(response(out, received))
                        }
                        Err(err) => pb::embed_stream_response::Result::Error(stream_error(err)),
                    };
                    Ok(pb::EmbedStreamResponse {
                        request_id,
                        result: Some(result),
                    })
                }
            })
            .buffer_unordered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let request = request.into_inner();
        let (info, texts) = self
            .engine
            .tokenize(
                &request.model,
                request.inputs,
                request.add_special_tokens.unwrap_or(true),
            )
            .await?;
        let results = texts
            .into_iter()
            .map(|tokens| pb::TokenizedText {
                count: tokens.len() as u32,
                exceeds_max_tokens: tokens.len() > info.max_input_tokens,
                tokens: tokens
                    .into_iter()
                    .map(|t| pb::Token {
                        id: t.id,
                        text: t.text,
                        special: t.special,
                        start: t.start as u32,
                        end: t.end as u32,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::TokenizeResponse {
            model: info.id,
            results,
        }))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self.engine.models().into_iter().map(model).collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let status = self.engine.model(&request.into_inner().id)?;
        Ok(Response::new(pb::GetModelResponse {
            model: Some(model(status)),
        }))
    }
}
