//! One collection as searches see it: the graph (the faiss index) and the
//! fresh segment of points not yet merged into it, searched together.

use super::collections::Metric;
use super::fresh::{Fresh, better_first};
use super::index::VectorIndex;
use crate::error::Result;

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
