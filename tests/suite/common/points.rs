//! Seeded vectors, exact nearest neighbours and request builders for the
//! vector collection tests.

use std::time::{Duration, Instant};

use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use prost_types::value::Kind;
use tonic::transport::Channel;

/// Deterministic pseudo-random vectors in [-1, 1) (xorshift), so results
/// reproduce.
pub fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed.max(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 20_000) as f32 / 10_000.0 - 1.0
    };
    (0..n)
        .map(|_| (0..dims).map(|_| next()).collect())
        .collect()
}

/// Squared Euclidean distance.
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Ids (`p{i}`) of the k nearest points to `q` by brute force.
pub fn exact(points: &[Vec<f32>], q: &[f32], k: usize) -> Vec<String> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| l2(&points[a], q).total_cmp(&l2(&points[b], q)));
    order.into_iter().take(k).map(|i| format!("p{i}")).collect()
}

/// A point with a vector and a `bucket` payload field.
pub fn point(id: impl Into<String>, vector: &[f32], bucket: f64) -> PointInput {
    PointInput {
        id: id.into(),
        data: Some(point_input::Data::Vector(Vector {
            values: vector.to_vec(),
        })),
        payload: Some(prost_types::Struct {
            fields: [(
                "bucket".to_string(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(bucket)),
                },
            )]
            .into(),
        }),
    }
}

/// Points `p{first}`, `p{first + 1}`, ... for `vectors`.
pub fn points_from(first: usize, vectors: &[Vec<f32>]) -> Vec<PointInput> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| point(format!("p{}", first + i), v, ((first + i) % 10) as f64))
        .collect()
}

/// A k-nearest search for a vector.
pub fn search(collection: &str, q: &[f32], k: u32) -> SearchRequest {
    SearchRequest {
        collection: collection.into(),
        query: Some(search_request::Query::Vector(Vector { values: q.to_vec() })),
        k,
        ..Default::default()
    }
}

/// A delete of the points with these ids.
pub fn delete_ids(collection: &str, ids: Vec<String>) -> DeletePointsRequest {
    DeletePointsRequest {
        collection: collection.into(),
        selector: Some(delete_points_request::Selector::Ids(PointIds { ids })),
    }
}

/// The ids of a search's results, best first.
pub fn ids(response: SearchResponse) -> Vec<String> {
    response.results.into_iter().map(|r| r.id).collect()
}

/// Fraction of `truth` found in `got`.
pub fn overlap(truth: &[String], got: &[String]) -> f64 {
    let found = truth.iter().filter(|id| got.contains(id)).count();
    found as f64 / truth.len() as f64
}

/// Creates an L2 collection of `dims` dimensions with this index and
/// quantization (PQ as 8 sub-quantizers of 8 bits).
pub async fn create_collection(
    c: &mut MemoryServiceClient<Channel>,
    name: &str,
    dims: usize,
    kind: index_spec::Kind,
    quantization: QuantizationType,
) {
    let pq = if quantization == QuantizationType::Pq {
        8
    } else {
        0
    };
    c.create_collection(CreateCollectionRequest {
        name: name.into(),
        dimensions: dims as u32,
        metric: Metric::L2 as i32,
        index: Some(IndexSpec { kind: Some(kind) }),
        quantization: Some(Quantization {
            r#type: quantization as i32,
            pq_subquantizers: pq,
            pq_bits: pq,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The collection's CollectionStats.
pub async fn stats(c: &mut MemoryServiceClient<Channel>, name: &str) -> CollectionStatsResponse {
    c.collection_stats(CollectionStatsRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the collection's background work is done: no build, and
/// every written point merged into the graph (a build counts as running
/// until its snapshot is written). Its stats then.
pub async fn settled(c: &mut MemoryServiceClient<Channel>, name: &str) -> CollectionStatsResponse {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = stats(c, name).await;
        if !s.rebuilding && s.fresh_points == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "never settled: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
