//! `agentd.v1` EmbeddingService messages ⇄ the embedding engine's types.

use std::time::Instant;

use crate::embed::{EmbedOutput, EmbedParams, ModelKind, ModelState, ModelStatus, Tokenized};
use crate::pb::v1 as pb;

impl From<pb::EmbedRequest> for EmbedParams {
    fn from(r: pb::EmbedRequest) -> Self {
        let pb::EmbedRequest {
            model,
            inputs,
            normalize,
            truncate,
            dimensions,
        } = r;
        EmbedParams {
            model,
            inputs,
            normalize: normalize.unwrap_or(true),
            truncate: truncate.unwrap_or(true),
            dimensions: dimensions.map(|d| d as usize),
        }
    }
}

/// An Embed answer, with the total time since the request arrived.
pub fn embed_response(out: EmbedOutput, received: Instant) -> pb::EmbedResponse {
    let input_tokens = out.input_tokens();
    let EmbedOutput {
        model,
        vectors,
        timing,
    } = out;
    let cache_hits = vectors.iter().filter(|v| v.cached).count() as u32;
    pb::EmbedResponse {
        model,
        embeddings: vectors
            .into_iter()
            .map(|v| {
                let crate::embed::Vector {
                    values,
                    tokens,
                    truncated,
                    cached,
                } = v;
                pb::Embedding {
                    values,
                    tokens: tokens as u32,
                    truncated,
                    cached,
                }
            })
            .collect(),
        usage: Some(pb::TokenUsage {
            input_tokens,
            output_tokens: 0,
        }),
        timing: Some(super::timing(timing, received)),
        cache_hits,
    }
}

impl From<Tokenized> for pb::TokenizeResponse {
    fn from(t: Tokenized) -> Self {
        let Tokenized { model, texts } = t;
        let max = model.max_input_tokens;
        let results = texts
            .into_iter()
            .map(|tokens| pb::TokenizedText {
                count: tokens.len() as u32,
                exceeds_max_tokens: tokens.len() > max,
                tokens: tokens
                    .into_iter()
                    .map(|t| {
                        let crate::embed::Token {
                            id,
                            text,
                            special,
                            start,
                            end,
                        } = t;
                        pb::Token {
                            id,
                            text,
                            special,
                            start: start as u32,
                            end: end as u32,
                        }
                    })
                    .collect(),
            })
            .collect();
        pb::TokenizeResponse {
            model: model.id,
            results,
        }
    }
}

impl From<ModelStatus> for pb::EmbeddingModel {
    fn from(status: ModelStatus) -> Self {
        let ModelStatus {
            id,
            kind,
            state,
            info,
            is_default,
            cache_hits,
            cache_misses,
        } = status;
        let (state, error) = match state {
            ModelState::Loading => (pb::ModelState::Loading, String::new()),
            ModelState::Ready => (pb::ModelState::Ready, String::new()),
            ModelState::Failed(reason) => (pb::ModelState::Failed, reason),
        };
        let kind = match kind {
            ModelKind::Bert => pb::EmbeddingModelKind::Bert,
            ModelKind::Hash => pb::EmbeddingModelKind::Hash,
        };
        pb::EmbeddingModel {
            id,
            kind: kind.into(),
            dimensions: info.as_ref().map_or(0, |i| i.dimensions as u32),
            max_input_tokens: info.as_ref().map_or(0, |i| i.max_input_tokens as u32),
            state: state.into(),
            error,
            is_default,
            matryoshka_dimensions: info
                .map(|i| i.matryoshka_dimensions.iter().map(|d| *d as u32).collect())
                .unwrap_or_default(),
            cache_hits,
            cache_misses,
        }
    }
}
