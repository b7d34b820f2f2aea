//! Points of vector collections: the [`PointStore`] trait, and what a
//! search index is built from.

use crate::error::Result;

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

    /// At most `limit` current points with labels above `after_label`, by
    /// label: their vectors and, one per label, their ids. Each call reads
    /// on its own, so a long read in such chunks (a rebuild of a large
    /// collection) never holds the store for long; the caller reconciles
    /// what changed between chunks (a rebuild logs every write meanwhile).
    fn points_after(
        &self,
        collection: &str,
        after_label: i64,
        limit: usize,
    ) -> Result<(LabelledVectors, Vec<String>)>;

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
