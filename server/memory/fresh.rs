//! A collection's fresh segment: points committed to the store but not yet
//! in its graph, searched exactly.
//!
//! Inserting into an HNSW graph costs about a millisecond a point at 100k
//! points, so a write that waited for it was acknowledged at graph speed
//! (hundreds of points a second), not store speed. Instead a committed
//! write's points land here (a copy of the vectors, microseconds), every
//! search scans them exactly and merges them with the graph's results
//! ([`super::segments`]), and a background merger moves them into the graph
//! oldest first ([`super::indexes`]). Like Qdrant's appendable segment,
//! this keeps read-your-writes without making writers wait for the graph.
//!
//! Labels only grow (the store hands them out in order, and the merger takes
//! the oldest first), so every label here is larger than every label in the
//! graph: a snapshot of the graph plus the store's points after its largest
//! label is the whole collection.

use std::collections::HashMap;

use super::collections::Metric;
use crate::store::LabelledVectors;

/// Points waiting for the graph, oldest first.
#[derive(Debug)]
pub struct Fresh {
    dims: usize,
    metric: Metric,
    /// Labels in increasing order; removed ones stay until compaction, with
    /// `alive` false.
    labels: Vec<i64>,
    /// The vectors, back to back, one per label.
    data: Vec<f32>,
    /// Point ids, one per label (emptied when removed).
    ids: Vec<String>,
    alive: Vec<bool>,
    /// Positions before this were merged into the graph (or removed).
    start: usize,
    /// Position of each live label.
    at: HashMap<i64, usize>,
}

impl Fresh {
    /// An empty segment for vectors of `dims` compared by `metric`.
    pub fn new(dims: usize, metric: Metric) -> Self {
        Self {
            dims,
            metric,
            labels: Vec::new(),
            data: Vec::new(),
            ids: Vec::new(),
            alive: Vec::new(),
            start: 0,
            at: HashMap::new(),
        }
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether no point waits.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Adds a point newer than every one here. A label already here is
    /// ignored (a change replayed twice).
    pub fn push(&mut self, label: i64, vector: &[f32], id: &str) {
        debug_assert_eq!(vector.len(), self.dims);
        if self.at.contains_key(&label) {
            return;
        }
        debug_assert!(
            self.labels.last().is_none_or(|last| *last < label),
            "fresh labels arrive in increasing order"
        );
        self.at.insert(label, self.labels.len());
        self.labels.push(label);
        self.data.extend_from_slice(vector);
        self.ids.push(id.to_owned());
        self.alive.push(true);
    }

    /// Removes a replaced or deleted point; false if it is not here.
    pub fn remove(&mut self, label: i64) -> bool {
        let Some(position) = self.at.remove(&label) else {
            return false;
        };
        self.alive[position] = false;
        self.ids[position] = String::new();
        true
    }

    /// Whether `label` is here.
    pub fn contains(&self, label: i64) -> bool {
        self.at.contains_key(&label)
    }

    /// The point id of a label here.
    pub fn id_of(&self, label: i64) -> Option<&str> {
        self.at.get(&label).map(|p| self.ids[*p].as_str())
    }

    /// The live points, oldest first: (label, vector, id).
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[f32], &str)> {
        (self.start..self.labels.len())
            .filter(|p| self.alive[*p])
            .map(|p| (self.labels[p], self.vector(p), self.ids[p].as_str()))
    }

    /// Up to `n` of the oldest live points, for the merger, with their ids.
    pub fn oldest(&self, n: usize) -> (LabelledVectors, Vec<String>) {
        let mut points = LabelledVectors::default();
        let mut ids = Vec::with_capacity(n.min(self.len()));
        for (label, vector, id) in self.iter().take(n) {
            points.push(label, vector);
            ids.push(id.to_owned());
        }
        (points, ids)
    }

    /// Forgets the oldest live points up to and including `label` (the
    /// merger moved them into the graph).
    pub fn drop_through(&mut self, label: i64) {
        while self.start < self.labels.len() && self.labels[self.start] <= label {
            if self.alive[self.start] {
                self.at.remove(&self.labels[self.start]);
            }
            self.start += 1;
        }
        self.compact();
    }

    /// Frees the merged prefix once it is most of what is held, so the
    /// cost stays amortised O(1) a point.
    fn compact(&mut self) {
        if self.at.is_empty() {
            // All merged: give the memory back.
            *self = Self::new(self.dims, self.metric);
            return;
        }
        if self.start < 1024 || self.start * 2 < self.labels.len() {
            return;
        }
        let start = self.start;
        self.labels.drain(..start);
        self.data.drain(..start * self.dims);
        self.ids.drain(..start);
        self.alive.drain(..start);
        self.start = 0;
        for position in self.at.values_mut() {
            *position -= start;
        }
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> u64 {
        (self.data.capacity() * 4
            + self.labels.capacity() * 8
            + self.alive.capacity()
            + self.ids.iter().map(|id| id.capacity() + 24).sum::<usize>()
            + self.at.capacity() * 16) as u64
    }

    fn vector(&self, position: usize) -> &[f32] {
        &self.data[position * self.dims..(position + 1) * self.dims]
    }

    /// The `k` nearest live points to `query`, best first, scored as faiss
    /// scores the graph (inner product for cosine and dot, squared distance
    /// for L2), so the two lists merge by score.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(i64, f32)> {
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        let metric = self.metric;
        let mut scored: Vec<(i64, f32)> = (self.start..self.labels.len())
            .filter(|p| self.alive[*p])
            .map(|p| (self.labels[p], exact_score(metric, query, self.vector(p))))
            .collect();
        let order = |a: &(i64, f32), b: &(i64, f32)| better_first(self.metric, a.1, b.1);
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, order);
            scored.truncate(k);
        }
        scored.sort_by(order);
        scored
    }
}

/// The score faiss gives under `metric`, computed exactly from full
/// vectors: the inner product for cosine (of normalised vectors) and dot,
/// the squared distance for L2.
pub fn exact_score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => dot(a, b),
        Metric::L2 => squared_distance(a, b),
    }
}

/// Orders two faiss scores of `metric` best first: higher inner products,
/// lower distances.
pub fn better_first(metric: Metric, a: f32, b: f32) -> std::cmp::Ordering {
    match metric {
        Metric::Cosine | Metric::Dot => b.total_cmp(&a),
        Metric::L2 => a.total_cmp(&b),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    eight_lanes(a, b, |x, y, sum| x.mul_add(y, sum))
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    eight_lanes(a, b, |x, y, sum| (x - y).mul_add(x - y, sum))
}

/// Folds `a` and `b` component-wise with `step` (component of a, of b,
/// running sum) into eight independent sums, so the compiler keeps them in
/// one AVX register (float addition is not associative, so a single sum
/// would stay scalar).
#[inline(always)]
fn eight_lanes(a: &[f32], b: &[f32], step: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .fold(0.0, |sum, (x, y)| step(*x, *y, sum));
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] = step(x[i], y[i], lanes[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(i: usize, dims: usize) -> Vec<f32> {
        (0..dims)
            .map(|j| ((i * 31 + j * 7) as f32 * 0.1).sin())
            .collect()
    }

    #[test]
    fn kernels_match_the_plain_sums() {
        for dims in [1, 7, 8, 9, 384] {
            let (a, b) = (vector(1, dims), vector(2, dims));
            let plain_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let plain_l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((dot(&a, &b) - plain_dot).abs() < 1e-4, "{dims}");
            assert!((squared_distance(&a, &b) - plain_l2).abs() < 1e-4, "{dims}");
        }
    }

    #[test]
    fn searches_exactly_over_live_points_best_first() {
        let dims = 9;
        let mut fresh = Fresh::new(dims, Metric::L2);
        for i in 0..50 {
            fresh.push(100 + i as i64, &vector(i, dims), &format!("p{i}"));
        }
        assert!(fresh.remove(103));
        assert!(!fresh.remove(103), "removed once");
        let found = fresh.search(&vector(3, dims), 50);
        assert_eq!(found.len(), 49);
        assert!(found.iter().all(|(l, _)| *l != 103));
        assert!(found.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
        let top = fresh.search(&vector(7, dims), 3);
        assert_eq!(top[0], (107, 0.0));
        assert_eq!(top.len(), 3);
        assert_eq!(&top[..], &found_sorted(&fresh, &vector(7, dims))[..3]);
        assert_eq!(fresh.id_of(107), Some("p7"));
        assert_eq!(fresh.id_of(103), None);
    }

    fn found_sorted(fresh: &Fresh, q: &[f32]) -> Vec<(i64, f32)> {
        let mut all: Vec<(i64, f32)> = fresh
            .iter()
            .map(|(l, v, _)| (l, squared_distance(q, v)))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        all
    }

    #[test]
    fn inner_products_rank_highest_first() {
        let mut fresh = Fresh::new(2, Metric::Dot);
        fresh.push(1, &[1.0, 0.0], "a");
        fresh.push(2, &[0.0, 1.0], "b");
        fresh.push(3, &[0.7, 0.7], "c");
        let found = fresh.search(&[1.0, 0.1], 2);
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn the_merger_takes_the_oldest_and_compaction_keeps_positions() {
        let dims = 4;
        let mut fresh = Fresh::new(dims, Metric::L2);
        for i in 0..3_000 {
            fresh.push(i as i64 + 1, &vector(i, dims), &format!("p{i}"));
        }
        fresh.remove(2);
        let (points, ids) = fresh.oldest(3);
        assert_eq!(points.labels, [1, 3, 4], "removed points are skipped");
        assert_eq!(ids, ["p0", "p2", "p3"]);
        fresh.drop_through(2_500);
        assert_eq!(fresh.len(), 500);
        assert!(!fresh.contains(2_500) && fresh.contains(2_501));
        // Compacted: positions moved, lookups and searches still right.
        assert_eq!(fresh.start, 0);
        assert_eq!(fresh.id_of(2_800), Some("p2799"));
        assert_eq!(fresh.search(&vector(2_799, dims), 1)[0], (2_800, 0.0));
        fresh.push(5_000, &vector(9, dims), "late");
        fresh.push(5_000, &vector(9, dims), "late");
        assert_eq!(fresh.len(), 501, "a replayed label is added once");
        fresh.drop_through(i64::MAX);
        assert!(fresh.is_empty());
        assert_eq!(fresh.iter().count(), 0);
    }
}
