//! A collection's in-memory faiss index, derived from the store.
//!
//! Labels are the store's (every stored version of a point gets a fresh,
//! never-reused label), so a search result maps straight back to a stored
//! point. faiss HNSW cannot remove vectors (faiss issue 3339), so a replaced
//! or deleted version's label becomes a tombstone: faiss skips it during the
//! search through a bitmap of live positions ([`super::live_filter`]), or,
//! for flat PQ which takes no filter, the search over-fetches past
//! tombstones and drops them, so what a search returns is always live. The
//! registry ([`super::indexes`]) rebuilds the index in the background when
//! tombstones pile up.
//!
//! Quantizers (SQ, PQ) and IVF's coarse quantizer must be trained on data.
//! Until a collection holds [`training_threshold`] points its index is an
//! exact flat index with the same metric (so search stays exact, only
//! slower); once it has enough, the registry rebuilds it as the real
//! structure, trained on the stored points, and retrains as the collection
//! grows several-fold, since ranges and centroids learnt from a small sample
//! fit a large one badly.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use faiss::index::IndexImpl;
use faiss::index::autotune::ParameterSpace;
use faiss::{Idx, Index, index_factory};

use super::collections::{CollectionDef, IndexSpec, Metric, Quantization};
use super::faiss_threads;
use super::hnsw_insert::{Faiss, SHIM_BELOW};
use super::id_table::IdTable;
use super::index_memory::{code_bytes, structure_bytes};
use super::live_filter::{LivePositions, Tuning, id_map, search_live};
use crate::error::{Error, Result};
use crate::store::LabelledVectors;

/// Most points a quantizer is trained on; larger collections are sampled.
pub const MAX_TRAINING_POINTS: usize = 65_536;

/// Rebuild when this fraction of the index is tombstones...
const REBUILD_DEAD_FRACTION: f64 = 0.2;
/// ...and at least this many (tiny indexes are not worth a rebuild).
const REBUILD_MIN_DEAD: usize = 64;
/// Retrain once the collection has grown this many times past the points
/// its quantizer was trained on.
const RETRAIN_GROWTH: usize = 4;
/// An HNSW graph is rebuilt rather than merged into once at least this
/// many points wait in the fresh segment and they outnumber the graph's.
const REBUILD_MIN_FRESH: usize = 1_000;

/// Points a collection needs before its quantizer or IVF lists are trained:
/// faiss wants about 39 training points per centroid (k-means), and SQ needs
/// enough to see each dimension's range. 0 when nothing needs training.
pub fn training_threshold(def: &CollectionDef) -> usize {
    let codes = match def.quantization {
        Quantization::None => 0,
        Quantization::Sq8 | Quantization::Sq4 => 1_000,
        Quantization::Pq { bits, .. } => 39 << bits,
    };
    let lists = match def.index {
        IndexSpec::Ivf { nlist, .. } => 39 * nlist as usize,
        _ => 0,
    };
    codes.max(lists).min(MAX_TRAINING_POINTS)
}

/// A collection's index.
pub struct VectorIndex {
    /// The faiss index; shared with the merger while it plans an insert
    /// ([`Planner`]).
    faiss: Arc<Faiss>,
    /// Labels of replaced or deleted versions. With the keys of `ids` these
    /// are every label in the index, so a write applied twice (once by a
    /// build that read it from the store, once from a log) is added once.
    dead: HashSet<i64>,
    /// Which positions of the wrapped index are live, for faiss to skip
    /// tombstones while searching.
    live: LivePositions,
    /// Point id of each live label, so a search that needs neither payloads
    /// nor vectors answers without reading the store.
    ids: IdTable,
    def: CollectionDef,
    /// Exact flat stand-in while too few points to train the real structure.
    untrained: bool,
    /// Points the quantizer was trained on (0: none needed or untrained).
    trained_on: usize,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("live", &self.ids.len())
            .field("dead", &self.dead.len())
            .field("untrained", &self.untrained)
            .finish_non_exhaustive()
    }
}

fn faiss_error(context: &str, e: faiss::error::Error) -> Error {
    Error::Internal(format!("faiss, {context}: {e}"))
}

impl VectorIndex {
    /// An index for `def` holding `points`, trained on them when the
    /// structure needs it and there are enough.
    /// `ids` holds each point's id, in the order of `points`.
    pub fn build(def: &CollectionDef, points: &LabelledVectors, ids: &[String]) -> Result<Self> {
        faiss_threads::for_build();
        let threshold = training_threshold(def);
        let untrained = threshold > 0 && points.len() < threshold;
        let factory = if untrained {
            "IDMap,Flat".to_owned()
        } else {
            format!("IDMap,{}", def.factory())
        };
        let mut index = index_factory(def.dimensions, &factory, def.faiss_metric())
            .map_err(|e| faiss_error("creating the index", e))?;
        if let (
            false,
            IndexSpec::Hnsw {
                ef_construction, ..
            },
        ) = (untrained, def.index)
        {
            ParameterSpace::new()
                .and_then(|p| {
                    p.set_index_parameter(&index, "efConstruction", f64::from(ef_construction))
                })
                .map_err(|e| faiss_error("setting efConstruction", e))?;
        }
        let mut trained_on = 0;
        if !index.is_trained() {
            let sample = training_sample(points, def.dimensions as usize);
            index
                .train(&sample)
                .map_err(|e| faiss_error("training", e))?;
            trained_on = points.len();
        }
        let mut built = Self {
            faiss: Faiss::new(index),
            dead: HashSet::new(),
            live: LivePositions::default(),
            ids: IdTable::with_capacity(points.len()),
            def: def.clone(),
            untrained,
            trained_on,
        };
        built.add(&points.labels, &points.data, ids)?;
        Ok(built)
    }

    /// Adds vectors (`data` holds one per label, back to back) not yet in
    /// the index; labels already present are skipped. faiss uses as many
    /// threads as the caller set ([`faiss_threads`]).
    /// `ids` holds the points' ids, one per label.
    pub fn add(&mut self, labels: &[i64], data: &[f32], ids: &[String]) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let dims = self.def.dimensions as usize;
        let fresh = labels.iter().filter(|l| !self.holds(**l)).count();
        if fresh == labels.len() {
            self.insert(labels, data)?;
        } else if fresh > 0 {
            let mut new_labels = Vec::with_capacity(fresh);
            let mut flat = Vec::with_capacity(fresh * dims);
            for (label, vector) in labels.iter().zip(data.chunks_exact(dims)) {
                if !self.holds(*label) {
                    new_labels.push(*label);
                    flat.extend_from_slice(vector);
                }
            }
            self.insert(&new_labels, &flat)?;
        }
        // The same labels in the same order as faiss appended them.
        for (&label, id) in labels.iter().zip(ids) {
            if !self.holds(label) {
                self.live.push(true);
                self.ids.insert(label, id)?;
            }
        }
        Ok(())
    }

    /// Appends vectors to the faiss index: a few into an HNSW graph through
    /// [`super::hnsw_insert`] (no per-call setup over the whole graph), the
    /// rest through faiss's add.
    fn insert(&mut self, labels: &[i64], data: &[f32]) -> Result<()> {
        let few = self.is_graph() && labels.len() < SHIM_BELOW;
        let faiss = self.faiss_mut()?;
        if few && faiss.add_few(labels, data)? {
            return Ok(());
        }
        let ids: Vec<Idx> = labels.iter().map(|l| Idx::new(*l as u64)).collect();
        faiss
            .index_mut()
            .add_with_ids(data, &ids)
            .map_err(|e| faiss_error("adding points", e))
    }

    /// Whether its scores come from quantized codes (SQ, PQ), not from the
    /// vectors themselves (an untrained stand-in holds the vectors).
    pub fn is_quantized(&self) -> bool {
        !self.untrained && self.def.quantization != Quantization::None
    }

    /// Whether this is a built HNSW graph (not its untrained stand-in).
    fn is_graph(&self) -> bool {
        matches!(self.def.index, IndexSpec::Hnsw { .. }) && !self.untrained
    }

    /// The faiss index, to change; fails while it is shared (the merger
    /// planning, a snapshot copying), which its changers rule out first
    /// ([`Self::is_shared`]; the merger drops its [`Planner`] before it
    /// links).
    fn faiss_mut(&mut self) -> Result<&mut Faiss> {
        Arc::get_mut(&mut self.faiss).ok_or_else(|| {
            Error::Internal("the index is shared (a plan or a snapshot copy reads it)".into())
        })
    }

    /// A handle to plan inserts into this graph without holding the
    /// collection's lock, for [`Self::link`]; None unless it is an HNSW
    /// graph (other indexes insert cheaply under the lock).
    pub fn planner(&self) -> Option<Planner> {
        self.is_graph().then(|| Planner(Arc::clone(&self.faiss)))
    }

    /// Adds `points` (label, vector, id; oldest first, a subset of what
    /// `planner` planned, in its order) as planned, until one no longer
    /// fits. Returns what stopped it ([`Link::Done`] if nothing did) and
    /// how many were added, a prefix of `points`. Nothing changes when
    /// the plans were made on another graph or the index is shared.
    pub fn link(
        &mut self,
        planner: Planner,
        points: &[(i64, &[f32], &str)],
    ) -> Result<(Link, usize)> {
        if !Arc::ptr_eq(&planner.0, &self.faiss) {
            return Ok((Link::Stale, 0));
        }
        drop(planner);
        if self.is_shared() {
            return Ok((Link::Busy, 0));
        }
        for (done, (label, vector, id)) in points.iter().enumerate() {
            if self.holds(*label) {
                continue;
            }
            if !self.faiss_mut()?.link(*label, vector)? {
                return Ok((Link::Stale, done));
            }
            self.live.push(true);
            self.ids.insert(*label, id)?;
        }
        Ok((Link::Done, points.len()))
    }

    /// Marks versions dead (labels not in the index are ignored: a build
    /// that read the store after they died never added them).
    pub fn kill(&mut self, labels: &[i64]) {
        // A label whose position cannot be found (never seen) stays set in
        // the bitmap; `search` drops dead labels faiss returns anyway.
        let by_position = id_map(self.faiss.index()).unwrap_or(&[]);
        for label in labels {
            if self.ids.remove(*label) {
                self.dead.insert(*label);
                if let Some(position) = position_of(by_position, *label) {
                    self.live.kill(position);
                }
            }
        }
    }

    /// Whether `label` is in the index, live or dead.
    pub fn holds(&self, label: i64) -> bool {
        self.ids.contains(label) || self.dead.contains(&label)
    }

    /// Vectors in the index, live or dead.
    fn total(&self) -> usize {
        self.ids.len() + self.dead.len()
    }

    /// Live points in the index.
    pub fn live(&self) -> usize {
        self.ids.len()
    }

    /// Tombstones awaiting a rebuild.
    pub fn dead(&self) -> usize {
        self.dead.len()
    }

    /// The point id of a live label.
    pub fn id_of(&self, label: i64) -> Option<&str> {
        self.ids.get(label)
    }

    /// Every label in the index, live or dead (for snapshots).
    pub fn labels(&self) -> impl Iterator<Item = i64> + '_ {
        self.ids.labels().chain(self.dead.iter().copied())
    }

    /// Why a rebuild would pay off now, if it would: many tombstones,
    /// enough points to train at last, a collection that outgrew its
    /// training sample, or (HNSW) more points waiting in the fresh segment
    /// (`fresh`) than the graph holds. That last one is what keeps a bulk
    /// load into a new collection at store speed: building N + F points on
    /// c cores beats the merger's inserts of F on one once F > N / (c - 1),
    /// and writers never wait for a build.
    pub fn rebuild_reason(&self, fresh: usize) -> Option<&'static str> {
        let dead = self.dead.len();
        if dead >= REBUILD_MIN_DEAD && dead as f64 >= REBUILD_DEAD_FRACTION * self.total() as f64 {
            return Some("tombstones");
        }
        if self.untrained && self.live() >= training_threshold(&self.def) {
            return Some("enough points to train");
        }
        if self.trained_on > 0
            && self.trained_on < MAX_TRAINING_POINTS
            && self.live() >= RETRAIN_GROWTH * self.trained_on
        {
            return Some("outgrew its training sample");
        }
        let graph = matches!(self.def.index, IndexSpec::Hnsw { .. });
        if graph && fresh >= REBUILD_MIN_FRESH && fresh > self.live() {
            return Some("fresh points outnumber the graph's");
        }
        None
    }

    /// Up to `k` nearest live labels with their faiss scores (inner product
    /// for cosine and dot, squared distance for L2), best first. Takes the
    /// index shared: efSearch and nprobe travel with the call
    /// ([`Tuning`]), so searches run in parallel.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef_search: Option<u32>,
        nprobe: Option<u32>,
    ) -> Result<Vec<(i64, f32)>> {
        let k = k.min(self.live());
        if k == 0 {
            return Ok(Vec::new());
        }
        faiss_threads::for_search();
        // Tombstones are skipped inside faiss where it can filter by label;
        // flat PQ cannot, so there the search over-fetches past them.
        let filters = !self.dead.is_empty() && self.filters_by_label();
        let fetch = if filters || self.dead.is_empty() {
            k
        } else {
            (k + self.dead.len()).min(self.total())
        };
        let live = filters.then_some(&self.live);
        let (scores, labels) = search_live(
            self.faiss.index(),
            live,
            query,
            fetch,
            self.tuning(fetch, ef_search, nprobe),
        )?;
        let found: Vec<(i64, f32)> = labels
            .into_iter()
            .zip(scores)
            .filter(|(label, _)| *label >= 0 && !self.dead.contains(label))
            .take(k)
            .collect();
        // HNSW may run out of live candidates among many tombstones: then
        // over-fetch past all of them without the filter.
        if found.len() == k || !filters {
            return Ok(found);
        }
        let fetch = (k + self.dead.len()).min(self.total());
        let (scores, labels) = search_live(
            self.faiss.index(),
            None,
            query,
            fetch,
            self.tuning(fetch, ef_search, nprobe),
        )?;
        Ok(labels
            .into_iter()
            .zip(scores)
            .filter(|(label, _)| *label >= 0 && !self.dead.contains(label))
            .take(k)
            .collect())
    }

    /// Whether faiss can skip tombstones during this index's search.
    fn filters_by_label(&self) -> bool {
        self.untrained
            || !matches!(
                (self.def.index, self.def.quantization),
                (IndexSpec::Flat, Quantization::Pq { .. })
            )
    }

    /// Search-time parameters: HNSW's candidate list (at least `fetch`, so
    /// that many results can come back) or IVF's lists probed.
    fn tuning(&self, fetch: usize, ef_search: Option<u32>, nprobe: Option<u32>) -> Tuning {
        if self.untrained {
            return Tuning::Default;
        }
        match self.def.index {
            IndexSpec::Hnsw {
                ef_search: default, ..
            } => Tuning::Hnsw {
                ef_search: (ef_search.unwrap_or(default) as usize).max(fetch),
            },
            IndexSpec::Ivf {
                nprobe: default, ..
            } => Tuning::Ivf {
                nprobe: nprobe.unwrap_or(default) as usize,
            },
            IndexSpec::Flat => Tuning::Default,
        }
    }

    /// The collection's metric.
    pub fn metric(&self) -> Metric {
        self.def.metric
    }

    /// Dimensions of the collection's vectors.
    pub fn dimensions(&self) -> usize {
        self.def.dimensions as usize
    }

    /// Estimated bytes this index holds in memory: codes, graph or lists,
    /// the id map and the label sets.
    pub fn memory_bytes(&self) -> u64 {
        let n = self.total() as u64;
        let d = u64::from(self.def.dimensions);
        // Untrained: an exact flat stand-in of whole vectors.
        let structure = match (self.untrained, self.def.index) {
            (true, _) => 0,
            (false, IndexSpec::Ivf { nlist, .. }) => {
                n * structure_bytes(self.def.index) + u64::from(nlist) * d * 4
            }
            (false, index) => n * structure_bytes(index),
        };
        let code = if self.untrained {
            4 * d
        } else {
            code_bytes(self.def.dimensions, self.def.quantization)
        };
        // IDMap's label array, the ids of live labels, the tombstone set and
        // the live bitmap.
        let bookkeeping = n * 8
            + self.ids.bytes() as u64
            + self.dead.len() as u64 * 16
            + self.live.bytes() as u64;
        n * code + structure + bookkeeping
    }

    /// Writes the faiss index to `path`.
    #[cfg(test)]
    pub fn write(&self, path: &Path) -> Result<()> {
        write_faiss(self.faiss.index(), path)
    }

    /// What a snapshot of this index needs, taken in O(labels) under the
    /// collection's lock: the index, shared (so the merger cannot change
    /// it until [`Freezing::copy`] is done), and its labels.
    pub fn freeze(&self) -> Freezing {
        Freezing {
            faiss: Arc::clone(&self.faiss),
            labels: self.labels().collect(),
            trained_on: self.trained_on,
        }
    }

    /// Whether the faiss index is shared (a snapshot is copying it): the
    /// merger waits, it may not change it meanwhile.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.faiss) > 1
    }

    /// An index read back from a snapshot written by [`Self::write`], with
    /// the labels it held, of which those in `live` (label → id) are still
    /// current. Their ids move out of `live`, which is left holding the ids
    /// of points stored after the snapshot.
    pub fn read(
        def: &CollectionDef,
        path: &Path,
        labels: Vec<i64>,
        live: &mut HashMap<i64, String>,
        trained_on: usize,
    ) -> Result<Self> {
        let path = path.to_str().ok_or_else(|| {
            Error::Internal(format!("index path {} is not UTF-8", path.display()))
        })?;
        let index = faiss::read_index(path).map_err(|e| faiss_error("reading a snapshot", e))?;
        if index.ntotal() != labels.len() as u64 || index.d() != def.dimensions {
            return Err(Error::Internal(format!(
                "snapshot {path} holds {} vectors of {} dimensions, its metadata says {} of {}",
                index.ntotal(),
                index.d(),
                labels.len(),
                def.dimensions
            )));
        }
        let dead = labels
            .iter()
            .copied()
            .filter(|l| !live.contains_key(l))
            .collect();
        let mut live_positions = LivePositions::default();
        for label in id_map(&index)? {
            live_positions.push(live.contains_key(label));
        }
        let mut ids = IdTable::with_capacity(labels.len());
        let mut sorted = labels;
        sorted.sort_unstable();
        for label in &sorted {
            if let Some(id) = live.remove(label) {
                ids.insert(*label, &id)?;
            }
        }
        let threshold = training_threshold(def);
        Ok(Self {
            faiss: Faiss::new(index),
            dead,
            live: live_positions,
            ids,
            def: def.clone(),
            untrained: threshold > 0 && trained_on == 0,
            trained_on,
        })
    }

    /// Points the quantizer was trained on (0 if none).
    #[cfg(test)]
    pub fn trained_on(&self) -> usize {
        self.trained_on
    }
}

/// Plans inserts into a graph beside its searches (see
/// [`super::hnsw_insert`]): holds the graph alive, and any change to it off
/// until dropped or handed to [`VectorIndex::link`].
pub struct Planner(Arc<Faiss>);

impl Planner {
    /// Plans the inserts of `data` (one vector per label of `labels`),
    /// replacing the last plans. Ok(false) when the graph is not one the
    /// planner knows (nothing planned).
    pub fn plan(&self, labels: &[i64], data: &[f32]) -> Result<bool> {
        self.0.plan(labels, data)
    }
}

/// What [`VectorIndex::link`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The point is in the index.
    Done,
    /// The plan was made on another graph (a rebuild replaced it), for
    /// another point, or before the graph changed: plan again.
    Stale,
    /// A snapshot is copying the index: try again once it is done.
    Busy,
}

/// An index on its way to a snapshot (see [`VectorIndex::freeze`]).
pub struct Freezing {
    faiss: Arc<Faiss>,
    labels: Vec<i64>,
    trained_on: usize,
}

impl Freezing {
    /// A copy to write the snapshot from, made without the collection's
    /// lock: searches go on beside it (both only read), the merger's next
    /// change waits for it (~0.1–0.2 s for a 100k-point HNSW; writing and
    /// syncing the copy takes longer, and nobody waits for that).
    pub fn copy(self) -> Result<Frozen> {
        use faiss::index::TryClone;
        Ok(Frozen {
            index: self
                .faiss
                .index()
                .try_clone()
                .map_err(|e| faiss_error("copying for a snapshot", e))?,
            labels: self.labels,
            trained_on: self.trained_on,
        })
    }
}

/// A copy of an index for a snapshot (see [`VectorIndex::freeze`]).
pub struct Frozen {
    index: IndexImpl,
    /// Every label in the index, live or dead.
    pub labels: Vec<i64>,
    /// Points the quantizer was trained on.
    pub trained_on: usize,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("labels", &self.labels.len())
            .finish_non_exhaustive()
    }
}

impl Frozen {
    /// Writes the faiss index to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_faiss(&self.index, path)
    }
}

fn write_faiss(index: &IndexImpl, path: &Path) -> Result<()> {
    let path = path
        .to_str()
        .ok_or_else(|| Error::Internal(format!("index path {} is not UTF-8", path.display())))?;
    faiss::write_index(index, path).map_err(|e| faiss_error("writing a snapshot", e))
}

/// Where `label` sits in an id map. The store hands out labels in
/// increasing order and every index appends them in that order, so the map
/// is sorted and a binary search finds it; the scan is the fallback should
/// that ever not hold.
fn position_of(by_position: &[i64], label: i64) -> Option<usize> {
    match by_position.binary_search(&label) {
        Ok(at) => Some(at),
        Err(_) => by_position.iter().position(|l| *l == label),
    }
}

/// Up to [`MAX_TRAINING_POINTS`] vectors spread evenly over `points`.
fn training_sample(points: &LabelledVectors, dims: usize) -> Vec<f32> {
    let step = points.len().div_ceil(MAX_TRAINING_POINTS).max(1);
    let mut sample = Vec::with_capacity(points.len().min(MAX_TRAINING_POINTS) * dims);
    for vector in points.data.chunks_exact(dims).step_by(step) {
        sample.extend_from_slice(vector);
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::fresh::{better_first, exact_score};

    fn def(index: IndexSpec, quantization: Quantization) -> CollectionDef {
        CollectionDef {
            name: "t".into(),
            dimensions: 8,
            metric: Metric::L2,
            index,
            quantization,
            embedding_model: None,
            dedup_threshold: None,
        }
    }

    fn points(n: usize, from: i64) -> LabelledVectors {
        let mut out = LabelledVectors::default();
        for i in 0..n {
            let x = i as f32;
            let v: Vec<f32> = (0..8).map(|j| (x * 0.37 + j as f32).sin()).collect();
            out.push(from + i as i64, &v);
        }
        out
    }

    fn ids(points: &LabelledVectors) -> Vec<String> {
        points.labels.iter().map(|l| format!("p{l}")).collect()
    }

    fn nth(points: &LabelledVectors, i: usize) -> &[f32] {
        &points.data[i * 8..(i + 1) * 8]
    }

    #[test]
    fn quantized_indexes_stay_exact_until_they_can_train() {
        let d = def(
            IndexSpec::Hnsw {
                m: 16,
                ef_construction: 40,
                ef_search: 64,
            },
            Quantization::Sq8,
        );
        let few = points(10, 1);
        let mut index = VectorIndex::build(&d, &few, &ids(&few)).unwrap();
        assert!(index.untrained);
        let found = index.search(nth(&few, 3), 1, None, None).unwrap();
        assert_eq!(found[0], (4, 0.0), "exact while untrained");
        let more = points(2_000, 11);
        index.add(&more.labels, &more.data, &ids(&more)).unwrap();
        assert_eq!(index.rebuild_reason(0), Some("enough points to train"));

        let all = points(2_010, 1);
        let trained = VectorIndex::build(&d, &all, &ids(&all)).unwrap();
        assert!(!trained.untrained);
        assert_eq!(trained.trained_on(), 2_010);
        assert_eq!(trained.rebuild_reason(0), None);
    }

    #[test]
    fn tombstones_are_skipped_and_trigger_a_rebuild() {
        let d = def(IndexSpec::Flat, Quantization::None);
        let all = points(200, 1);
        let mut index = VectorIndex::build(&d, &all, &ids(&all)).unwrap();
        index.kill(&(1..=100).collect::<Vec<_>>());
        index.kill(&[9_999]);
        assert_eq!((index.live(), index.dead()), (100, 100));
        assert_eq!(index.rebuild_reason(0), Some("tombstones"));
        let found = index.search(nth(&all, 0), 5, None, None).unwrap();
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|(label, _)| *label > 100));
    }

    /// `n` pseudo-random 8-dimensional vectors labelled `from`, `from + 1`…
    fn random_points(n: usize, from: i64, seed: u64) -> LabelledVectors {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
        let mut out = LabelledVectors::default();
        for i in 0..n {
            let v: Vec<f32> = (0..8)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            out.push(from + i as i64, &v);
        }
        out
    }

    #[test]
    fn small_inserts_into_a_graph_go_through_the_shim_and_are_found() {
        for metric in [Metric::L2, Metric::Dot] {
            let mut d = def(
                IndexSpec::Hnsw {
                    m: 16,
                    ef_construction: 100,
                    ef_search: 64,
                },
                Quantization::None,
            );
            d.metric = metric;
            // Built by faiss (a large batch), then grown a few at a time.
            let base = random_points(3_000, 1, 1);
            let mut index = VectorIndex::build(&d, &base, &ids(&base)).unwrap();
            assert!(!index.faiss.has_inserter(), "a build goes through faiss");
            let more = random_points(600, 10_001, 2);
            for (labels, data) in more.labels.chunks(3).zip(more.data.chunks(3 * 8)) {
                let ids: Vec<String> = labels.iter().map(|l| format!("p{l}")).collect();
                index.add(labels, data, &ids).unwrap();
            }
            assert!(
                index.faiss.has_inserter(),
                "{metric:?}: small adds use the shim"
            );
            assert_eq!(index.live(), 3_600);
            // Inserted points are reachable: for L2 each one's own vector
            // finds it first.
            for (i, label) in more.labels.iter().enumerate() {
                let q = &more.data[i * 8..(i + 1) * 8];
                if metric == Metric::L2 {
                    let found = index.search(q, 1, Some(128), None).unwrap();
                    assert_eq!(found[0].0, *label, "inserted point {label} not found");
                }
                assert_eq!(index.id_of(*label), Some(format!("p{label}").as_str()));
            }
            // And the graph answers as well as an exact scan would.
            let recall = recall_at_10(&index, &joined(&base, &more), metric, 3);
            assert!(recall >= 0.95, "{metric:?}: recall@10 {recall}");
            // The faiss index agrees on its size with the id table.
            assert_eq!(index.faiss.index().ntotal(), 3_600);
        }
    }

    #[test]
    fn inserts_planned_beside_searches_are_linked_and_stale_plans_change_nothing() {
        for quantization in [Quantization::None, Quantization::Sq8] {
            let d = def(
                IndexSpec::Hnsw {
                    m: 8,
                    ef_construction: 40,
                    ef_search: 64,
                },
                quantization,
            );
            let base = random_points(1_500, 1, 4);
            let mut index = VectorIndex::build(&d, &base, &ids(&base)).unwrap();
            // Many more than the graph held, in batches of 1 to 8: its
            // arrays fill up several times, so the plans' larger copies
            // are swapped in.
            let more = random_points(4_000, 10_001, 5);
            let probe = random_points(1, 0, 6);
            let (mut at, mut size) = (0, 1);
            while at < more.len() {
                let end = (at + size).min(more.len());
                let (labels, data) = (&more.labels[at..end], &more.data[at * 8..end * 8]);
                let planner = index.planner().expect("a built HNSW graph plans");
                // Searches go on while the plans are made (both only read).
                let shared = &index;
                std::thread::scope(|s| {
                    let search = s.spawn(|| shared.search(&probe.data, 5, None, None).unwrap());
                    assert!(planner.plan(labels, data).unwrap());
                    assert_eq!(search.join().unwrap().len(), 5);
                });
                let ids: Vec<String> = labels.iter().map(|l| format!("p{l}")).collect();
                let points: Vec<(i64, &[f32], &str)> = labels
                    .iter()
                    .zip(data.chunks(8))
                    .zip(&ids)
                    .map(|((l, v), id)| (*l, v, id.as_str()))
                    .collect();
                // One point of a batch died meanwhile: the rest link.
                let skip = if points.len() > 2 { 1 } else { usize::MAX };
                let alive: Vec<_> = (0..points.len())
                    .filter(|i| *i != skip)
                    .map(|i| points[i])
                    .collect();
                assert_eq!(
                    index.link(planner, &alive).unwrap(),
                    (Link::Done, alive.len())
                );
                if skip < points.len() {
                    index
                        .add(&[points[skip].0], points[skip].1, &ids[skip..=skip])
                        .unwrap();
                }
                at = end;
                size = size % 8 + 1;
            }
            assert_eq!(index.live(), 5_500);
            assert_eq!(index.faiss.index().ntotal(), 5_500);
            for (label, vector) in more.labels.iter().zip(more.data.chunks(8)).step_by(7) {
                let found = index.search(vector, 1, Some(128), None).unwrap();
                assert_eq!(found[0].0, *label, "{quantization:?}: {label} not found");
                assert_eq!(index.id_of(*label), Some(format!("p{label}").as_str()));
            }
            let recall = recall_at_10(&index, &joined(&base, &more), Metric::L2, 7);
            assert!(recall >= 0.9, "{quantization:?}: recall@10 {recall}");

            let (a, b) = (random_points(1, 20_001, 8), random_points(1, 20_002, 9));
            let both = random_points(2, 20_001, 8);
            let link = |index: &mut VectorIndex, planner, label, v: &[f32]| {
                index.link(planner, &[(label, v, "x")]).unwrap()
            };
            // A plan for one point does not link another.
            let planner = index.planner().unwrap();
            assert!(planner.plan(&a.labels, &a.data).unwrap());
            assert_eq!(link(&mut index, planner, 20_002, &b.data), (Link::Stale, 0));
            // Nor are a batch's points linked out of order.
            let planner = index.planner().unwrap();
            assert!(planner.plan(&both.labels, &both.data).unwrap());
            let second = (20_002, &both.data[8..], "x");
            let first = (20_001, &both.data[..8], "x");
            assert_eq!(
                index.link(planner, &[second, first]).unwrap(),
                (Link::Stale, 1)
            );
            assert!(index.holds(20_002) && !index.holds(20_001));
            // Nor one made before the graph changed.
            let planner = index.planner().unwrap();
            assert!(planner.plan(&a.labels, &a.data).unwrap());
            drop(planner);
            let c = random_points(1, 20_003, 10);
            index.add(&c.labels, &c.data, &ids(&c)).unwrap();
            let stale = index.planner().unwrap();
            assert_eq!(link(&mut index, stale, 20_001, &a.data), (Link::Stale, 0));
            // Nor one made on another graph (a rebuild replaced it).
            let other = VectorIndex::build(&d, &base, &ids(&base)).unwrap();
            let elsewhere = other.planner().unwrap();
            assert!(elsewhere.plan(&a.labels, &a.data).unwrap());
            assert_eq!(
                link(&mut index, elsewhere, 20_001, &a.data),
                (Link::Stale, 0)
            );
            assert_eq!(index.faiss.index().ntotal(), 5_502);
            assert!(!index.holds(20_001));
            // While a snapshot copies the index, a link waits for it.
            let freezing = index.freeze();
            let planner = index.planner().unwrap();
            assert!(planner.plan(&a.labels, &a.data).unwrap());
            assert_eq!(link(&mut index, planner, 20_001, &a.data), (Link::Busy, 0));
            let frozen = freezing.copy().unwrap();
            assert_eq!(frozen.labels.len(), 5_502);
            let planner = index.planner().unwrap();
            assert!(planner.plan(&a.labels, &a.data).unwrap());
            assert_eq!(link(&mut index, planner, 20_001, &a.data), (Link::Done, 1));
            assert_eq!(index.id_of(20_001), Some("x"));
        }
    }

    #[test]
    fn a_graph_outnumbered_by_fresh_points_is_rebuilt_not_merged_into() {
        let hnsw = def(
            IndexSpec::Hnsw {
                m: 16,
                ef_construction: 40,
                ef_search: 64,
            },
            Quantization::None,
        );
        let empty = VectorIndex::build(&hnsw, &LabelledVectors::default(), &[]).unwrap();
        assert_eq!(
            empty.rebuild_reason(REBUILD_MIN_FRESH - 1),
            None,
            "too few to bother"
        );
        assert_eq!(
            empty.rebuild_reason(REBUILD_MIN_FRESH),
            Some("fresh points outnumber the graph's")
        );
        let some = points(2_000, 1);
        let built = VectorIndex::build(&hnsw, &some, &ids(&some)).unwrap();
        assert_eq!(built.rebuild_reason(2_000), None, "merging is cheaper");
        assert!(built.rebuild_reason(2_001).is_some());
        let flat = VectorIndex::build(
            &def(IndexSpec::Flat, Quantization::None),
            &some,
            &ids(&some),
        );
        assert_eq!(
            flat.unwrap().rebuild_reason(10_000),
            None,
            "Flat inserts are cheap"
        );
    }

    /// The exact `k` nearest live labels, by L2 distance.
    fn exact_live(
        all: &LabelledVectors,
        live: impl Fn(i64) -> bool,
        q: &[f32],
        k: usize,
    ) -> Vec<i64> {
        let mut scored: Vec<(f32, i64)> = all
            .labels
            .iter()
            .zip(all.data.chunks_exact(8))
            .filter(|(l, _)| live(**l))
            .map(|(l, v)| (v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), *l))
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored.into_iter().take(k).map(|(_, l)| l).collect()
    }

    /// `a`'s points, then `b`'s.
    fn joined(a: &LabelledVectors, b: &LabelledVectors) -> LabelledVectors {
        let mut all = a.clone();
        for (label, v) in b.labels.iter().zip(b.data.chunks(8)) {
            all.push(*label, v);
        }
        all
    }

    /// recall@10 of `index` over 100 queries (from `seed`) against an exact
    /// scan of `all` under `metric`.
    fn recall_at_10(index: &VectorIndex, all: &LabelledVectors, metric: Metric, seed: u64) -> f64 {
        let queries = random_points(100, 0, seed);
        let mut hits = 0;
        for q in queries.data.chunks(8) {
            let mut exact: Vec<(f32, i64)> = all
                .labels
                .iter()
                .zip(all.data.chunks(8))
                .map(|(l, v)| (exact_score(metric, q, v), *l))
                .collect();
            exact.sort_by(|a, b| better_first(metric, a.0, b.0));
            let found = labels_of(index.search(q, 10, Some(128), None).unwrap());
            hits += exact[..10]
                .iter()
                .filter(|(_, l)| found.contains(l))
                .count();
        }
        hits as f64 / 1_000.0
    }

    fn labels_of(found: Vec<(i64, f32)>) -> Vec<i64> {
        found.into_iter().map(|(label, _)| label).collect()
    }

    #[test]
    fn hnsw_skips_tombstones_inside_faiss_also_after_a_snapshot() {
        let d = def(
            IndexSpec::Hnsw {
                m: 16,
                ef_construction: 80,
                ef_search: 200,
            },
            Quantization::None,
        );
        let all = points(600, 1);
        let mut index = VectorIndex::build(&d, &all, &ids(&all)).unwrap();
        let odd: Vec<i64> = (1..=600).filter(|l| l % 2 == 1).collect();
        index.kill(&odd);
        let q = nth(&all, 10);
        let found = labels_of(index.search(q, 10, None, None).unwrap());
        assert_eq!(found, exact_live(&all, |l| l % 2 == 0, q, 10));

        // Read back from a snapshot, the positions come from faiss's id map;
        // later deaths are skipped too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.faiss");
        index.write(&path).unwrap();
        let mut live: HashMap<i64, String> =
            (2..=600).step_by(2).map(|l| (l, format!("p{l}"))).collect();
        let labels: Vec<i64> = index.labels().collect();
        let mut back = VectorIndex::read(&d, &path, labels, &mut live, 0).unwrap();
        let fours: Vec<i64> = (1..=600).filter(|l| l % 4 == 2).collect();
        back.kill(&fours);
        assert_eq!((back.live(), back.dead()), (150, 450));
        let found = labels_of(back.search(q, 10, None, None).unwrap());
        assert_eq!(found, exact_live(&all, |l| l % 4 == 0, q, 10));
    }

    #[test]
    fn positions_are_found_in_an_unsorted_id_map_too() {
        assert_eq!(position_of(&[3, 5, 9], 9), Some(2));
        assert_eq!(position_of(&[9, 3, 5], 3), Some(1));
        assert_eq!(position_of(&[9, 3, 5], 4), None);
    }

    #[test]
    fn snapshots_round_trip() {
        let d = def(
            IndexSpec::Ivf {
                nlist: 4,
                nprobe: 4,
            },
            Quantization::Sq8,
        );
        let all = points(1_000, 1);
        let index = VectorIndex::build(&d, &all, &ids(&all)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.faiss");
        index.write(&path).unwrap();
        let labels: Vec<i64> = index.labels().collect();
        let live: HashMap<i64, String> = (2..=1_000).map(|l| (l, format!("p{l}"))).collect();
        let mut live = live;
        let back = VectorIndex::read(&d, &path, labels, &mut live, 1_000).unwrap();
        assert!(live.is_empty(), "the ids moved into the index");
        assert_eq!((back.live(), back.dead()), (999, 1));
        let found = back.search(nth(&all, 1), 1, None, None).unwrap();
        assert_eq!(found[0].0, 2);
        assert_eq!((back.id_of(2), back.id_of(1)), (Some("p2"), None));
    }
}
