//! What the points engine takes and gives back: plain domain types, with
//! no protobuf (the API converts) and no store rows (the engine converts).

use serde_json::{Map, Value};

use super::super::filter::Filter;
use super::super::indexes::IndexStats;
use crate::common::stats::hit_rate;
use crate::common::timing::Timing;

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
    /// Merged into this existing near-duplicate (see `Points::upsert`).
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

/// What an Upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// One outcome per input point, in request order.
    pub results: Vec<Upserted>,
    /// The collection's change sequence number of this write.
    pub sequence: u64,
}

impl UpsertOutcome {
    /// How many points were merged into near-duplicates.
    pub fn merged(&self) -> u64 {
        self.results
            .iter()
            .filter(|u| matches!(u.status, UpsertStatus::Merged(_)))
            .count() as u64
    }
}

/// A stored point as GetPoints and Search return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Id.
    pub id: String,
    /// Vector (as stored: normalised for cosine collections), when asked
    /// for.
    pub vector: Option<Vec<f32>>,
    /// Payload object, when asked for.
    pub payload: Option<Map<String, Value>>,
}

/// What a read returns of each point besides its id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Include {
    /// The payload.
    pub payload: bool,
    /// The vector.
    pub vector: bool,
}

/// Which points a DeletePoints removes.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// These ids.
    Ids(Vec<String>),
    /// Every point whose payload matches.
    Filter(Filter),
}

/// What a DeletePoints did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Points that existed and were deleted.
    pub count: u64,
    /// The collection's change sequence number of this write (the last
    /// one's when nothing was deleted).
    pub sequence: u64,
}

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
    /// Quantized collections: rank the candidates by their stored vectors
    /// (None: no).
    pub rescore: Option<bool>,
    /// Candidates ranked per result when rescoring (None: the default).
    pub oversampling: Option<u32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point, with what the search asked to include.
    pub point: Point,
    /// Similarity (cosine, dot) or squared distance (L2).
    pub score: f32,
}

/// The results of one search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Up to k results, best first.
    pub hits: Vec<Hit>,
    /// Served from the search result cache.
    pub cached: bool,
    /// Where the time went: waiting for a thread and the collection's
    /// lock, then embedding the text, searching and reading payloads.
    pub timing: Timing,
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

impl CollectionStats {
    /// Search cache hits over lookups; 0 before any lookup.
    pub fn cache_hit_rate(&self) -> f64 {
        hit_rate(self.cache_hits, self.cache_misses)
    }
}
