//! The embedding cache: repeated (model, text) pairs are answered without a
//! forward pass.
//!
//! One cache per model, bounded in bytes (text + vector + bookkeeping, as
//! moka's weigher counts them) and evicting by TinyLFU, so a burst of
//! one-off texts does not flush the texts that keep coming back. It stores
//! the raw pooled vector, before normalisation and Matryoshka cuts, so one
//! entry serves every combination of request options. The engine inserts
//! only after a whole request succeeded: a failed request leaves nothing
//! behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::sync::Cache;

/// A cached result for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The pooled, not normalised vector.
    pub vector: Vec<f32>,
    /// Tokens after truncation.
    pub tokens: usize,
    /// Tokens before truncation.
    pub full_len: usize,
}

/// Bytes an entry is charged beyond its text and vector (key and value
/// headers, moka's node).
const ENTRY_OVERHEAD: usize = 96;

/// What an entry costs against the byte bound.
// moka hands the weigher `&K`, and K is `Box<str>`.
#[allow(clippy::borrowed_box)]
fn weigh(text: &Box<str>, value: &Arc<Cached>) -> u32 {
    let bytes = text.len() + value.vector.len() * 4 + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// A model's cache and its hit counters.
#[derive(Debug)]
pub struct EmbeddingCache {
    entries: Option<Cache<Box<str>, Arc<Cached>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl EmbeddingCache {
    /// A cache holding at most `max_bytes`; 0 disables caching.
    pub fn new(max_bytes: u64) -> Self {
        let entries = (max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(weigh)
                .build()
        });
        Self {
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached result for `text`, counting a hit or a miss.
    pub fn get(&self, text: &str) -> Option<Arc<Cached>> {
        let found = self.entries.as_ref().and_then(|c| c.get(text));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers `value` for `text`.
    pub fn insert(&self, text: &str, value: Cached) {
        if let Some(c) = &self.entries {
            c.insert(text.into(), Arc::new(value));
        }
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Entries currently held (approximate while evictions are pending).
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Whether nothing is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dims: usize) -> Cached {
        Cached {
            vector: vec![0.5; dims],
            tokens: 3,
            full_len: 3,
        }
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = EmbeddingCache::new(1 << 20);
        assert!(cache.get("a").is_none());
        cache.insert("a", entry(4));
        assert_eq!(*cache.get("a").unwrap(), entry(4));
        assert_eq!(cache.stats(), (1, 1));
    }

    #[test]
    fn stays_within_its_byte_bound() {
        // 384-dim entries weigh about 1.6 KB: 16 KB holds about ten.
        let cache = EmbeddingCache::new(16 * 1024);
        for i in 0..200 {
            cache.insert(&format!("text {i}"), entry(384));
        }
        let held = cache.len();
        assert!(held <= 10, "{held} entries in 16 KiB");
    }

    #[test]
    fn zero_bytes_disables_it() {
        let cache = EmbeddingCache::new(0);
        cache.insert("a", entry(4));
        assert!(cache.get("a").is_none());
        assert!(cache.is_empty());
    }
}
