//! Points of vector collections: validated, embedded when given as text,
//! normalised for cosine, and written to the store in one transaction per
//! request. The store is the source of truth; the search index (next) is
//! derived from it using the labels and change sequence numbers it records.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::collections::{CollectionDef, Collections, Metric};
use super::filter::Filter;
use super::index::VectorIndex;
use crate::embed::engine::l2_normalize;
use crate::error::{Error, FieldViolation, Result};
use crate::store::{PointStore, StoredPoint};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertStatus {
    /// New id.
    Created,
    /// Replaced an existing point.
    Updated,
}

/// The outcome for one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// The point's id (generated if it was empty).
    pub id: String,
    /// Created or updated.
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
    /// Drop results scoring worse than this.
    pub score_threshold: Option<f32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point.
    pub point: Point,
    /// Similarity (cosine, dot) or squared distance (L2).
    pub score: f32,
}

/// Built indexes by collection name. Writes to the store and to a loaded
/// index happen under this lock, and so does loading, so an index never
/// misses a committed write (see `apply`).
type Indexes = Arc<Mutex<HashMap<String, VectorIndex>>>;

/// The points engine.
#[derive(Debug, Clone)]
pub struct Points {
    store: Arc<dyn PointStore>,
    collections: Collections,
    embedder: Option<Arc<dyn TextEmbedder>>,
    indexes: Indexes,
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

fn payload_of(stored: &str) -> Result<Map<String, Value>> {
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
    ) -> Self {
        Self {
            store,
            collections,
            embedder,
            indexes: Arc::default(),
        }
    }

    /// Forgets the index of a deleted collection (a new collection of that
    /// name starts from its own points).
    pub fn forget(&self, collection: &str) {
        self.indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(collection);
    }

    /// Runs `f` with the store and the index registry on the blocking pool.
    async fn with_indexes<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn PointStore, &Indexes) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        let indexes = Arc::clone(&self.indexes);
        tokio::task::spawn_blocking(move || f(&*store, &indexes))
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
    pub async fn upsert(
        &self,
        collection: String,
        points: Vec<PointInput>,
    ) -> Result<(Vec<Upserted>, u64)> {
        let def = self.collections.get(collection.clone()).await?.def;
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
                    check_vector(&def, &format!("points[{i}].vector"), &vector, &mut v);
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
        let ids: Vec<String> = stored.iter().map(|p| p.id.clone()).collect();
        let write = self
            .with_indexes(move |s, indexes| {
                // Commit, then update a loaded index, both under the
                // registry lock: a concurrent first load either sees this
                // commit in the store or is already registered to receive it.
                let mut indexes = indexes.lock().unwrap_or_else(|p| p.into_inner());
                let write = s.upsert_points(&collection, &stored)?;
                if let Some(index) = indexes.get_mut(&collection) {
                    let added: Vec<(i64, &[f32])> = write
                        .outcome
                        .iter()
                        .zip(&stored)
                        .map(|(u, p)| (u.label, p.vector.as_slice()))
                        .collect();
                    let replaced: Vec<i64> =
                        write.outcome.iter().filter_map(|u| u.replaced).collect();
                    index.apply_upsert(&added, &replaced)?;
                }
                Ok(write)
            })
            .await?;
        let outcome = ids
            .into_iter()
            .zip(write.outcome)
            .map(|(id, u)| Upserted {
                id,
                status: if u.replaced.is_some() {
                    UpsertStatus::Updated
                } else {
                    UpsertStatus::Created
                },
            })
            .collect();
        Ok((outcome, write.seq))
    }

    /// The points with these ids that exist, in the order asked.
    pub async fn get(&self, collection: String, ids: Vec<String>) -> Result<Vec<Point>> {
        self.collections.get(collection.clone()).await?;
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
        self.collections.get(collection.clone()).await?;
        let ids = match selector {
            Selector::Ids(ids) => {
                let mut v = Vec::new();
                check_ids("ids.ids", &ids, &mut v);
                super::validate::finish(v)?;
                ids
            }
            Selector::Filter(filter) => {
                filter.validate("filter")?;
                self.matching(collection.clone(), filter).await?
            }
        };
        let write = self
            .with_indexes(move |s, indexes| {
                let mut indexes = indexes.lock().unwrap_or_else(|p| p.into_inner());
                let write = s.delete_points(&collection, &ids)?;
                if let Some(index) = indexes.get_mut(&collection) {
                    index.apply_delete(&write.outcome);
                }
                Ok(write)
            })
            .await?;
        Ok((write.outcome.len() as u64, write.seq))
    }

    /// Number of points, of those matching `filter` if given.
    pub async fn count(&self, collection: String, filter: Option<Filter>) -> Result<u64> {
        self.collections.get(collection.clone()).await?;
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
        let def = self.collections.get(p.collection.clone()).await?.def;
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
        if let Some(filter) = &p.filter
            && let Err(Error::InvalidArgument(more)) = filter.validate("filter")
        {
            v.extend(more);
        }
        let mut query = match p.query {
            Some(Query::Vector(vector)) => {
                check_vector(&def, "vector", &vector, &mut v);
                vector
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
                    Vec::new()
                } else {
                    let embedder = self.embedder.as_ref().ok_or_else(|| {
                        Error::NotReady("the embedding service is disabled on this server".into())
                    })?;
                    let model = def.embedding_model.clone().unwrap_or_default();
                    embedder.embed_texts(&model, vec![text]).await?.remove(0)
                }
            }
            None => {
                v.push(FieldViolation::new("query", "set vector or text"));
                Vec::new()
            }
        };
        super::validate::finish(v)?;
        if def.metric == Metric::Cosine && !l2_normalize(&mut query) {
            return Err(Error::invalid(
                "vector",
                "a zero vector has no direction, so no cosine similarity",
            ));
        }

        let collection = p.collection;
        let (k, filter, ef, threshold, metric) =
            (p.k, p.filter, p.ef_search, p.score_threshold, def.metric);
        self.with_indexes(move |s, indexes| {
            let mut indexes = indexes.lock().unwrap_or_else(|p| p.into_inner());
            if !indexes.contains_key(&collection) {
                let built = VectorIndex::build(&def, s.point_vectors(&collection)?)?;
                indexes.insert(collection.clone(), built);
            }
            let index = indexes.get_mut(&collection).expect("just inserted");
            let live = index.live();
            let mut fetch = if filter.is_some() {
                (k * 4).min(live.max(1))
            } else {
                k
            };
            loop {
                let found = index.search(&query, fetch, ef)?;
                let labels: Vec<i64> = found.iter().map(|(l, _)| *l).collect();
                let scores: HashMap<i64, f32> = found.into_iter().collect();
                let mut hits = Vec::new();
                for (label, stored) in s.points_by_labels(&collection, &labels)? {
                    let payload = payload_of(&stored.payload)?;
                    if filter
                        .as_ref()
                        .is_some_and(|f| !f.matches(&Value::Object(payload.clone())))
                    {
                        continue;
                    }
                    let score = scores[&label];
                    let passes = threshold.is_none_or(|t| match metric {
                        Metric::L2 => score <= t,
                        Metric::Cosine | Metric::Dot => score >= t,
                    });
                    if passes {
                        hits.push(Hit {
                            point: Point {
                                id: stored.id,
                                vector: stored.vector,
                                payload,
                            },
                            score,
                        });
                    }
                }
                // Enough matches, or nothing more to look at: done.
                if hits.len() >= k || fetch >= live || filter.is_none() {
                    hits.truncate(k);
                    return Ok(hits);
                }
                fetch = (fetch * 4).min(live);
            }
        })
        .await
    }

    /// Ids of the points whose payload matches.
    async fn matching(&self, collection: String, filter: Filter) -> Result<Vec<String>> {
        self.blocking(move |s| {
            let mut ids = Vec::new();
            s.scan_payloads(&collection, &mut |id, payload| {
                if filter.matches(&Value::Object(payload_of(payload)?)) {
                    ids.push(id.to_owned());
                }
                Ok(())
            })?;
            Ok(ids)
        })
        .await
    }
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
