//! The opt-in semantic result cache: a completed answer is replayed for a
//! new prompt whose embedding is close enough to an answered one's.
//!
//! The prompt (system prompt and messages, with their roles) is embedded by
//! the Embedding engine's default model. Answers are shared only within a
//! scope: the cache namespace the query names, the model alias and the
//! sampling settings must all be equal, so a semantic hit never crosses
//! tenants or models. Entries are kept newest-first up to a count and
//! scanned exhaustively (normalised vectors, so cosine is a dot product):
//! 10,000 entries of 384 dimensions is a few milliseconds, far below a
//! model call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::cache::CachedAnswer;
use super::types::StartQuery;
use crate::common::sync::lock;
use crate::embed::TextEmbedder;
use crate::error::Result;

#[derive(Debug)]
struct Entry {
    scope: String,
    vector: Vec<f32>,
    answer: Arc<CachedAnswer>,
}

/// The cache (cheap to share behind an `Arc`).
#[derive(Debug)]
pub struct SemanticCache {
    embedder: Option<Arc<dyn TextEmbedder>>,
    entries: Mutex<VecDeque<Entry>>,
    capacity: usize,
}

/// A prompt ready for lookup or insertion.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticKey {
    /// Namespace, model and settings that must match.
    pub scope: String,
    /// The prompt's embedding (normalised).
    pub vector: Vec<f32>,
}

impl SemanticCache {
    /// A cache of at most `capacity` answers embedded by `embedder`
    /// (`None` when the Embedding service is disabled: the cache is then
    /// unavailable).
    pub fn new(embedder: Option<Arc<dyn TextEmbedder>>, capacity: usize) -> Self {
        Self {
            embedder,
            entries: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Why semantic caching cannot be used, if so.
    pub fn unavailable_reason(&self) -> Option<&'static str> {
        if self.embedder.is_none() {
            Some("needs the Embedding service, which is disabled on this server")
        } else if self.capacity == 0 {
            Some("is turned off on this server ([query] semantic_cache_entries = 0)")
        } else {
            None
        }
    }

    /// Embeds `start`'s prompt.
    pub async fn key(&self, start: &StartQuery) -> Result<Option<SemanticKey>> {
        let Some(embedder) = &self.embedder else {
            return Ok(None);
        };
        let mut prompt = String::new();
        if !start.system_prompt.is_empty() {
            prompt.push_str("system: ");
            prompt.push_str(&start.system_prompt);
            prompt.push('\n');
        }
        for m in &start.messages {
            prompt.push_str(m.role.as_str());
            prompt.push_str(": ");
            prompt.push_str(&m.content);
            prompt.push('\n');
        }
        let vector = embedder
            .embed_texts("", vec![prompt])
            .await?
            .pop()
            .unwrap_or_default();
        let scope = serde_json::json!({
            "namespace": start.cache.namespace,
            "model": start.model,
            "params": start.params,
        })
        .to_string();
        Ok(Some(SemanticKey { scope, vector }))
    }

    /// The most similar answer in `key`'s scope at or above `threshold`,
    /// with its similarity.
    pub fn lookup(&self, key: &SemanticKey, threshold: f32) -> Option<(Arc<CachedAnswer>, f32)> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .filter(|e| e.scope == key.scope && e.vector.len() == key.vector.len())
            .map(|e| {
                let similarity: f32 = e.vector.iter().zip(&key.vector).map(|(a, b)| a * b).sum();
                (e, similarity)
            })
            .filter(|(_, s)| *s >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, s)| (e.answer.clone(), s.min(1.0)))
    }

    /// Stores an answer, dropping the oldest beyond capacity.
    pub fn insert(&self, key: SemanticKey, answer: Arc<CachedAnswer>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = lock(&self.entries);
        entries.push_front(Entry {
            scope: key.scope,
            vector: key.vector,
            answer,
        });
        entries.truncate(self.capacity);
    }
}
