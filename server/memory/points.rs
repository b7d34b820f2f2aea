//! Points of vector collections: validated, embedded when given as text,
//! normalised for cosine, and written to the store in one transaction per
//! request. The store is the source of truth; the search index (next) is
//! derived from it using the labels and change sequence numbers it records.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::collections::{CollectionDef, Collections, Metric};
use super::filter::Filter;
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

/// The points engine.
#[derive(Debug, Clone)]
pub struct Points {
    store: Arc<dyn PointStore>,
    collections: Collections,
    embedder: Option<Arc<dyn TextEmbedder>>,
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

fn normalise(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
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
        }
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
                if !normalise(&mut p.vector) {
                    return Err(Error::invalid(
                        format!("points[{i}].vector"),
                        "a zero vector has no direction, so no cosine similarity",
                    ));
                }
            }
        }
        let ids: Vec<String> = stored.iter().map(|p| p.id.clone()).collect();
        let write = self
            .blocking(move |s| s.upsert_points(&collection, &stored))
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
            .blocking(move |s| s.delete_points(&collection, &ids))
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
