//! The built-in tools a query's model can call inside agentd ("server"
//! tools, `TOOL_LOCATION_SERVER`): memory search, key-value get and put,
//! and embeddings, each calling its engine directly (no gRPC hop).
//!
//! They are adapters: the query engine knows only its `ServerTool` trait
//! (`crate::query::tools`), the memory and embedding engines know nothing
//! of tools, and this module joins them at start-up. Each tool's argument
//! schema is generated from the struct its arguments are parsed into.
//!
//! - [`memory`]: `memory_search`, `memory_get`, `memory_put`.
//! - [`embed`]: the `embed` tool.

pub(crate) mod embed;
pub(crate) mod memory;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::embed::TextEmbedder;
use crate::memory::{KvMemory, Points};
use crate::query::{ServerTool, ServerTools};

/// The built-in tools the running engines allow: the memory tools when
/// the memory engine runs, `embed` when the embedding engine does.
pub fn builtin(
    kv: Option<KvMemory>,
    points: Option<Points>,
    embedder: Option<Arc<dyn TextEmbedder>>,
    max_result_bytes: usize,
) -> ServerTools {
    let mut tools: Vec<Arc<dyn ServerTool>> = Vec::new();
    if let Some(points) = points {
        tools.push(Arc::new(memory::MemorySearch::new(points)));
    }
    if let Some(kv) = kv {
        tools.push(Arc::new(memory::MemoryGet::new(kv.clone())));
        tools.push(Arc::new(memory::MemoryPut::new(kv)));
    }
    if let Some(embedder) = embedder {
        tools.push(Arc::new(embed::Embed::new(embedder)));
    }
    ServerTools::new(tools, max_result_bytes)
}

/// Arguments already checked against the schema of `T`, parsed into it.
fn parse<T: DeserializeOwned>(arguments: Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(arguments)).map_err(|e| format!("bad arguments: {e}"))
}
