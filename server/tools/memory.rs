//! The memory tools: search a vector collection by text, read and write
//! key-value memory.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::parse;
use crate::memory::{Condition, Filter, KvMemory, Points, PutParams, Query, SearchParams};
use crate::query::{ServerTool, ToolDescription, schema_of};

/// Most results `memory_search` returns.
const MAX_K: u32 = 20;

/// Arguments of `memory_search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    /// The vector collection to search (it must have an embedding model).
    collection: String,
    /// What to look for, in words.
    query: String,
    /// How many results, 1 to 20 (default 5).
    #[schemars(range(min = 1, max = 20))]
    k: Option<u32>,
    /// Only points whose payload has these exact values (field name to
    /// value; dotted names reach into nested objects).
    filter: Option<Map<String, Value>>,
}

/// `memory_search`.
#[derive(Debug)]
pub struct MemorySearch {
    points: Points,
}

impl MemorySearch {
    /// Over `points`.
    pub fn new(points: Points) -> Self {
        Self { points }
    }
}

impl ServerTool for MemorySearch {
    fn describe(&self) -> ToolDescription {
        ToolDescription {
            name: "memory_search".into(),
            description: "Searches a vector collection of agentd's memory by meaning and \
                          returns the closest points with their payloads, best first."
                .into(),
            parameters: schema_of::<SearchArgs>(),
        }
    }

    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'static, Result<Value, String>> {
        let points = self.points.clone();
        Box::pin(async move {
            let args: SearchArgs = parse(arguments)?;
            let filter = args.filter.map(|fields| {
                Filter::AllOf(
                    fields
                        .into_iter()
                        .map(|(key, value)| Filter::Field {
                            key,
                            condition: Condition::Eq(value),
                        })
                        .collect(),
                )
            });
            let result = points
                .search(SearchParams {
                    collection: args.collection,
                    query: Some(Query::Text(args.query)),
                    k: args.k.unwrap_or(5).clamp(1, MAX_K) as usize,
                    filter,
                    ef_search: None,
                    nprobe: None,
                    score_threshold: None,
                    with_payload: true,
                    with_vector: false,
                    rescore: None,
                    oversampling: None,
                })
                .await
                .map_err(|e| e.to_string())?;
            let hits: Vec<Value> = result
                .hits
                .into_iter()
                .map(|h| json!({"id": h.point.id, "score": h.score, "payload": h.point.payload}))
                .collect();
            Ok(json!({ "hits": hits }))
        })
    }
}

/// Arguments of `memory_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    /// The namespace.
    namespace: String,
    /// The key.
    key: String,
}

/// `memory_get`.
#[derive(Debug)]
pub struct MemoryGet {
    kv: KvMemory,
}

impl MemoryGet {
    /// Over `kv`.
    pub fn new(kv: KvMemory) -> Self {
        Self { kv }
    }
}

impl ServerTool for MemoryGet {
    fn describe(&self) -> ToolDescription {
        ToolDescription {
            name: "memory_get".into(),
            description: "Reads one entry of agentd's key-value memory: its value as text, \
                          or found: false."
                .into(),
            parameters: schema_of::<GetArgs>(),
        }
    }

    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'static, Result<Value, String>> {
        let kv = self.kv.clone();
        Box::pin(async move {
            let args: GetArgs = parse(arguments)?;
            match kv.get(args.namespace, args.key).await {
                Ok(entry) => Ok(json!({
                    "found": true,
                    "value": String::from_utf8_lossy(&entry.value),
                    "content_type": entry.content_type,
                    "metadata": entry.metadata,
                    "version": entry.version,
                })),
                Err(crate::error::Error::NotFound { .. }) => Ok(json!({ "found": false })),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Arguments of `memory_put`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    /// The namespace.
    namespace: String,
    /// The key.
    key: String,
    /// The value, as text.
    value: String,
    /// Seconds until the entry expires; unset keeps it.
    #[schemars(range(min = 1))]
    ttl_seconds: Option<u64>,
}

/// `memory_put`.
#[derive(Debug)]
pub struct MemoryPut {
    kv: KvMemory,
}

impl MemoryPut {
    /// Over `kv`.
    pub fn new(kv: KvMemory) -> Self {
        Self { kv }
    }
}

impl ServerTool for MemoryPut {
    fn describe(&self) -> ToolDescription {
        ToolDescription {
            name: "memory_put".into(),
            description: "Writes one entry of agentd's key-value memory (durably) and returns \
                          its new version."
                .into(),
            parameters: schema_of::<PutArgs>(),
        }
    }

    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'static, Result<Value, String>> {
        let kv = self.kv.clone();
        Box::pin(async move {
            let args: PutArgs = parse(arguments)?;
            let entry = kv
                .put(PutParams {
                    namespace: args.namespace,
                    key: args.key,
                    value: args.value.into_bytes(),
                    content_type: "text/plain".into(),
                    metadata: Default::default(),
                    ttl: args.ttl_seconds.map(std::time::Duration::from_secs),
                    if_version: None,
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "version": entry.version }))
        })
    }
}
