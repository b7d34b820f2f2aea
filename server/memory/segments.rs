//! One collection as searches see it: the graph (the faiss index) and the
//! fresh segment of points not yet merged into it, searched together.

use super::collections::Metric;
use super::fresh::{Fresh, better_first, exact_score};
use super::index::VectorIndex;
use crate::error::Result;
use crate::store::PointStore;

/// The graph and the fresh segment of one collection, borrowed together
/// (under the collection's read lock). A label is in at most one of them.
#[derive(Debug, Clone, Copy)]
pub struct Segments<'a> {
    /// The faiss index.
    pub graph: &'a VectorIndex,
    /// Points committed since, searched exactly.
    pub fresh: &'a Fresh,
}

impl Segments<'_> {
    /// Up to `k` nearest live labels with their faiss scores, best first:
    /// the graph's `k` best and the fresh segment's, merged by score.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef_search: Option<u32>,
        nprobe: Option<u32>,
    ) -> Result<Vec<(i64, f32)>> {
        let mut found = self.graph.search(query, k, ef_search, nprobe)?;
        if self.fresh.is_empty() {
            return Ok(found);
        }
        found.extend(self.fresh.search(query, k));
        let metric = self.metric();
        found.sort_by(|a, b| better_first(metric, a.1, b.1));
        found.truncate(k);
        Ok(found)
    }

    /// As [`Self::search`], but when the graph's scores are quantized,
    /// `oversampling` x `k` of its candidates are ranked again by their
    /// full vectors, read from `store` (Qdrant's rescoring): quantization
    /// then decides which points are looked at, not their order, and the
    /// scores are exact. The fresh segment's are exact already.
    #[allow(clippy::too_many_arguments)]
    pub fn search_rescored(
        &self,
        query: &[f32],
        k: usize,
        ef_search: Option<u32>,
        nprobe: Option<u32>,
        oversampling: usize,
        store: &dyn PointStore,
        collection: &str,
    ) -> Result<Vec<(i64, f32)>> {
        if !self.graph.is_quantized() {
            return self.search(query, k, ef_search, nprobe);
        }
        let candidates = self.graph.search(
            query,
            k.saturating_mul(oversampling.max(1)),
            ef_search,
            nprobe,
        )?;
        let labels: Vec<i64> = candidates.iter().map(|(label, _)| *label).collect();
        let metric = self.metric();
        let mut found: Vec<(i64, f32)> = store
            .points_by_labels(collection, &labels)?
            .into_iter()
            .map(|(label, point)| (label, exact_score(metric, query, &point.vector)))
            .collect();
        found.extend(self.fresh.search(query, k));
        found.sort_by(|a, b| better_first(metric, a.1, b.1));
        found.truncate(k);
        Ok(found)
    }

    /// The point id of a live label.
    pub fn id_of(&self, label: i64) -> Option<&str> {
        self.graph.id_of(label).or_else(|| self.fresh.id_of(label))
    }

    /// Live points.
    pub fn live(&self) -> usize {
        self.graph.live() + self.fresh.len()
    }

    /// The collection's metric.
    pub fn metric(&self) -> Metric {
        self.graph.metric()
    }
}
