//! Vector collection definitions: what CreateCollection asks for, with every
//! default resolved and every limit checked, kept durably in the store.
//!
//! A definition maps onto a faiss `index_factory` description (see
//! [`CollectionDef::factory`]); creating a collection builds that index once,
//! empty, so a combination faiss cannot make is refused up front rather than
//! at the first upsert.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use faiss::{MetricType, index_factory};
use serde::{Deserialize, Serialize};

use super::validate::check_name;
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::page::{Page, decode_token, page_size};
use crate::common::sync::lock;
use crate::embed::TextEmbedder;
use crate::error::{Error, Result, Violations};
use crate::store::{CollectionStore, StoredCollection};

/// Largest vector length.
pub const MAX_DIMENSIONS: u32 = 4096;

/// How similarity is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity (vectors normalised, inner product).
    Cosine,
    /// Inner product.
    Dot,
    /// Euclidean distance.
    L2,
}

/// The index structure, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IndexSpec {
    /// Exact search.
    Flat,
    /// HNSW graph.
    Hnsw {
        /// Neighbours per node.
        m: u32,
        /// Build-time candidate list.
        ef_construction: u32,
        /// Search-time candidate list.
        ef_search: u32,
    },
    /// Inverted lists.
    Ivf {
        /// Clusters.
        nlist: u32,
        /// Clusters visited per search.
        nprobe: u32,
    },
}

/// Vector compression inside the index, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Quantization {
    /// float32.
    None,
    /// 8-bit scalar.
    Sq8,
    /// 4-bit scalar.
    Sq4,
    /// Product quantization.
    Pq {
        /// Sub-vectors.
        subquantizers: u32,
        /// Bits per code.
        bits: u32,
    },
}

/// A collection's definition, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionDef {
    /// Name.
    pub name: String,
    /// Vector length.
    pub dimensions: u32,
    /// Similarity.
    pub metric: Metric,
    /// Index structure.
    pub index: IndexSpec,
    /// Compression.
    pub quantization: Quantization,
    /// Model for text points and queries.
    pub embedding_model: Option<String>,
    /// Near-duplicate merge threshold.
    pub dedup_threshold: Option<f32>,
}

/// A collection as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    /// The definition.
    pub def: CollectionDef,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Live points.
    pub points_count: u64,
}

/// What a CreateCollection asks for; zeros and `None`s mean "default".
#[derive(Debug, Clone, Default)]
pub struct CreateParams {
    /// Name.
    pub name: String,
    /// Vector length; 0 takes the embedding model's.
    pub dimensions: u32,
    /// Similarity; required.
    pub metric: Option<Metric>,
    /// Index; None means HNSW with defaults. Zero fields take defaults.
    pub index: Option<IndexSpec>,
    /// Compression; None means none. Zero PQ fields take defaults.
    pub quantization: Option<Quantization>,
    /// Embedding model id; empty for none.
    pub embedding_model: String,
    /// Dedup threshold.
    pub dedup_threshold: Option<f32>,
}

/// HNSW defaults, Qdrant's and Chroma's: M 16 and efConstruction 100 insert
/// about three times faster than M 32 / 200 and hold half the links; with
/// efSearch 100 recall@10 is 0.98–0.99 on clustered 384-dimensional
/// vectors (README, "Choosing HNSW parameters"; BENCHMARKS.md).
pub const DEFAULT_HNSW: IndexSpec = IndexSpec::Hnsw {
    m: 16,
    ef_construction: 100,
    ef_search: 100,
};

impl CollectionDef {
    /// The faiss `index_factory` description of this collection's index.
    pub fn factory(&self) -> String {
        let code = match self.quantization {
            Quantization::None => "Flat".to_owned(),
            Quantization::Sq8 => "SQ8".to_owned(),
            Quantization::Sq4 => "SQ4".to_owned(),
            Quantization::Pq {
                subquantizers,
                bits,
            } => format!("PQ{subquantizers}x{bits}"),
        };
        match self.index {
            IndexSpec::Flat => code,
            IndexSpec::Hnsw { m, .. } => format!("HNSW{m},{code}"),
            IndexSpec::Ivf { nlist, .. } => format!("IVF{nlist},{code}"),
        }
    }

    /// The faiss metric (cosine is inner product over normalised vectors).
    pub fn faiss_metric(&self) -> MetricType {
        match self.metric {
            Metric::Cosine | Metric::Dot => MetricType::InnerProduct,
            Metric::L2 => MetricType::L2,
        }
    }
}

/// Resolves the defaults of `index` and checks its ranges.
fn resolve_index(index: Option<IndexSpec>, v: &mut Violations) -> IndexSpec {
    let or = |value: u32, default: u32| if value == 0 { default } else { value };
    let mut range = |field: &str, value: u32, lo: u32, hi: u32| {
        if !(lo..=hi).contains(&value) {
            v.add(field, format!("must be {lo} to {hi}, got {value}"));
        }
    };
    match index.unwrap_or(DEFAULT_HNSW) {
        IndexSpec::Flat => IndexSpec::Flat,
        IndexSpec::Hnsw {
            m,
            ef_construction,
            ef_search,
        } => {
            let spec = IndexSpec::Hnsw {
                m: or(m, 16),
                ef_construction: or(ef_construction, 100),
                ef_search: or(ef_search, 100),
            };
            if let IndexSpec::Hnsw {
                m,
                ef_construction,
                ef_search,
            } = spec
            {
                range("index.hnsw.m", m, 4, 128);
                range("index.hnsw.ef_construction", ef_construction, 8, 2048);
                range("index.hnsw.ef_search", ef_search, 1, 4096);
            }
            spec
        }
        IndexSpec::Ivf { nlist, nprobe } => {
            let nlist = or(nlist, 1024);
            let nprobe = or(nprobe, 16.min(nlist));
            range("index.ivf.nlist", nlist, 1, 65_536);
            range("index.ivf.nprobe", nprobe, 1, nlist.max(1));
            IndexSpec::Ivf { nlist, nprobe }
        }
    }
}

/// Resolves the defaults of `quantization` for `dims` and checks its ranges.
fn resolve_quantization(q: Option<Quantization>, dims: u32, v: &mut Violations) -> Quantization {
    match q.unwrap_or(Quantization::None) {
        Quantization::Pq {
            subquantizers,
            bits,
        } => {
            let subquantizers = if subquantizers == 0 {
                // The largest divisor of dims not above dims / 4.
                (1..=(dims / 4).max(1))
                    .rev()
                    .find(|m| dims.is_multiple_of(*m))
                    .unwrap_or(1)
            } else {
                subquantizers
            };
            let bits = if bits == 0 { 8 } else { bits };
            if dims > 0 && (subquantizers == 0 || !dims.is_multiple_of(subquantizers)) {
                v.add(
                    "quantization.pq_subquantizers",
                    format!("must divide dimensions ({dims}), got {subquantizers}"),
                );
            }
            if !(4..=12).contains(&bits) {
                v.add(
                    "quantization.pq_bits",
                    format!("must be 4 to 12, got {bits}"),
                );
            }
            Quantization::Pq {
                subquantizers,
                bits,
            }
        }
        other => other,
    }
}

/// The collections engine.
#[derive(Debug, Clone)]
pub struct Collections {
    store: Arc<dyn CollectionStore>,
    models: Option<Arc<dyn TextEmbedder>>,
    /// Definitions by name for [`Collections::resolve`]: every point write
    /// and search needs one, and definitions never change, so this saves a
    /// store read per call.
    resolved: Arc<Mutex<Resolved>>,
}

#[derive(Debug, Default)]
struct Resolved {
    by_name: HashMap<String, Collection>,
    /// Bumped by every create and delete: a definition read before one is
    /// not cached after it.
    epoch: u64,
}

impl Collections {
    /// Collections on `store`; `models` resolves `embedding_model` (None when
    /// the embedding service is disabled).
    pub fn new(store: Arc<dyn CollectionStore>, models: Option<Arc<dyn TextEmbedder>>) -> Self {
        Self {
            store,
            models,
            resolved: Arc::default(),
        }
    }

    fn resolved(&self) -> std::sync::MutexGuard<'_, Resolved> {
        lock(&self.resolved)
    }

    /// The collection of that name for the points engine: like
    /// [`Collections::get`] but served from memory after the first call,
    /// and with `points_count` left at 0 (it is not kept up to date).
    pub async fn resolve(&self, name: String) -> Result<Collection> {
        let epoch = {
            let resolved = self.resolved();
            if let Some(found) = resolved.by_name.get(&name) {
                return Ok(found.clone());
            }
            resolved.epoch
        };
        let mut found = self.get(name.clone()).await?;
        found.points_count = 0;
        let mut resolved = self.resolved();
        if resolved.epoch == epoch {
            resolved.by_name.insert(name, found.clone());
        }
        Ok(found)
    }

    /// Forgets cached definitions after a create or delete.
    fn invalidate(&self, name: &str) {
        let mut resolved = self.resolved();
        resolved.epoch += 1;
        resolved.by_name.remove(name);
    }

    /// Validates `p`, resolves its defaults, checks that faiss can build the
    /// index, and stores the collection.
    pub async fn create(&self, p: CreateParams) -> Result<Collection> {
        let mut v = Violations::new();
        check_name("name", &p.name, &mut v);
        let metric = p.metric.unwrap_or_else(|| {
            v.add("metric", "is required: cosine, dot or l2");
            Metric::Cosine
        });
        let embedding_model = (!p.embedding_model.is_empty()).then(|| p.embedding_model.clone());
        let mut dimensions = p.dimensions;
        if let Some(model) = &embedding_model {
            match &self.models {
                None => v.add(
                    "embedding_model",
                    "the embedding service is disabled on this server",
                ),
                Some(models) => match models.dimensions(model) {
                    Ok(d) if dimensions == 0 => dimensions = d,
                    Ok(d) if d != dimensions => v.add(
                        "dimensions",
                        format!("is {dimensions}, but embedding model {model:?} makes {d}-dimensional vectors"),
                    ),
                    Ok(_) => {}
                    Err(Error::NotFound { .. }) => v.add(
                        "embedding_model",
                        format!("unknown model {model:?} (see EmbeddingService.ListModels)"),
                    ),
                    Err(other) => return Err(other),
                },
            }
        }
        if !(1..=MAX_DIMENSIONS).contains(&dimensions) {
            v.add(
                "dimensions",
                format!(
                    "must be 1 to {MAX_DIMENSIONS} (or 0 with an embedding_model), got {dimensions}"
                ),
            );
        }
        if let Some(t) = p.dedup_threshold
            && !(t > 0.0 && t <= 1.0)
        {
            v.add("dedup_threshold", format!("must be in (0, 1], got {t}"));
        }
        let index = resolve_index(p.index, &mut v);
        let quantization = resolve_quantization(p.quantization, dimensions, &mut v);
        v.finish()?;

        let def = CollectionDef {
            name: p.name,
            dimensions,
            metric,
            index,
            quantization,
            embedding_model,
            dedup_threshold: p.dedup_threshold,
        };
        let factory = def.factory();
        index_factory(dimensions, &factory, def.faiss_metric()).map_err(|e| {
            Error::invalid(
                "index",
                format!("faiss cannot build {factory:?} for {dimensions} dimensions: {e}"),
            )
        })?;

        let stored = StoredCollection {
            name: def.name.clone(),
            definition: serde_json::to_string(&def)
                .map_err(|e| Error::Internal(format!("encoding collection: {e}")))?,
            created_at: now_ms(),
            points: 0,
        };
        let created_at = stored.created_at;
        let name = stored.name.clone();
        let created = with_store(&self.store, move |s| s.create_collection(&stored)).await;
        self.invalidate(&name);
        created?;
        Ok(Collection {
            def,
            created_at,
            points_count: 0,
        })
    }

    /// The collection of that name.
    pub async fn get(&self, name: String) -> Result<Collection> {
        let mut v = Violations::new();
        check_name("name", &name, &mut v);
        v.finish()?;
        let found = with_store(&self.store, {
            let name = name.clone();
            move |s| s.get_collection(&name)
        });
        match found.await? {
            Some(stored) => decode(stored),
            None => Err(Error::NotFound {
                kind: "collection",
                name,
            }),
        }
    }

    /// One page of collections in name order.
    pub async fn list(&self, requested: usize, page_token: String) -> Result<Page<Collection>> {
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(&page_token).ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "is not a token from a previous ListCollections",
                )
            })?)
        };
        let limit = page_size(requested);
        let rows = with_store(&self.store, move |s| {
            s.list_collections(after.as_deref(), limit + 1)
        })
        .await?;
        let page = Page::from_rows(rows, limit, |c| c.name.clone());
        Ok(Page {
            items: page.items.into_iter().map(decode).collect::<Result<_>>()?,
            next_page_token: page.next_page_token,
        })
    }

    /// Deletes the collection; false when there was none.
    pub async fn delete(&self, name: String) -> Result<bool> {
        let mut v = Violations::new();
        check_name("name", &name, &mut v);
        v.finish()?;
        let deleted = with_store(&self.store, {
            let name = name.clone();
            move |s| s.delete_collection(&name)
        })
        .await;
        self.invalidate(&name);
        deleted
    }
}

fn decode(stored: StoredCollection) -> Result<Collection> {
    let def: CollectionDef = serde_json::from_str(&stored.definition).map_err(|e| {
        Error::Internal(format!(
            "stored collection {} is unreadable: {e}",
            stored.name
        ))
    })?;
    Ok(Collection {
        def,
        created_at: stored.created_at,
        points_count: stored.points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn engine() -> Collections {
        Collections::new(Arc::new(SqliteStore::in_memory().unwrap()), None)
    }

    fn params(name: &str) -> CreateParams {
        CreateParams {
            name: name.into(),
            dimensions: 384,
            metric: Some(Metric::Cosine),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn defaults_resolve_to_hnsw_and_faiss_descriptions() {
        let c = engine().create(params("docs")).await.unwrap();
        assert_eq!(c.def.index, DEFAULT_HNSW);
        assert_eq!(c.def.quantization, Quantization::None);
        assert_eq!(c.def.factory(), "HNSW16,Flat");
        let mut p = params("pq");
        p.index = Some(IndexSpec::Ivf {
            nlist: 64,
            nprobe: 0,
        });
        p.quantization = Some(Quantization::Pq {
            subquantizers: 0,
            bits: 0,
        });
        let c = engine().create(p).await.unwrap();
        assert_eq!(c.def.factory(), "IVF64,PQ96x8");
        assert_eq!(
            c.def.index,
            IndexSpec::Ivf {
                nlist: 64,
                nprobe: 16
            }
        );
    }

    #[tokio::test]
    async fn every_bad_field_is_named() {
        let p = CreateParams {
            name: "bad name".into(),
            dimensions: 5000,
            metric: None,
            index: Some(IndexSpec::Hnsw {
                m: 2,
                ef_construction: 0,
                ef_search: 0,
            }),
            dedup_threshold: Some(1.5),
            ..Default::default()
        };
        let Err(Error::InvalidArgument(v)) = engine().create(p).await else {
            panic!("expected InvalidArgument")
        };
        let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "metric",
                "dimensions",
                "dedup_threshold",
                "index.hnsw.m"
            ]
        );
    }

    #[tokio::test]
    async fn pq_subquantizers_must_divide_the_dimensions() {
        let mut p = params("pq");
        p.quantization = Some(Quantization::Pq {
            subquantizers: 7,
            bits: 8,
        });
        let err = engine().create(p).await.unwrap_err();
        assert!(
            err.to_string().contains("quantization.pq_subquantizers"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn text_collections_need_the_embedding_service() {
        let mut p = params("text");
        p.dimensions = 0;
        p.embedding_model = "hash".into();
        let err = engine().create(p).await.unwrap_err();
        assert!(
            err.to_string().contains("embedding service is disabled"),
            "{err}"
        );
    }
}
