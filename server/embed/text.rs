//! Text to vectors, for the other engines: the memory engine embeds text
//! points and text queries with a collection's model, and the query
//! engine's semantic cache embeds prompts with the default model.
//!
//! They depend on this trait, not on [`EmbeddingEngine`], so that each can
//! be tested with its own embedder and the embedding service can be
//! disabled (they then get `None`).

use super::engine::{EmbedParams, EmbeddingEngine};
use crate::error::Result;

/// Turns texts into vectors with a named embedding model.
#[async_trait::async_trait]
pub trait TextEmbedder: Send + Sync + std::fmt::Debug + 'static {
    /// One normalised vector per text, as model `model` makes them (empty:
    /// the default model). Invalid texts are reported as `inputs[i]`, `i`
    /// the text's index in `texts`.
    async fn embed_texts(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;

    /// The vector length of model `model`: NotFound for an unknown model,
    /// NotReady while it loads or after it failed to.
    fn dimensions(&self, model: &str) -> Result<u32>;
}

#[async_trait::async_trait]
impl TextEmbedder for EmbeddingEngine {
    async fn embed_texts(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let out = self
            .embed(EmbedParams {
                model: model.to_owned(),
                inputs: texts,
                normalize: true,
                truncate: true,
                dimensions: None,
            })
            .await?;
        Ok(out.vectors.into_iter().map(|v| v.values).collect())
    }

    fn dimensions(&self, model: &str) -> Result<u32> {
        let status = self.model(model)?;
        status.state.ready(&status.id)?;
        let info = status.info.as_ref().ok_or_else(|| {
            crate::error::Error::Internal(format!("ready model {model:?} has no info"))
        })?;
        Ok(info.dimensions as u32)
    }
}
