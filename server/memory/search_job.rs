//! The part of a Search that runs against a collection's index, and where
//! it runs.
//!
//! A search is blocking work (faiss, and SQLite when payloads are wanted),
//! so by default it goes to the [search threads](super::search_pool), one
//! per core, in arrival order. Handing it over and getting the result back
//! costs two thread wake-ups when they are idle, 70–120 µs on the 2-vCPU
//! machines of BENCHMARKS.md, which is a third of a typical 100k-point
//! HNSW search. So a search that reads nothing from the store and is
//! predicted to be short (its collection's previous search, scaled by the
//! effort asked for, took less than [`INLINE_BUDGET`]) runs on the async
//! worker that received it, if the collection's lock is free at that
//! moment (no writer holds or awaits it). A misprediction costs one worker
//! one search; a slow search, a load, a write holding the lock or a store
//! read never blocks a worker. A search predicted longer than
//! [`LONG_SEARCH`], or with nothing to predict from (the first, which may
//! load the index), goes to tokio's blocking pool instead, so it does not
//! hold a search thread and the searches queued behind it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::collections::{CollectionDef, IndexSpec, Metric};
use super::filter::Filter;
use super::indexes::{Indexes, Slot};
use super::points::{Hit, Include, Point, passes, payload_of};
use super::search_cache::CachedHits;
use super::search_pool::SearchPool;
use super::segments::Segments;
use crate::common::blocking;
use crate::error::Result;
use crate::store::PointStore;

/// Longest predicted search that runs on an async worker: about five
/// hand-offs, so that the hand-off is a sizeable share of what it saves,
/// and short enough that other tasks on that worker barely notice.
pub const INLINE_BUDGET: Duration = Duration::from_micros(500);

/// Shortest predicted search that runs beside the search threads rather
/// than on one: twenty typical 100k-point searches, long enough that the
/// searches queued behind it would feel it.
pub const LONG_SEARCH: Duration = Duration::from_millis(10);

/// How long a collection's previous search took and at what effort, to
/// predict the next one's cost. One atomic word: the duration in µs (low 32
/// bits) and the effort (high 32 bits), 0 before the first search.
#[derive(Debug, Default)]
pub struct LastSearch(AtomicU64);

impl LastSearch {
    /// Records that a search at `effort` took `took`.
    pub fn record(&self, effort: u32, took: Duration) {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX).max(1);
        self.0.store(
            (u64::from(effort.max(1)) << 32) | u64::from(micros),
            Ordering::Relaxed,
        );
    }

    /// How long a search at `effort` should take: the previous one scaled
    /// by effort (HNSW's cost grows about linearly with efSearch, IVF's
    /// with lists probed). None before the first search.
    pub fn predict(&self, effort: u32) -> Option<Duration> {
        let last = self.0.load(Ordering::Relaxed);
        let (last_effort, micros) = ((last >> 32) as u32, last as u32);
        if micros == 0 || last_effort == 0 {
            return None;
        }
        let scaled = u64::from(micros) * u64::from(effort.max(1)) / u64::from(last_effort);
        Some(Duration::from_micros(scaled))
    }
}

/// What [`IndexSearch::run`] found, and how long it waited.
#[derive(Debug)]
pub struct Searched {
    /// The results, ready for the search cache.
    pub found: CachedHits,
    /// Time spent waiting for a blocking thread and the collection's lock.
    pub queued: Duration,
}

/// A validated search, ready for the index.
#[derive(Debug)]
pub struct IndexSearch {
    /// Collection name, for store reads.
    pub collection: String,
    /// The query vector, normalised for cosine.
    pub query: Vec<f32>,
    /// Results wanted.
    pub k: usize,
    /// Only points whose payload matches.
    pub filter: Option<Filter>,
    /// HNSW candidate list override.
    pub ef_search: Option<u32>,
    /// IVF lists probed override.
    pub nprobe: Option<u32>,
    /// Drop results scoring worse than this.
    pub score_threshold: Option<f32>,
    /// Rank this many candidates per result by their stored vectors when
    /// the index's scores are quantized (see [`Segments::search_rescored`]).
    pub rescore: Option<usize>,
    /// The collection's metric.
    pub metric: Metric,
    /// What the caller wants of each point besides its id.
    pub include: Include,
}

impl IndexSearch {
    /// Whether the store must be read: for payloads, vectors or a filter.
    fn needs_rows(&self) -> bool {
        self.include.payload || self.include.vector || self.filter.is_some()
    }

    /// How hard faiss works for this search, in the unit the collection's
    /// previous search is scaled by: efSearch for HNSW, lists probed for
    /// IVF, 1 for flat.
    fn effort(&self, def: &CollectionDef) -> u32 {
        match def.index {
            IndexSpec::Hnsw { ef_search, .. } => self
                .ef_search
                .unwrap_or(ef_search)
                .max(self.k as u32)
                .max(1),
            IndexSpec::Ivf { nprobe, .. } => self.nprobe.unwrap_or(nprobe).max(1),
            IndexSpec::Flat => 1,
        }
    }

    /// Runs the search where it is cheapest (see the module docs).
    pub async fn run(
        self,
        indexes: &Indexes,
        slot: Arc<Slot>,
        def: &CollectionDef,
    ) -> Result<Searched> {
        let effort = self.effort(def);
        let predicted = slot.last_search.predict(effort);
        let short = predicted.is_some_and(|predicted| predicted < INLINE_BUDGET);
        // Store reads run on the blocking pool, never on an async worker.
        if short && !self.needs_rows() && self.rescore.is_none() {
            let started = Instant::now();
            if let Some(found) = indexes.try_read_now(&slot, |index, s| self.against(index, s)) {
                slot.last_search.record(effort, started.elapsed());
                return Ok(Searched {
                    found: found?,
                    queued: Duration::ZERO,
                });
            }
        }
        let indexes = indexes.clone();
        let submitted = Instant::now();
        let search = move || {
            indexes.read(&slot, |index, s| {
                let started = Instant::now();
                let found = self.against(index, s);
                slot.last_search.record(effort, started.elapsed());
                Ok(Searched {
                    found: found?,
                    queued: started.duration_since(submitted),
                })
            })
        };
        match predicted {
            Some(predicted) if predicted < LONG_SEARCH => SearchPool::shared().run(search).await,
            _ => blocking::run("index search", search).await,
        }
    }

    /// The search itself. Ids come from the index; the store is read only
    /// for what the caller asked to see or filter on, over-fetching until a
    /// filter has `k` matches or nothing is left to look at.
    fn against(&self, index: Segments<'_>, s: &dyn PointStore) -> Result<CachedHits> {
        let (k, metric, threshold) = (self.k, self.metric, self.score_threshold);
        let live = index.live();
        let mut fetch = if self.filter.is_some() {
            (k * 4).min(live.max(1))
        } else {
            k
        };
        loop {
            let found = match self.rescore {
                Some(oversampling) => index.search_rescored(
                    &self.query,
                    fetch,
                    self.ef_search,
                    self.nprobe,
                    oversampling,
                    s,
                    &self.collection,
                )?,
                None => index.search(&self.query, fetch, self.ef_search, self.nprobe)?,
            };
            if !self.needs_rows() {
                let hits: Vec<Hit> = found
                    .into_iter()
                    .filter(|(_, score)| passes(metric, threshold, *score))
                    .filter_map(|(label, score)| {
                        Some(Hit {
                            point: Point {
                                id: index.id_of(label)?.to_owned(),
                                vector: None,
                                payload: None,
                            },
                            score,
                        })
                    })
                    .collect();
                let bytes = hits.iter().map(|h| h.point.id.len() + 64).sum();
                return Ok(CachedHits { hits, bytes });
            }
            let labels: Vec<i64> = found.iter().map(|(l, _)| *l).collect();
            let scores: HashMap<i64, f32> = found.into_iter().collect();
            let mut hits = Vec::new();
            let mut bytes = 0;
            for (label, stored) in s.points_by_labels(&self.collection, &labels)? {
                let payload = payload_of(&stored.payload)?;
                if self
                    .filter
                    .as_ref()
                    .is_some_and(|f| !f.matches(&Value::Object(payload.clone())))
                {
                    continue;
                }
                let score = scores[&label];
                if passes(metric, threshold, score) {
                    let include = self.include;
                    bytes += stored.id.len() + 64;
                    bytes += if include.vector {
                        stored.vector.len() * 4
                    } else {
                        0
                    };
                    bytes += if include.payload {
                        stored.payload.len()
                    } else {
                        0
                    };
                    hits.push(Hit {
                        point: Point {
                            id: stored.id,
                            vector: include.vector.then_some(stored.vector),
                            payload: include.payload.then_some(payload),
                        },
                        score,
                    });
                }
            }
            // Enough matches, or nothing more to look at: done.
            if hits.len() >= k || fetch >= live || self.filter.is_none() {
                hits.truncate(k);
                return Ok(CachedHits { hits, bytes });
            }
            fetch = (fetch * 4).min(live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_scale_the_last_search_by_effort() {
        let last = LastSearch::default();
        assert_eq!(last.predict(64), None, "nothing known before a search");
        last.record(64, Duration::from_micros(200));
        assert_eq!(last.predict(64), Some(Duration::from_micros(200)));
        assert_eq!(last.predict(256), Some(Duration::from_micros(800)));
        assert_eq!(last.predict(16), Some(Duration::from_micros(50)));
        last.record(1, Duration::from_secs(10_000));
        assert_eq!(
            last.predict(1),
            Some(Duration::from_micros(u64::from(u32::MAX))),
            "durations saturate instead of wrapping"
        );
        last.record(0, Duration::ZERO);
        assert_eq!(last.predict(1), Some(Duration::from_micros(1)));
    }
}
