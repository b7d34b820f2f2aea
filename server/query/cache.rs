//! The exact result cache: a completed answer to the same model, system
//! prompt, messages and sampling settings is replayed instead of generated.
//!
//! Bounded in bytes (keys and answers both count). An answer is stored only
//! when the query completed without an Inject (whose answer belongs to a
//! different conversation) and without tool calls (whose results it
//! depends on); the key holds the whole history and the tools offered; a replay streams the answer as deltas marked as
//! cached, joined into chunks of up to 4 KiB (one or a few messages instead
//! of one per token), so a hit costs about one round trip.

use std::sync::Arc;

use moka::sync::Cache;

use super::types::{FinishReason, StartQuery};

/// A completed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnswer {
    /// The query that produced it.
    pub source_query_id: String,
    /// Its deltas, in order.
    pub deltas: Vec<String>,
    /// Why it finished.
    pub finish_reason: FinishReason,
}

/// Answers by request.
#[derive(Debug, Clone)]
pub struct AnswerCache {
    cache: Option<Cache<String, Arc<CachedAnswer>>>,
}

impl AnswerCache {
    /// A cache of at most `bytes`; 0 disables it.
    pub fn new(bytes: u64) -> Self {
        let cache = (bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(bytes)
                .weigher(|key: &String, answer: &Arc<CachedAnswer>| {
                    let size = key.len()
                        + answer.source_query_id.len()
                        + answer.deltas.iter().map(|d| d.len() + 24).sum::<usize>();
                    u32::try_from(size).unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { cache }
    }

    /// The key of a request: everything that shapes the answer.
    pub fn key(start: &StartQuery) -> String {
        let mut key = serde_json::json!({
            "model": start.model,
            "system": start.system_prompt,
            "messages": start.messages,
            "params": start.params,
        });
        // Tools shape the answer too (plain queries keep their old keys).
        if !start.tools.is_empty() {
            key["tools"] = serde_json::json!(start.tools);
            key["tool_choice"] = serde_json::json!(start.tool_choice);
            key["max_turns"] = serde_json::json!(start.max_turns);
        }
        key.to_string()
    }

    /// The answer to `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<CachedAnswer>> {
        self.cache.as_ref()?.get(key)
    }

    /// Stores an answer.
    pub fn insert(&self, key: String, answer: Arc<CachedAnswer>) {
        if let Some(cache) = &self.cache {
            cache.insert(key, answer);
        }
    }
}
