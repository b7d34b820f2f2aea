//! The `embed` tool: texts to vectors with one of agentd's embedding
//! models.

use std::sync::Arc;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::parse;
use crate::embed::TextEmbedder;
use crate::query::{ServerTool, ToolDescription, schema_of};

/// Arguments of `embed`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EmbedArgs {
    /// The texts, 1 to 16.
    #[schemars(length(min = 1, max = 16))]
    texts: Vec<String>,
    /// The embedding model; unset is the server's default.
    model: Option<String>,
}

/// `embed`.
#[derive(Debug)]
pub struct Embed {
    embedder: Arc<dyn TextEmbedder>,
}

impl Embed {
    /// Over `embedder`.
    pub fn new(embedder: Arc<dyn TextEmbedder>) -> Self {
        Self { embedder }
    }
}

impl ServerTool for Embed {
    fn describe(&self) -> ToolDescription {
        ToolDescription {
            name: "embed".into(),
            description: "Turns texts into normalised embedding vectors with one of agentd's \
                          embedding models."
                .into(),
            parameters: schema_of::<EmbedArgs>(),
        }
    }

    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'static, Result<Value, String>> {
        let embedder = Arc::clone(&self.embedder);
        Box::pin(async move {
            let args: EmbedArgs = parse(arguments)?;
            let model = args.model.unwrap_or_default();
            let vectors = embedder
                .embed_texts(&model, args.texts)
                .await
                .map_err(|e| e.to_string())?;
            let dimensions = vectors.first().map_or(0, Vec::len);
            Ok(json!({ "dimensions": dimensions, "vectors": vectors }))
        })
    }
}
