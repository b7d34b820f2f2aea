//! Durable storage, the source of truth for every engine.
//!
//! Engines talk to the store through narrow traits ([`KvStore`],
//! [`CollectionStore`], [`PointStore`], [`QueryStore`]), so
//! that a PostgreSQL implementation (for several replicas, DESIGN.md §4) can
//! be added without touching them. The embedded implementation is
//! [`SqliteStore`]: one SQLite file in WAL mode under `--data-dir`, with
//! `synchronous = FULL`, so a call returns only after its transaction is on
//! disk — an acknowledged write survives a crash or a power cut.
//!
//! Store calls block (disk I/O, fsync): callers run them on the blocking pool.

mod migrations;
pub mod sqlite;

use std::collections::BTreeMap;

pub use sqlite::SqliteStore;

use crate::error::Result;

/// One key-value entry as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Namespace.
    pub namespace: String,
    /// Key within the namespace.
    pub key: String,
    /// The value (empty when listed without values).
    pub value: Vec<u8>,
    /// MIME type given at write.
    pub content_type: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// 1 for a new key, +1 per write.
    pub version: u64,
    /// First write of the key (since it last did not exist).
    pub created_at: i64,
    /// Latest write.
    pub updated_at: i64,
    /// When it expires, if ever.
    pub expires_at: Option<i64>,
}

/// A write of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// MIME type.
    pub content_type: String,
    /// Metadata, replacing the previous.
    pub metadata: BTreeMap<String, String>,
    /// Expiry time, Unix milliseconds.
    pub expires_at: Option<i64>,
}

/// Key-value memory storage. An entry whose `expires_at` is not after `now`
/// does not exist for any of these calls.
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `write`. With `if_version`, only if the live version equals it
    /// (0: only if the key does not exist); otherwise `VersionConflict`.
    fn kv_put(&self, write: KvWrite, if_version: Option<u64>, now: i64) -> Result<KvEntry>;

    /// The live entry, with its value.
    fn kv_get(&self, namespace: &str, key: &str, now: i64) -> Result<Option<KvEntry>>;

    /// Deletes the live entry; false if there was none. With `if_version`,
    /// only if the live version equals it.
    fn kv_delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
        now: i64,
    ) -> Result<bool>;

    /// Live entries of `namespace` whose key starts with `prefix` and sorts
    /// after `after`, in key order (bytewise), at most `limit`.
    fn kv_list(&self, query: &KvListQuery<'_>, now: i64) -> Result<Vec<KvEntry>>;

    /// Deletes expired entries; returns how many.
    fn kv_purge_expired(&self, now: i64) -> Result<u64>;
}

/// A stored collection definition: the engine's own JSON, opaque here, so
/// the schema of definitions can grow without migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCollection {
    /// Unique name.
    pub name: String,
    /// The definition, as the memory engine serialised it.
    pub definition: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Points stored in it (ignored on create).
    pub points: u64,
}

/// Collection definitions.
pub trait CollectionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new collection; `AlreadyExists` if the name is taken.
    fn create_collection(&self, collection: &StoredCollection) -> Result<()>;

    /// The collection of that name.
    fn get_collection(&self, name: &str) -> Result<Option<StoredCollection>>;

    /// Collections in name order after `after`, at most `limit`.
    fn list_collections(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredCollection>>;

    /// Deletes the collection; false if there was none.
    fn delete_collection(&self, name: &str) -> Result<bool>;
}

/// A point as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    /// Id within the collection.
    pub id: String,
    /// The vector.
    pub vector: Vec<f32>,
    /// JSON object.
    pub payload: String,
}

/// What an upsert did to one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpsertedPoint {
    /// The new version's label (faiss id).
    pub label: i64,
    /// The replaced version's label, if the id existed.
    pub replaced: Option<i64>,
}

/// The result of a write to a collection's points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsWrite<T> {
    /// Per-point outcome, in request order.
    pub outcome: Vec<T>,
    /// The collection's change sequence number of this write.
    pub seq: u64,
}

/// Points of vector collections. Every write is one transaction.
pub trait PointStore: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts or replaces `points` (ids unique) in one transaction.
    /// NotFound if the collection does not exist.
    fn upsert_points(
        &self,
        collection: &str,
        points: &[StoredPoint],
    ) -> Result<PointsWrite<UpsertedPoint>>;

    /// The points with these ids that exist, in the order asked.
    fn get_points(&self, collection: &str, ids: &[String]) -> Result<Vec<StoredPoint>>;

    /// Deletes the points with these ids; returns the deleted labels.
    fn delete_points(&self, collection: &str, ids: &[String]) -> Result<PointsWrite<i64>>;

    /// Calls `visit` with every point of the collection (id, payload JSON),
    /// in id order, for filters that must look at payloads.
    fn scan_payloads(
        &self,
        collection: &str,
        visit: &mut dyn FnMut(&str, &str) -> Result<()>,
    ) -> Result<()>;

    /// Number of points.
    fn count_points(&self, collection: &str) -> Result<u64>;

    /// What an index is built or brought up to date from: every current
    /// label with its id, the vectors of those above `after_label` (0 for all), and the
    /// last change's sequence number, all from one consistent state.
    fn index_source(&self, collection: &str, after_label: i64) -> Result<IndexSource>;

    /// Approximate bytes the collection's points take in the store.
    fn collection_bytes(&self, collection: &str) -> Result<u64>;

    /// The current points with these labels (stale labels are skipped), with
    /// their labels.
    fn points_by_labels(&self, collection: &str, labels: &[i64])
    -> Result<Vec<(i64, StoredPoint)>>;
}

/// Labelled vectors in one contiguous buffer, as faiss takes them: one
/// allocation instead of one per vector, so a 100k-point build neither
/// copies them again nor leaves a fragmented heap behind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelledVectors {
    /// One label per vector.
    pub labels: Vec<i64>,
    /// The vectors, back to back.
    pub data: Vec<f32>,
}

impl LabelledVectors {
    /// Appends one vector.
    pub fn push(&mut self, label: i64, vector: &[f32]) {
        self.labels.push(label);
        self.data.extend_from_slice(vector);
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The vectors in runs of at most `n`, as (labels, data) slices.
    pub fn chunks(&self, n: usize) -> impl Iterator<Item = (&[i64], &[f32])> {
        let dims = self.data.len().checked_div(self.labels.len()).unwrap_or(0);
        self.labels
            .chunks(n.max(1))
            .zip(self.data.chunks((n * dims).max(1)))
    }
}

/// See [`PointStore::index_source`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexSource {
    /// (label, id) of every current point version.
    pub live: Vec<(i64, String)>,
    /// Current versions above the asked label, by label.
    pub added: LabelledVectors,
    /// Sequence number of the collection's last change (0: none yet).
    pub seq: u64,
}

/// What `kv_list` returns.
#[derive(Debug, Clone, Copy)]
pub struct KvListQuery<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Key prefix; empty for all.
    pub prefix: &'a str,
    /// Only keys after this one (exclusive).
    pub after: Option<&'a str>,
    /// Most entries.
    pub limit: usize,
    /// Include values.
    pub with_values: bool,
}

/// A finished query as stored: its summary and event log as JSON (the
/// query engine owns their shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQuery {
    /// Query id.
    pub id: String,
    /// Start time, Unix milliseconds.
    pub created_at: i64,
    /// Final state name.
    pub state: String,
    /// JSON summary.
    pub info: String,
    /// JSON event log; empty when listed.
    pub events: String,
}

/// Finished queries.
pub trait QueryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes (or rewrites) a finished query.
    fn save_query(&self, query: &StoredQuery) -> Result<()>;

    /// One query with its events.
    fn get_query(&self, id: &str) -> Result<Option<StoredQuery>>;

    /// Queries newest first (by start time, then id), optionally in one
    /// state, strictly before the `(created_at, id)` cursor; without events.
    fn list_queries(
        &self,
        state: Option<&str>,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredQuery>>;
}
