//! Recent search results, so an agent asking the same question again (a
//! common pattern: the same recall query every turn) skips the index, the
//! payload reads and, for text queries, the embedding.
//!
//! Keys carry the collection's write generation ([`super::indexes::Slot`]):
//! any write bumps it, so every result cached before the write becomes
//! unreachable at once and ages out; nothing is ever served stale. Bounded
//! in bytes like the embedding cache.

use std::sync::Arc;

use moka::sync::Cache;

use super::points::Hit;

/// What identifies one search's results.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchKey {
    /// Collection name.
    pub collection: String,
    /// Creation time, so a re-created collection never sees old entries.
    pub created_at: i64,
    /// The collection's write generation.
    pub generation: u64,
    /// The query: vector bits, or the text before embedding.
    pub query: QueryKey,
    /// Results wanted.
    pub k: usize,
    /// The filter, as its canonical debug form.
    pub filter: Option<String>,
    /// Overrides.
    pub ef_search: Option<u32>,
    /// Overrides.
    pub nprobe: Option<u32>,
    /// Score threshold bits.
    pub threshold: Option<u32>,
    /// Candidates ranked per result by their full vectors (None: no
    /// rescoring).
    pub rescore: Option<usize>,
    /// Payloads asked for.
    pub with_payload: bool,
    /// Vectors asked for.
    pub with_vector: bool,
}

/// A query as a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueryKey {
    /// f32 bit patterns.
    Vector(Vec<u32>),
    /// Text.
    Text(String),
}

/// Cached results and what they weigh.
#[derive(Debug)]
pub struct CachedHits {
    /// Results, best first.
    pub hits: Vec<Hit>,
    /// Approximate bytes (ids, vectors, payload JSON).
    pub bytes: usize,
}

/// Per-entry bytes beyond the results (key, headers, moka's node).
const ENTRY_OVERHEAD: usize = 256;

fn weigh(key: &SearchKey, value: &Arc<CachedHits>) -> u32 {
    let query = match &key.query {
        QueryKey::Vector(v) => v.len() * 4,
        QueryKey::Text(t) => t.len(),
    };
    let bytes = ENTRY_OVERHEAD + query + key.filter.as_ref().map_or(0, String::len) + value.bytes;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The search result cache of all collections.
#[derive(Debug, Clone)]
pub struct SearchCache {
    entries: Option<Cache<SearchKey, Arc<CachedHits>>>,
}

impl SearchCache {
    /// A cache of at most `max_bytes`; 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: (max_bytes > 0).then(|| {
                Cache::builder()
                    .max_capacity(max_bytes)
                    .weigher(weigh)
                    .build()
            }),
        }
    }

    /// Cached results for `key`.
    pub fn get(&self, key: &SearchKey) -> Option<Arc<CachedHits>> {
        self.entries.as_ref()?.get(key)
    }

    /// Remembers results.
    pub fn insert(&self, key: SearchKey, hits: CachedHits) {
        if let Some(entries) = &self.entries {
            entries.insert(key, Arc::new(hits));
        }
    }

    /// Whether caching is on.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }
}
