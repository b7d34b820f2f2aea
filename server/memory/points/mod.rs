//! Points of vector collections: validated, embedded when given as text,
//! normalised for cosine, merged into near-duplicates when the collection
//! asks for it, and written to the store in one transaction per request.
//! The store is the source of truth; each collection's search index
//! ([`super::indexes`]) follows it under the collection's lock, and recent
//! search results are cached ([`super::search_cache`]) until the next write.
//!
//! - [`types`]: what the engine takes and gives back.
//! - [`validate`]: the limits of point requests and their checks.
//! - [`upsert`]: Upsert, with near-duplicate merging.
//! - [`search`]: Search and SearchBatch.
//! - this file: the engine itself, GetPoints, DeletePoints, Count,
//!   CollectionStats and deleting a collection with its index.

mod search;
mod types;
mod upsert;
pub(crate) mod validate;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

pub use types::{
    CollectionStats, Deleted, Hit, Include, Point, PointData, PointInput, Query, SearchParams,
    SearchResult, Selector, UpsertOutcome, UpsertStatus, Upserted,
};
use validate::check_ids;

use super::collections::{Collection, Collections, Metric};
use super::filter::Filter;
use super::indexes::{Change, Indexes, Slot, Written};
use super::search_cache::SearchCache;
use crate::common::blocking;
use crate::embed::TextEmbedder;
use crate::error::{Error, Result, Violations};
use crate::store::PointStore;

/// The points engine.
#[derive(Debug, Clone)]
pub struct Points {
    store: Arc<dyn PointStore>,
    collections: Collections,
    embedder: Option<Arc<dyn TextEmbedder>>,
    indexes: Indexes,
    cache: SearchCache,
    /// `[memory] max_index_bytes`: the largest index a write may grow a
    /// collection to.
    max_index_bytes: u64,
}

/// A stored payload as a JSON object.
pub(super) fn payload_of(stored: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(stored)
        .map_err(|e| Error::Internal(format!("stored payload is unreadable: {e}")))
}

/// Whether a score is within the caller's threshold (at least it for
/// similarities, at most it for distances).
pub(super) fn passes(metric: Metric, threshold: Option<f32>, score: f32) -> bool {
    threshold.is_none_or(|t| match metric {
        Metric::L2 => score <= t,
        Metric::Cosine | Metric::Dot => score >= t,
    })
}

impl Points {
    /// Points on `store`; `embedder` embeds text points (None when the
    /// embedding service is disabled); writes that would grow an index past
    /// `max_index_bytes` are refused.
    pub fn new(
        store: Arc<dyn PointStore>,
        collections: Collections,
        embedder: Option<Arc<dyn TextEmbedder>>,
        indexes: Indexes,
        cache: SearchCache,
        max_index_bytes: u64,
    ) -> Self {
        Self {
            store,
            collections,
            embedder,
            indexes,
            cache,
            max_index_bytes,
        }
    }

    /// The embedder for text points and queries, or NotReady when the
    /// embedding service is disabled.
    fn embedder(&self) -> Result<&Arc<dyn TextEmbedder>> {
        self.embedder.as_ref().ok_or_else(|| {
            Error::NotReady("the embedding service is disabled on this server".into())
        })
    }

    /// Deletes the collection `name` with its points, and forgets its index
    /// and snapshots (a new collection of that name starts from its own
    /// points); false when there was none.
    pub async fn delete_collection(&self, name: String) -> Result<bool> {
        let deleted = self.collections.delete(name.clone()).await?;
        self.indexes.forget(&name);
        Ok(deleted)
    }

    /// Loads every collection's index, so the first searches after a
    /// restart do not pay for it. Errors are logged; searches retry.
    pub async fn warm_up(&self) {
        let mut token = String::new();
        loop {
            let page = match self.collections.list(100, token).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list collections to load their indexes");
                    return;
                }
            };
            for collection in page.items {
                let name = collection.def.name.clone();
                let loaded = self
                    .with_slot(&collection, |indexes, slot| {
                        indexes.read(slot, |_, _| Ok(()))
                    })
                    .await;
                if let Err(e) = loaded {
                    tracing::warn!(collection = %name, error = %e, "could not load the index");
                }
            }
            if page.next_page_token.is_empty() {
                return;
            }
            token = page.next_page_token;
        }
    }

    /// Runs `f` on the blocking pool with the registry and the slot.
    async fn with_slot<T: Send + 'static>(
        &self,
        collection: &Collection,
        f: impl FnOnce(&Indexes, &Arc<Slot>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let indexes = self.indexes.clone();
        let slot = self.indexes.slot(collection);
        blocking::run("index task", move || f(&indexes, &slot)).await
    }

    /// The points with these ids that exist, in the order asked, with
    /// what `include` asks for.
    pub async fn get(
        &self,
        collection: String,
        ids: Vec<String>,
        include: Include,
    ) -> Result<Vec<Point>> {
        self.collections.resolve(collection.clone()).await?;
        let mut v = Violations::new();
        check_ids("ids", &ids, &mut v);
        v.finish()?;
        let found =
            blocking::with_store(&self.store, move |s| s.get_points(&collection, &ids)).await?;
        found
            .into_iter()
            .map(|p| {
                Ok(Point {
                    payload: include
                        .payload
                        .then(|| payload_of(&p.payload))
                        .transpose()?,
                    vector: include.vector.then_some(p.vector),
                    id: p.id,
                })
            })
            .collect()
    }

    /// Deletes the selected points.
    pub async fn delete(&self, collection: String, selector: Selector) -> Result<Deleted> {
        let collection = self.collections.resolve(collection).await?;
        let mut v = Violations::new();
        match &selector {
            Selector::Ids(ids) => check_ids("ids.ids", ids, &mut v),
            Selector::Filter(filter) => filter.validate("filter", &mut v),
        }
        v.finish()?;
        let name = collection.def.name.clone();
        self.with_slot(&collection, move |indexes, slot| {
            indexes.write(slot, false, move |s, _| {
                // Matching under the lock too: a point written meanwhile
                // cannot escape a filter delete.
                let ids = match selector {
                    Selector::Ids(ids) => ids,
                    Selector::Filter(filter) => matching(s, &name, &filter)?,
                };
                let write = s.delete_points(&name, &ids)?;
                Ok(Written {
                    value: Deleted {
                        count: write.outcome.len() as u64,
                        sequence: write.seq,
                    },
                    seq: write.seq,
                    change: Change {
                        killed: write.outcome,
                        ..Change::default()
                    },
                })
            })
        })
        .await
    }

    /// Number of points, of those matching `filter` if given.
    pub async fn count(&self, collection: String, filter: Option<Filter>) -> Result<u64> {
        self.collections.resolve(collection.clone()).await?;
        match filter {
            None => blocking::with_store(&self.store, move |s| s.count_points(&collection)).await,
            Some(filter) => {
                let mut v = Violations::new();
                filter.validate("filter", &mut v);
                v.finish()?;
                let ids =
                    blocking::with_store(&self.store, move |s| matching(s, &collection, &filter))
                        .await?;
                Ok(ids.len() as u64)
            }
        }
    }

    /// Counts, sizes and cache figures of `collection`.
    pub async fn stats(&self, collection: String) -> Result<CollectionStats> {
        let collection = self.collections.resolve(collection).await?;
        let name = collection.def.name.clone();
        self.with_slot(&collection, move |indexes, slot| {
            let index = indexes.stats(slot)?;
            let store = indexes.store();
            Ok(CollectionStats {
                points: store.count_points(&name)?,
                disk_bytes: store.collection_bytes(&name)? + index.snapshot_bytes,
                cache_hits: slot.cache_hits.load(Ordering::Relaxed),
                cache_misses: slot.cache_misses.load(Ordering::Relaxed),
                index,
            })
        })
        .await
    }
}

/// Ids of the points of `collection` whose payload matches `filter`.
fn matching(s: &dyn PointStore, collection: &str, filter: &Filter) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    s.scan_payloads(collection, &mut |id, payload| {
        if filter.matches(&Value::Object(payload_of(payload)?)) {
            ids.push(id.to_owned());
        }
        Ok(())
    })?;
    Ok(ids)
}
