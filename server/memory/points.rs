//! Points of vector collections: validated, embedded when given as text,
//! normalised for cosine, merged into near-duplicates when the collection
//! asks for it, and written to the store in one transaction per request. The
//! store is the source of truth; each collection's search index
//! ([`super::indexes`]) follows it under the collection's lock, and recent
//! search results are cached ([`super::search_cache`]) until the next write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use super::collections::{Collection, CollectionDef, Collections, Metric};
use super::filter::Filter;
use super::index::VectorIndex;
use super::indexes::{Change, IndexStats, Indexes, Slot, Written};
use super::search_cache::{QueryKey, SearchCache, SearchKey};
use super::search_job::IndexSearch;
use crate::embed::engine::l2_normalize;
use crate::error::{Error, FieldViolation, Result};
use crate::store::{PointStore, StoredPoint, UpsertedPoint};

/// Most points in one request.
pub const MAX_POINTS: usize = 10_000;
/// Longest point id.
pub const MAX_ID_BYTES: usize = 512;
/// Largest payload, as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A point's data: a vector, or text for the collection's embedding model.
#[derive(Debug, Clone, PartialEq)]
pub enum PointData {
    /// A vector of the collection's dimensions.
    Vector(Vec<f32>),
    /// Text to embed.
    Text(String),
}

/// One point of an Upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct PointInput {
    /// Id; empty means "generate a ULID".
    pub id: String,
    /// Vector or text; None is invalid.
    pub data: Option<PointData>,
    /// Payload object.
    pub payload: Map<String, Value>,
}

/// What happened to one upserted point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertStatus {
    /// New id.
    Created,
    /// Replaced an existing point.
    Updated,
    /// Merged into this existing near-duplicate (see [`Points::upsert`]).
    Merged(String),
}

/// The outcome for one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// The point's id (generated if it was empty).
    pub id: String,
    /// Created, updated or merged.
    pub status: UpsertStatus,
}

/// A stored point as returned by GetPoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Id.
    pub id: String,
    /// Vector (as stored: normalised for cosine collections).
    pub vector: Vec<f32>,
    /// Payload object.
    pub payload: Map<String, Value>,
}

/// Which points a DeletePoints removes.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// These ids.
    Ids(Vec<String>),
    /// Every point whose payload matches.
    Filter(Filter),
}

/// Turns texts into vectors with a named embedding model.
#[async_trait::async_trait]
pub trait TextEmbedder: Send + Sync + std::fmt::Debug + 'static {
    /// One vector per text, as the model makes them.
    async fn embed_texts(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;
}

/// Most results of one search.
pub const MAX_K: usize = 1000;

/// What a search looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// A vector of the collection's dimensions.
    Vector(Vec<f32>),
    /// Text for the collection's embedding model.
    Text(String),
}

/// A Search, in domain terms.
#[derive(Debug, Clone)]
pub struct SearchParams {
    /// Collection name.
    pub collection: String,
    /// The query; None is invalid.
    pub query: Option<Query>,
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
    /// Return payloads.
    pub with_payload: bool,
    /// Return vectors.
    pub with_vector: bool,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point.
    pub point: Point,
    /// Similarity (cosine, dot) or squared distance (L2).
    pub score: f32,
}

/// A collection's figures for CollectionStats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectionStats {
    /// Live points.
    pub points: u64,
    /// Bytes of its rows in the store plus its snapshots.
    pub disk_bytes: u64,
    /// Search cache hits since start.
    pub cache_hits: u64,
    /// Search cache misses since start.
    pub cache_misses: u64,
    /// The index's figures.
    pub index: IndexStats,
}

/// The points engine.
#[derive(Debug, Clone)]
pub struct Points {
    store: Arc<dyn PointStore>,
    collections: Collections,
    embedder: Option<Arc<dyn TextEmbedder>>,
    indexes: Indexes,
    cache: SearchCache,
}

fn check_id(field: String, id: &str, out: &mut Vec<FieldViolation>) {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        out.push(FieldViolation::new(
            field,
            format!("must be 1 to {MAX_ID_BYTES} bytes, got {}", id.len()),
        ));
    }
}

fn check_ids(field: &str, ids: &[String], out: &mut Vec<FieldViolation>) {
    if ids.is_empty() || ids.len() > MAX_POINTS {
        out.push(FieldViolation::new(
            field,
            format!("must hold 1 to {MAX_POINTS} ids, got {}", ids.len()),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        check_id(format!("{field}[{i}]"), id, out);
    }
}

pub(super) fn payload_of(stored: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(stored)
        .map_err(|e| Error::Internal(format!("stored payload is unreadable: {e}")))
}

impl Points {
    /// Points on `store`; `embedder` embeds text points (None when the
    /// embedding service is disabled).
    pub fn new(
        store: Arc<dyn PointStore>,
        collections: Collections,
        embedder: Option<Arc<dyn TextEmbedder>>,
        indexes: Indexes,
        cache: SearchCache,
    ) -> Self {
        Self {
            store,
            collections,
            embedder,
            indexes,
            cache,
        }
    }

    /// Forgets the index and snapshots of a deleted collection (a new
    /// collection of that name starts from its own points).
    pub fn forget(&self, collection: &str) {
        self.indexes.forget(collection);
    }

    /// The index registry (for snapshots at shutdown and warm-up).
    pub fn indexes(&self) -> &Indexes {
        &self.indexes
    }

    /// Loads every collection's index, so the first searches after a
    /// restart do not pay for it. Errors are logged; searches retry.
    pub async fn warm_up(&self) {
        let mut token = String::new();
        loop {
            let (page, next) = match self.collections.list(100, token).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list collections to load their indexes");
                    return;
                }
            };
            for collection in page {
                let name = collection.def.name.clone();
                let slot = self.indexes.slot(&collection);
                let indexes = self.indexes.clone();
                let loaded =
                    tokio::task::spawn_blocking(move || indexes.read(&slot, |_, _| Ok(()))).await;
                if let Ok(Err(e)) = loaded {
                    tracing::warn!(collection = %name, error = %e, "could not load the index");
                }
            }
            if next.is_empty() {
                return;
            }
            token = next;
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
        tokio::task::spawn_blocking(move || f(&indexes, &slot))
            .await
            .map_err(|e| Error::Internal(format!("index task failed: {e}")))?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn PointStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }

    /// Inserts or replaces `points` in `collection`, all or nothing; returns
    /// each point's outcome and the write's change sequence number.
    ///
    /// In a collection with a `dedup_threshold`, a point whose id is new and
    /// whose nearest stored neighbour is at least that similar (cosine or
    /// dot score; `1 / (1 + squared distance)` for L2) is merged into that
    /// neighbour instead of being added: the neighbour keeps its id and
    /// vector, and its payload takes the new point's fields on top of its
    /// own (a shallow merge: new keys are added, existing keys overwritten).
    /// Points are compared with what was stored before the request, not with
    /// each other.
    pub async fn upsert(
        &self,
        collection: String,
        points: Vec<PointInput>,
    ) -> Result<(Vec<Upserted>, u64)> {
        let collection = self.collections.resolve(collection).await?;
        let def = &collection.def;
        let mut v = Vec::new();
        if points.is_empty() || points.len() > MAX_POINTS {
            v.push(FieldViolation::new(
                "points",
                format!("must hold 1 to {MAX_POINTS} points, got {}", points.len()),
            ));
        }
        let mut seen = HashSet::new();
        let mut texts = Vec::new();
        let mut stored = Vec::with_capacity(points.len());
        for (i, p) in points.into_iter().enumerate() {
            let id = if p.id.is_empty() {
                ulid::Ulid::new().to_string()
            } else {
                check_id(format!("points[{i}].id"), &p.id, &mut v);
                p.id
            };
            if !seen.insert(id.clone()) {
                v.push(FieldViolation::new(
                    format!("points[{i}].id"),
                    format!("{id:?} appears more than once in this request"),
                ));
            }
            let payload = Value::Object(p.payload).to_string();
            if payload.len() > MAX_PAYLOAD_BYTES {
                v.push(FieldViolation::new(
                    format!("points[{i}].payload"),
                    format!(
                        "is {} bytes as JSON, more than {MAX_PAYLOAD_BYTES}",
                        payload.len()
                    ),
                ));
            }
            let vector = match p.data {
                Some(PointData::Vector(vector)) => {
                    check_vector(def, &format!("points[{i}].vector"), &vector, &mut v);
                    vector
                }
                Some(PointData::Text(text)) => {
                    if def.embedding_model.is_none() {
                        v.push(FieldViolation::new(
                            format!("points[{i}].text"),
                            format!(
                                "collection {:?} has no embedding_model; send vectors",
                                def.name
                            ),
                        ));
                    } else if text.is_empty() {
                        v.push(FieldViolation::new(
                            format!("points[{i}].text"),
                            "must not be empty",
                        ));
                    }
                    texts.push((stored.len(), text));
                    Vec::new()
                }
                None => {
                    v.push(FieldViolation::new(
                        format!("points[{i}]"),
                        "needs a vector or a text",
                    ));
                    Vec::new()
                }
            };
            stored.push(StoredPoint {
                id,
                vector,
                payload,
            });
        }
        super::validate::finish(v)?;

        if !texts.is_empty() {
            let model = def.embedding_model.clone().unwrap_or_default();
            let embedder = self.embedder.as_ref().ok_or_else(|| {
                Error::NotReady("the embedding service is disabled on this server".into())
            })?;
            let (at, texts): (Vec<usize>, Vec<String>) = texts.into_iter().unzip();
            for (i, vector) in at
                .into_iter()
                .zip(embedder.embed_texts(&model, texts).await?)
            {
                stored[i].vector = vector;
            }
        }
        if def.metric == Metric::Cosine {
            for (i, p) in stored.iter_mut().enumerate() {
                if !l2_normalize(&mut p.vector) {
                    return Err(Error::invalid(
                        format!("points[{i}].vector"),
                        "a zero vector has no direction, so no cosine similarity",
                    ));
                }
            }
        }
        let name = def.name.clone();
        let dedup = def.dedup_threshold;
        self.with_slot(&collection, move |indexes, slot| {
            indexes.write(slot, dedup.is_some(), move |s, index| {
                // Under the collection's lock: no write can slip between the
                // duplicate check and the commit.
                let ids: Vec<String> = stored.iter().map(|p| p.id.clone()).collect();
                let (rows, placed) = match (dedup, index) {
                    (Some(threshold), Some(index)) => {
                        merge_duplicates(s, &name, index, threshold, stored)?
                    }
                    _ => {
                        let placed = (0..stored.len()).map(Placed::Row).collect();
                        (stored, placed)
                    }
                };
                let write = s.upsert_points(&name, &rows)?;
                let mut change = Change {
                    killed: write.outcome.iter().filter_map(|u| u.replaced).collect(),
                    ..Change::default()
                };
                for (u, p) in write.outcome.iter().zip(&rows) {
                    change.added.push(u.label, &p.vector);
                    change.ids.push(p.id.clone());
                }
                let value = outcomes(&ids, &write.outcome, placed);
                Ok(Written {
                    value: (value, write.seq),
                    seq: write.seq,
                    change,
                })
            })
        })
        .await
    }

    /// The points with these ids that exist, in the order asked.
    pub async fn get(&self, collection: String, ids: Vec<String>) -> Result<Vec<Point>> {
        self.collections.resolve(collection.clone()).await?;
        let mut v = Vec::new();
        check_ids("ids", &ids, &mut v);
        super::validate::finish(v)?;
        let found = self
            .blocking(move |s| s.get_points(&collection, &ids))
            .await?;
        found
            .into_iter()
            .map(|p| {
                Ok(Point {
                    payload: payload_of(&p.payload)?,
                    id: p.id,
                    vector: p.vector,
                })
            })
            .collect()
    }

    /// Deletes the selected points; returns how many existed and the change
    /// sequence number.
    pub async fn delete(&self, collection: String, selector: Selector) -> Result<(u64, u64)> {
        let collection = self.collections.resolve(collection).await?;
        match &selector {
            Selector::Ids(ids) => {
                let mut v = Vec::new();
                check_ids("ids.ids", ids, &mut v);
                super::validate::finish(v)?;
            }
            Selector::Filter(filter) => filter.validate("filter")?,
        }
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
                    value: (write.outcome.len() as u64, write.seq),
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
            None => self.blocking(move |s| s.count_points(&collection)).await,
            Some(filter) => {
                filter.validate("filter")?;
                Ok(self.matching(collection, filter).await?.len() as u64)
            }
        }
    }

    /// The `k` nearest points to the query, best first; with a filter, the
    /// `k` nearest among those whose payload matches (never fewer when at
    /// least `k` match).
    pub async fn search(&self, p: SearchParams) -> Result<Vec<Hit>> {
        let collection = self.collections.resolve(p.collection.clone()).await?;
        let def = &collection.def;
        let mut v = Vec::new();
        if p.k == 0 || p.k > MAX_K {
            v.push(FieldViolation::new(
                "k",
                format!("must be 1 to {MAX_K}, got {}", p.k),
            ));
        }
        if let Some(ef) = p.ef_search
            && !(1..=4096).contains(&ef)
        {
            v.push(FieldViolation::new(
                "ef_search",
                format!("must be 1 to 4096, got {ef}"),
            ));
        }
        if let Some(nprobe) = p.nprobe {
            let nlist = match def.index {
                super::collections::IndexSpec::Ivf { nlist, .. } => nlist,
                _ => 0,
            };
            if nlist == 0 || !(1..=nlist).contains(&nprobe) {
                v.push(FieldViolation::new(
                    "nprobe",
                    format!(
                        "must be 1 to nlist ({nlist}) on an IVF collection, got {nprobe}; \
                         {:?} is {}",
                        def.name,
                        def.factory()
                    ),
                ));
            }
        }
        if let Some(filter) = &p.filter
            && let Err(Error::InvalidArgument(more)) = filter.validate("filter")
        {
            v.extend(more);
        }
        let query_key = match &p.query {
            Some(Query::Vector(vector)) => {
                check_vector(def, "vector", vector, &mut v);
                QueryKey::Vector(vector.iter().map(|x| x.to_bits()).collect())
            }
            Some(Query::Text(text)) => {
                if def.embedding_model.is_none() || text.is_empty() {
                    v.push(FieldViolation::new(
                        "text",
                        format!(
                            "needs a non-empty text and a collection with an embedding_model; {:?} has {}",
                            def.name,
                            def.embedding_model.as_deref().unwrap_or("none")
                        ),
                    ));
                }
                QueryKey::Text(text.clone())
            }
            None => {
                v.push(FieldViolation::new("query", "set vector or text"));
                QueryKey::Text(String::new())
            }
        };
        super::validate::finish(v)?;

        let slot = self.indexes.slot(&collection);
        let key = SearchKey {
            collection: def.name.clone(),
            created_at: collection.created_at,
            generation: slot.generation(),
            query: query_key,
            k: p.k,
            filter: p.filter.as_ref().map(|f| format!("{f:?}")),
            ef_search: p.ef_search,
            nprobe: p.nprobe,
            threshold: p.score_threshold.map(f32::to_bits),
            with_payload: p.with_payload,
            with_vector: p.with_vector,
        };
        if let Some(cached) = self.cache.get(&key) {
            slot.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cached.hits.clone());
        }
        if self.cache.enabled() {
            slot.cache_misses.fetch_add(1, Ordering::Relaxed);
        }

        let mut query = match p.query {
            Some(Query::Text(text)) => {
                let embedder = self.embedder.as_ref().ok_or_else(|| {
                    Error::NotReady("the embedding service is disabled on this server".into())
                })?;
                let model = def.embedding_model.clone().unwrap_or_default();
                embedder.embed_texts(&model, vec![text]).await?.remove(0)
            }
            Some(Query::Vector(vector)) => vector,
            None => unreachable!("rejected above"),
        };
        if def.metric == Metric::Cosine && !l2_normalize(&mut query) {
            return Err(Error::invalid(
                "vector",
                "a zero vector has no direction, so no cosine similarity",
            ));
        }

        let job = IndexSearch {
            collection: def.name.clone(),
            query,
            k: p.k,
            filter: p.filter,
            ef_search: p.ef_search,
            nprobe: p.nprobe,
            score_threshold: p.score_threshold,
            metric: def.metric,
            with_rows: p.with_payload || p.with_vector,
        };
        let found = job.run(&self.indexes, slot, def).await?;
        let hits = found.hits.clone();
        self.cache.insert(key, found);
        Ok(hits)
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

    /// Ids of the points whose payload matches.
    async fn matching(&self, collection: String, filter: Filter) -> Result<Vec<String>> {
        self.blocking(move |s| matching(s, &collection, &filter))
            .await
    }
}

/// Where one input point of an upsert went.
#[derive(Debug, Clone, PartialEq)]
enum Placed {
    /// Written as this row.
    Row(usize),
    /// Merged into the stored point with this id.
    Merged(String),
}

/// Plans a dedup upsert: the rows to write (ids unique) and where each input
/// went. See [`Points::upsert`] for the rule.
fn merge_duplicates(
    s: &dyn PointStore,
    collection: &str,
    index: &mut VectorIndex,
    threshold: f32,
    inputs: Vec<StoredPoint>,
) -> Result<(Vec<StoredPoint>, Vec<Placed>)> {
    let ids: Vec<String> = inputs.iter().map(|p| p.id.clone()).collect();
    let existing: HashSet<String> = s
        .get_points(collection, &ids)?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let metric = index.metric();
    let mut rows: Vec<StoredPoint> = Vec::with_capacity(inputs.len());
    let mut row_of: HashMap<String, usize> = HashMap::new();
    let mut placed = Vec::with_capacity(inputs.len());
    for point in inputs {
        let twin = if existing.contains(&point.id) {
            None
        } else {
            index
                .search(&point.vector, 1, None, None)?
                .first()
                .copied()
                .filter(|(_, score)| similarity(metric, *score) >= threshold)
        };
        let Some((label, _)) = twin else {
            // An explicit write replaces whatever this request planned for
            // the id so far.
            let r = match row_of.get(&point.id) {
                Some(&r) => {
                    rows[r] = point;
                    r
                }
                None => {
                    row_of.insert(point.id.clone(), rows.len());
                    rows.push(point);
                    rows.len() - 1
                }
            };
            placed.push(Placed::Row(r));
            continue;
        };
        let Some((_, target)) = s.points_by_labels(collection, &[label])?.pop() else {
            return Err(Error::Internal(format!(
                "index label {label} of {collection:?} has no stored point"
            )));
        };
        let r = match row_of.get(&target.id) {
            Some(&r) => r,
            None => {
                row_of.insert(target.id.clone(), rows.len());
                rows.push(target);
                rows.len() - 1
            }
        };
        let mut merged = payload_of(&rows[r].payload)?;
        merged.extend(payload_of(&point.payload)?);
        let merged = Value::Object(merged).to_string();
        if merged.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::invalid(
                format!("points[{}].payload", placed.len()),
                format!(
                    "merged into near-duplicate {:?}, the payload would be {} bytes as JSON, \
                     more than {MAX_PAYLOAD_BYTES}",
                    rows[r].id,
                    merged.len()
                ),
            ));
        }
        rows[r].payload = merged;
        placed.push(Placed::Merged(rows[r].id.clone()));
    }
    Ok((rows, placed))
}

/// Whether a score is within the caller's threshold (at least it for
/// similarities, at most it for distances).
pub(super) fn passes(metric: Metric, threshold: Option<f32>, score: f32) -> bool {
    threshold.is_none_or(|t| match metric {
        Metric::L2 => score <= t,
        Metric::Cosine | Metric::Dot => score >= t,
    })
}

/// Similarity of a faiss score, for dedup thresholds in (0, 1].
fn similarity(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => score,
        Metric::L2 => 1.0 / (1.0 + score),
    }
}

/// Each input's outcome from the plan and the store's per-row outcome.
fn outcomes(inputs: &[String], written: &[UpsertedPoint], placed: Vec<Placed>) -> Vec<Upserted> {
    inputs
        .iter()
        .zip(placed)
        .map(|(id, place)| Upserted {
            id: id.clone(),
            status: match place {
                Placed::Merged(into) => UpsertStatus::Merged(into),
                Placed::Row(r) if written[r].replaced.is_some() => UpsertStatus::Updated,
                Placed::Row(_) => UpsertStatus::Created,
            },
        })
        .collect()
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

fn check_vector(def: &CollectionDef, field: &str, vector: &[f32], out: &mut Vec<FieldViolation>) {
    if vector.len() != def.dimensions as usize {
        out.push(FieldViolation::new(
            field,
            format!(
                "has {} components; collection {:?} has {} dimensions",
                vector.len(),
                def.name,
                def.dimensions
            ),
        ));
    } else if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        out.push(FieldViolation::new(
            field,
            format!("component {i} is {}, not a finite number", vector[i]),
        ));
    }
}

#[async_trait::async_trait]
impl TextEmbedder for crate::embed::EmbeddingEngine {
    async fn embed_texts(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let out = self
            .embed(crate::embed::EmbedParams {
                model: model.to_owned(),
                inputs: texts,
                normalize: true,
                truncate: true,
                dimensions: None,
            })
            .await
            .map_err(|e| match e {
                // The texts are points here, not `inputs`: say so.
                Error::InvalidArgument(v) => Error::InvalidArgument(
                    v.into_iter()
                        .map(|f| {
                            FieldViolation::new(
                                f.field.replace("inputs", "points(text)"),
                                f.description,
                            )
                        })
                        .collect(),
                ),
                other => other,
            })?;
        Ok(out.vectors.into_iter().map(|v| v.values).collect())
    }
}
