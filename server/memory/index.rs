//! A collection's in-memory faiss index, derived from the store.
//!
//! Built from every stored point on first use (labels are the store's, so a
//! search result maps straight back to a stored point), then kept in step
//! with each committed write. faiss HNSW cannot remove vectors (faiss issue
//! 3339), so a replaced or deleted version's label becomes a tombstone:
//! searches over-fetch by the number of tombstones and drop them, which keeps
//! every answer exact in what it returns. Compaction (a rebuild once the dead
//! fraction grows) and snapshots come with the next step of issue #4.

use std::collections::HashSet;

use faiss::index::IndexImpl;
use faiss::index::autotune::ParameterSpace;
use faiss::index::id_map::IdMap;
use faiss::{Idx, Index, index_factory};

use super::collections::{CollectionDef, IndexSpec, Metric};
use crate::error::{Engine, Error, Result};

/// A collection's index.
pub struct VectorIndex {
    index: IdMap<IndexImpl>,
    /// Labels in the index (live or dead), so a write applied twice (once
    /// by the initial build, once by its own commit) is added once.
    present: HashSet<i64>,
    /// Labels of replaced or deleted versions.
    dead: HashSet<i64>,
    metric: Metric,
    hnsw: bool,
    ef_search: u32,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("present", &self.present.len())
            .field("dead", &self.dead.len())
            .finish_non_exhaustive()
    }
}

fn faiss_error(context: &str, e: faiss::error::Error) -> Error {
    Error::Internal(format!("faiss, {context}: {e}"))
}

impl VectorIndex {
    /// An index for `def` holding `points` (label, vector).
    pub fn build(def: &CollectionDef, points: Vec<(i64, Vec<f32>)>) -> Result<Self> {
        let inner = index_factory(def.dimensions, def.factory(), def.faiss_metric())
            .map_err(|e| faiss_error("creating the index", e))?;
        if !inner.is_trained() {
            return Err(Error::not_implemented(
                Engine::VectorCollections,
                format!(
                    "Search on {:?} collections (it needs training: SQ, PQ and IVF come next)",
                    def.factory()
                ),
            ));
        }
        let (hnsw, ef_search) = match def.index {
            IndexSpec::Hnsw { ef_search, .. } => (true, ef_search),
            _ => (false, 0),
        };
        let mut index = IdMap::new(inner).map_err(|e| faiss_error("wrapping the index", e))?;
        let mut present = HashSet::new();
        let mut flat = Vec::with_capacity(points.len() * def.dimensions as usize);
        let mut ids = Vec::with_capacity(points.len());
        for (label, vector) in points {
            flat.extend_from_slice(&vector);
            ids.push(Idx::new(label as u64));
            present.insert(label);
        }
        if !ids.is_empty() {
            index
                .add_with_ids(&flat, &ids)
                .map_err(|e| faiss_error("adding points", e))?;
        }
        Ok(Self {
            index,
            present,
            dead: HashSet::new(),
            metric: def.metric,
            hnsw,
            ef_search,
        })
    }

    /// Applies a committed upsert: new versions in, replaced ones dead.
    pub fn apply_upsert(&mut self, added: &[(i64, &[f32])], replaced: &[i64]) -> Result<()> {
        let mut flat = Vec::new();
        let mut ids = Vec::new();
        for (label, vector) in added {
            if self.present.insert(*label) {
                flat.extend_from_slice(vector);
                ids.push(Idx::new(*label as u64));
            }
        }
        if !ids.is_empty() {
            self.index
                .add_with_ids(&flat, &ids)
                .map_err(|e| faiss_error("adding points", e))?;
        }
        self.dead.extend(replaced.iter().copied());
        Ok(())
    }

    /// Applies a committed deletion.
    pub fn apply_delete(&mut self, labels: &[i64]) {
        self.dead.extend(labels.iter().copied());
    }

    /// Live points in the index.
    pub fn live(&self) -> usize {
        self.present.len() - self.dead.len()
    }

    /// Up to `k` nearest live labels with their faiss scores (inner product
    /// for cosine and dot, squared distance for L2), best first.
    pub fn search(
        &mut self,
        query: &[f32],
        k: usize,
        ef_search: Option<u32>,
    ) -> Result<Vec<(i64, f32)>> {
        let total = self.present.len();
        if total == 0 || k == 0 {
            return Ok(Vec::new());
        }
        if self.hnsw {
            // Enough candidates for k live results after dropping tombstones.
            let ef = ef_search
                .unwrap_or(self.ef_search)
                .max((k + self.dead.len()) as u32);
            ParameterSpace::new()
                .and_then(|p| p.set_index_parameter(&self.index, "efSearch", f64::from(ef)))
                .map_err(|e| faiss_error("setting efSearch", e))?;
        }
        let fetch = (k + self.dead.len()).min(total);
        let found = self
            .index
            .search(query, fetch)
            .map_err(|e| faiss_error("searching", e))?;
        Ok(found
            .labels
            .iter()
            .zip(&found.distances)
            .filter_map(|(label, score)| Some((label.get()? as i64, *score)))
            .filter(|(label, _)| !self.dead.contains(label))
            .take(k)
            .collect())
    }

    /// The collection's metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }
}
