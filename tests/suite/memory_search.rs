//! MemoryService Search through the gRPC API: exact and HNSW results against
//! brute force on a seeded random set, deletes and updates invisible at once,
//! filters that still return k results, text queries, and bad input.

use std::collections::HashSet;

use crate::common::points::{delete_ids, exact, ids, points_from, search, vectors};
use crate::common::{TestServer, violated_fields};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use prost_types::value::Kind;
use tonic::transport::Channel;

const DIMS: usize = 32;

async fn collection(
    server: &TestServer,
    name: &str,
    index: index_spec::Kind,
    points: &[Vec<f32>],
) -> MemoryServiceClient<Channel> {
    let mut c = MemoryServiceClient::new(server.channel().await);
    c.create_collection(CreateCollectionRequest {
        name: name.into(),
        dimensions: DIMS as u32,
        metric: Metric::L2 as i32,
        index: Some(IndexSpec { kind: Some(index) }),
        ..Default::default()
    })
    .await
    .unwrap();
    let inputs = points_from(0, points);
    c.upsert(UpsertRequest {
        collection: name.into(),
        points: inputs,
    })
    .await
    .unwrap();
    c
}

#[tokio::test]
async fn flat_is_exact_and_hnsw_recall_is_high() {
    let server = TestServer::start().await;
    let points = vectors(2000, DIMS, 7);
    let queries = vectors(50, DIMS, 99);
    let mut flat = collection(
        &server,
        "flat",
        index_spec::Kind::Flat(FlatIndex {}),
        &points,
    )
    .await;
    let mut hnsw = collection(
        &server,
        "hnsw",
        index_spec::Kind::Hnsw(HnswIndex::default()),
        &points,
    )
    .await;
    let mut found = 0;
    for q in &queries {
        let truth = exact(&points, q, 10);
        let got = ids(flat
            .search(search("flat", q, 10))
            .await
            .unwrap()
            .into_inner());
        assert_eq!(got, truth, "flat search is exact");
        let approx: HashSet<String> = ids(hnsw
            .search(search("hnsw", q, 10))
            .await
            .unwrap()
            .into_inner())
        .into_iter()
        .collect();
        found += truth.iter().filter(|id| approx.contains(*id)).count();
    }
    let recall = found as f64 / (queries.len() * 10) as f64;
    assert!(recall >= 0.95, "HNSW recall@10 {recall}");
    eprintln!("HNSW recall@10 on 2000x{DIMS}: {recall}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn deleted_and_replaced_points_vanish_at_once() {
    let server = TestServer::start().await;
    let points = vectors(300, DIMS, 3);
    let mut c = collection(
        &server,
        "docs",
        index_spec::Kind::Hnsw(HnswIndex::default()),
        &points,
    )
    .await;
    let q = &points[42];
    let first = ids(c.search(search("docs", q, 1)).await.unwrap().into_inner());
    assert_eq!(first, ["p42"]);
    c.delete_points(delete_ids("docs", vec!["p42".into()]))
        .await
        .unwrap();
    let after = ids(c.search(search("docs", q, 5)).await.unwrap().into_inner());
    assert_eq!(after.len(), 5, "still k results: {after:?}");
    assert!(
        !after.contains(&"p42".to_string()),
        "deleted point returned: {after:?}"
    );

    // Move p7 far away: a search at its old place must not find it.
    let old = points[7].clone();
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points: vec![PointInput {
            id: "p7".into(),
            data: Some(point_input::Data::Vector(Vector {
                values: vec![50.0; DIMS],
            })),
            payload: None,
        }],
    })
    .await
    .unwrap();
    let near_old = ids(c
        .search(search("docs", &old, 3))
        .await
        .unwrap()
        .into_inner());
    assert!(!near_old.contains(&"p7".to_string()), "{near_old:?}");
    let near_new = ids(c
        .search(search("docs", &[50.0; DIMS], 1))
        .await
        .unwrap()
        .into_inner());
    assert_eq!(near_new, ["p7"]);
    server.stop().await.unwrap();
}

/// Short searches run on the async workers and others on the blocking
/// pool; either way a delete is invisible to every search that starts after
/// it was acknowledged, while other clients keep searching.
#[tokio::test]
async fn searches_racing_deletes_never_see_an_acknowledged_delete() {
    let server = TestServer::start().await;
    let points = vectors(400, DIMS, 5);
    let mut c = collection(
        &server,
        "docs",
        index_spec::Kind::Hnsw(HnswIndex::default()),
        &points,
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut searchers = Vec::new();
    for s in 0..3 {
        let (mut c, stop, queries) = (c.clone(), stop.clone(), vectors(20, DIMS, 50 + s));
        searchers.push(tokio::spawn(async move {
            let mut done = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let q = &queries[done % queries.len()];
                let found = ids(c.search(search("docs", q, 10)).await.unwrap().into_inner());
                assert_eq!(found.len(), 10, "{found:?}");
                done += 1;
            }
            done
        }));
    }
    let mut gone = HashSet::new();
    for i in (0..400).step_by(4) {
        let id = format!("p{i}");
        c.delete_points(delete_ids("docs", vec![id.clone()]))
            .await
            .unwrap();
        gone.insert(id.clone());
        let found = ids(c
            .search(search("docs", &points[i], 3))
            .await
            .unwrap()
            .into_inner());
        assert_eq!(found.len(), 3);
        assert!(
            !found.contains(&id),
            "{id} found right after its delete: {found:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for searcher in searchers {
        assert!(searcher.await.unwrap() > 0);
    }
    let found = ids(c
        .search(search("docs", &points[1], 5))
        .await
        .unwrap()
        .into_inner());
    assert!(found.iter().all(|id| !gone.contains(id)), "{found:?}");
    assert_eq!((found.len(), found[0].as_str()), (5, "p1"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn filtered_search_returns_k_matches_with_payloads() {
    let server = TestServer::start().await;
    let points = vectors(1000, DIMS, 11);
    let mut c = collection(
        &server,
        "docs",
        index_spec::Kind::Hnsw(HnswIndex::default()),
        &points,
    )
    .await;
    let only_bucket_3 = Filter {
        kind: Some(filter::Kind::Field(FieldCondition {
            key: "bucket".into(),
            condition: Some(field_condition::Condition::Eq(prost_types::Value {
                kind: Some(Kind::NumberValue(3.0)),
            })),
        })),
    };
    let request = SearchRequest {
        filter: Some(only_bucket_3),
        with_payload: true,
        ..search("docs", &points[0], 10)
    };
    let results = c.search(request).await.unwrap().into_inner().results;
    assert_eq!(results.len(), 10, "10% of points match: still 10 results");
    for r in &results {
        let bucket = &r.payload.as_ref().unwrap().fields["bucket"];
        assert_eq!(bucket.kind, Some(Kind::NumberValue(3.0)));
    }
    assert!(
        results.windows(2).all(|w| w[0].score <= w[1].score),
        "best (nearest) first"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn text_queries_use_the_collection_model() {
    let server = TestServer::start().await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    c.create_collection(CreateCollectionRequest {
        name: "notes".into(),
        metric: Metric::Cosine as i32,
        embedding_model: "hash".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let texts = [
        "vector search with faiss",
        "lunch in Lisbon",
        "the weather today",
    ];
    c.upsert(UpsertRequest {
        collection: "notes".into(),
        points: texts
            .iter()
            .enumerate()
            .map(|(i, t)| PointInput {
                id: format!("n{i}"),
                data: Some(point_input::Data::Text(t.to_string())),
                payload: None,
            })
            .collect(),
    })
    .await
    .unwrap();
    let request = SearchRequest {
        collection: "notes".into(),
        query: Some(search_request::Query::Text(
            "searching vectors in faiss".into(),
        )),
        k: 1,
        ..Default::default()
    };
    let best = c.search(request).await.unwrap().into_inner().results;
    assert_eq!(best[0].id, "n0");
    assert!(
        best[0].score > 0.3 && best[0].score <= 1.0001,
        "cosine {}",
        best[0].score
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_searches_are_refused() {
    let server = TestServer::start().await;
    let points = vectors(10, DIMS, 5);
    let mut c = collection(
        &server,
        "docs",
        index_spec::Kind::Flat(FlatIndex {}),
        &points,
    )
    .await;
    let err = c.search(search("docs", &points[0], 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c.search(search("docs", &[1.0, 2.0], 3)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("32 dimensions"), "{}", err.message());
    let err = c.search(search("nope", &points[0], 3)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    for threshold in [f32::NAN, f32::INFINITY] {
        let mut nan = search("docs", &points[0], 3);
        nan.score_threshold = Some(threshold);
        let err = c.search(nan).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["score_threshold"], "{threshold}");
    }

    c.create_collection(CreateCollectionRequest {
        name: "sq8".into(),
        dimensions: DIMS as u32,
        metric: Metric::L2 as i32,
        quantization: Some(Quantization {
            r#type: QuantizationType::Sq8 as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // Too few points to train SQ8 yet: searched exactly meanwhile.
    let found = c.search(search("sq8", &points[0], 3)).await.unwrap();
    assert!(found.into_inner().results.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn search_batch_answers_each_search_and_names_the_bad_one() {
    let server = TestServer::start().await;
    let points = vectors(200, DIMS, 21);
    let mut c = collection(
        &server,
        "batch",
        index_spec::Kind::Flat(FlatIndex {}),
        &points,
    )
    .await;
    let queries = vectors(3, DIMS, 22);
    let searches: Vec<SearchRequest> = queries.iter().map(|q| search("", q, 5)).collect();
    let batch = c
        .search_batch(SearchBatchRequest {
            collection: "batch".into(),
            searches: searches.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 3);
    for (q, result) in queries.iter().zip(batch.results) {
        assert_eq!(ids(result), exact(&points, q, 5), "each search as if alone");
    }

    let mut bad = searches.clone();
    bad[1].k = 0;
    bad[2].collection = "other".into();
    let err = c
        .search_batch(SearchBatchRequest {
            collection: "batch".into(),
            searches: bad,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["searches[1].k"]);
    let mut other = searches.clone();
    other[0].collection = "other".into();
    let err = c
        .search_batch(SearchBatchRequest {
            collection: "batch".into(),
            searches: other,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["searches[0].collection"]);
    for count in [0, 257] {
        let err = c
            .search_batch(SearchBatchRequest {
                collection: "batch".into(),
                searches: vec![searches[0].clone(); count],
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["searches"], "{count} searches");
        assert!(err.message().contains("1 to 256"), "{}", err.message());
    }
    server.stop().await.unwrap();
}
