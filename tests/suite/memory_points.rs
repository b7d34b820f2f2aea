//! MemoryService points through the gRPC API: upsert, get, delete by ids and
//! by filter, count, validation, text points, and durability.

use crate::common::{TestServer, test_config, violated_fields};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use prost_types::value::Kind;
use tonic::transport::Channel;

fn payload(pairs: &[(&str, Kind)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    prost_types::Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    }
}

fn point(id: &str, vector: &[f32], lang: &str, stars: f64) -> PointInput {
    PointInput {
        id: id.into(),
        data: Some(point_input::Data::Vector(Vector {
            values: vector.to_vec(),
        })),
        payload: Some(payload(&[
            ("lang", Kind::StringValue(lang.into())),
            ("stars", Kind::NumberValue(stars)),
        ])),
    }
}

fn eq(key: &str, value: Kind) -> Filter {
    Filter {
        kind: Some(filter::Kind::Field(FieldCondition {
            key: key.into(),
            condition: Some(field_condition::Condition::Eq(prost_types::Value {
                kind: Some(value),
            })),
        })),
    }
}

async fn with_collection(server: &TestServer, metric: Metric) -> MemoryServiceClient<Channel> {
    let mut c = MemoryServiceClient::new(server.channel().await);
    c.create_collection(CreateCollectionRequest {
        name: "docs".into(),
        dimensions: 3,
        metric: metric as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    c
}

#[tokio::test]
async fn upsert_then_get_and_update() {
    let server = TestServer::start().await;
    let mut c = with_collection(&server, Metric::L2).await;
    let first = c
        .upsert(UpsertRequest {
            collection: "docs".into(),
            points: vec![
                point("a", &[1.0, 2.0, 3.0], "en", 4.0),
                point("", &[0.0, 1.0, 0.0], "fr", 2.0),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.results[0].id, "a");
    assert_eq!(first.results[0].status, UpsertStatus::Created as i32);
    assert_eq!(first.results[1].id.len(), 26, "a generated ULID");
    let second = c
        .upsert(UpsertRequest {
            collection: "docs".into(),
            points: vec![point("a", &[3.0, 2.0, 1.0], "de", 5.0)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.results[0].status, UpsertStatus::Updated as i32);
    assert!(second.sequence > first.sequence);

    let got = c
        .get_points(GetPointsRequest {
            collection: "docs".into(),
            ids: vec!["a".into(), "missing".into()],
            with_payload: true,
            with_vector: true,
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].vector.as_ref().unwrap().values, [3.0, 2.0, 1.0]);
    let lang = &got[0].payload.as_ref().unwrap().fields["lang"];
    assert_eq!(lang.kind, Some(Kind::StringValue("de".into())));

    let collection = c
        .get_collection(GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .collection
        .unwrap();
    assert_eq!(collection.points_count, 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn cosine_collections_store_unit_vectors() {
    let server = TestServer::start().await;
    let mut c = with_collection(&server, Metric::Cosine).await;
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points: vec![point("a", &[3.0, 0.0, 4.0], "en", 1.0)],
    })
    .await
    .unwrap();
    let got = c
        .get_points(GetPointsRequest {
            collection: "docs".into(),
            ids: vec!["a".into()],
            with_vector: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    assert_eq!(got[0].vector.as_ref().unwrap().values, [0.6, 0.0, 0.8]);
    assert!(got[0].payload.is_none(), "payload only when asked");
    let zero = c
        .upsert(UpsertRequest {
            collection: "docs".into(),
            points: vec![point("z", &[0.0, 0.0, 0.0], "en", 1.0)],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&zero), ["points[0].vector"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_points_name_every_field_and_write_nothing() {
    let server = TestServer::start().await;
    let mut c = with_collection(&server, Metric::Dot).await;
    let bad = UpsertRequest {
        collection: "docs".into(),
        points: vec![
            point("ok", &[1.0, 1.0, 1.0], "en", 1.0),
            point("short", &[1.0], "en", 1.0),
            point("nan", &[1.0, f32::NAN, 1.0], "en", 1.0),
            point("ok", &[1.0, 1.0, 1.0], "en", 1.0),
            PointInput {
                id: "text".into(),
                data: Some(point_input::Data::Text("no model here".into())),
                payload: None,
            },
        ],
    };
    let err = c.upsert(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "points[1].vector",
            "points[2].vector",
            "points[3].id",
            "points[4].text"
        ]
    );
    let count = c
        .count(CountRequest {
            collection: "docs".into(),
            filter: None,
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 0, "nothing of the refused request was written");
    let unknown = c
        .upsert(UpsertRequest {
            collection: "nope".into(),
            points: vec![point("a", &[1.0, 1.0, 1.0], "en", 1.0)],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn count_and_delete_by_filter() {
    let server = TestServer::start().await;
    let mut c = with_collection(&server, Metric::L2).await;
    let points = (0..20)
        .map(|i| {
            let lang = if i % 2 == 0 { "en" } else { "fr" };
            point(
                &format!("p{i}"),
                &[i as f32, 0.0, 1.0],
                lang,
                f64::from(i % 5),
            )
        })
        .collect();
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points,
    })
    .await
    .unwrap();
    let count = |filter: Option<Filter>| CountRequest {
        collection: "docs".into(),
        filter,
    };
    let english = eq("lang", Kind::StringValue("en".into()));
    assert_eq!(
        c.count(count(Some(english.clone())))
            .await
            .unwrap()
            .into_inner()
            .count,
        10
    );
    let high = Filter {
        kind: Some(filter::Kind::Field(FieldCondition {
            key: "stars".into(),
            condition: Some(field_condition::Condition::Range(Range {
                gte: Some(3.0),
                ..Default::default()
            })),
        })),
    };
    let both = Filter {
        kind: Some(filter::Kind::AllOf(FilterList {
            filters: vec![english, high],
        })),
    };
    // English points are the even ones; stars = i % 5, so stars >= 3 among
    // them: p4, p8, p14, p18.
    assert_eq!(
        c.count(count(Some(both.clone())))
            .await
            .unwrap()
            .into_inner()
            .count,
        4
    );
    let deleted = c
        .delete_points(DeletePointsRequest {
            collection: "docs".into(),
            selector: Some(delete_points_request::Selector::Filter(both)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 4);
    assert_eq!(c.count(count(None)).await.unwrap().into_inner().count, 16);
    let by_id = c
        .delete_points(DeletePointsRequest {
            collection: "docs".into(),
            selector: Some(delete_points_request::Selector::Ids(PointIds {
                ids: vec!["p1".into(), "p1-missing".into()],
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.deleted, 1);
    let bad_filter = c
        .count(count(Some(Filter {
            kind: Some(filter::Kind::AnyOf(FilterList { filters: vec![] })),
        })))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_filter), ["filter.any_of"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn text_points_are_embedded_with_the_collection_model() {
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
    let text = |id: &str, t: &str| PointInput {
        id: id.into(),
        data: Some(point_input::Data::Text(t.into())),
        payload: None,
    };
    c.upsert(UpsertRequest {
        collection: "notes".into(),
        points: vec![
            text("a", "faiss vector search"),
            text("b", "lunch in Lisbon"),
        ],
    })
    .await
    .unwrap();
    let got = c
        .get_points(GetPointsRequest {
            collection: "notes".into(),
            ids: vec!["a".into()],
            with_vector: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    let v = &got[0].vector.as_ref().unwrap().values;
    assert_eq!(v.len(), 384);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn points_survive_a_restart_and_go_with_their_collection() {
    let (config, dir) = test_config();
    let server = TestServer::start_with(config.clone(), dir, |s| s).await;
    let mut c = with_collection(&server, Metric::L2).await;
    let points = (0..100)
        .map(|i| point(&format!("p{i}"), &[i as f32, 1.0, 2.0], "en", 1.0))
        .collect();
    c.upsert(UpsertRequest {
        collection: "docs".into(),
        points,
    })
    .await
    .unwrap();
    let dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    let count = CountRequest {
        collection: "docs".into(),
        filter: None,
    };
    assert_eq!(
        c.count(count.clone()).await.unwrap().into_inner().count,
        100
    );
    c.delete_collection(DeleteCollectionRequest {
        name: "docs".into(),
    })
    .await
    .unwrap();
    c.create_collection(CreateCollectionRequest {
        name: "docs".into(),
        dimensions: 3,
        metric: Metric::L2 as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.count(count).await.unwrap().into_inner().count,
        0,
        "points went with the collection"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_upsert_past_the_index_memory_limit_is_refused_and_writes_nothing() {
    use crate::common::points::{points_from, vectors};
    use tonic_types::StatusExt;

    let (mut config, dir) = test_config();
    config.memory.max_index_bytes = 1 << 20;
    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = MemoryServiceClient::new(server.channel().await);
    c.create_collection(CreateCollectionRequest {
        name: "big".into(),
        dimensions: 384,
        metric: Metric::L2 as i32,
        index: Some(IndexSpec {
            kind: Some(index_spec::Kind::Flat(FlatIndex {})),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // Unquantized 384-dimensional points take 1,594 bytes each in a Flat
    // index with their ids: 657 fit in 1 MiB.
    let all = vectors(700, 384, 5);
    let upsert = |first: usize, last: usize| UpsertRequest {
        collection: "big".into(),
        points: points_from(first, &all[first..last]),
    };
    let count = || CountRequest {
        collection: "big".into(),
        filter: None,
    };
    c.upsert(upsert(0, 600)).await.unwrap();

    let err = c.upsert(upsert(600, 700)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let info = err.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "MEMORY_LIMIT");
    assert!(
        err.message().contains("[memory] max_index_bytes")
            && err.message().contains("657 points at most"),
        "{}",
        err.message()
    );
    assert_eq!(
        c.count(count()).await.unwrap().into_inner().count,
        600,
        "nothing written"
    );

    // Replacing stored points does not grow the index; up to the limit fits.
    c.upsert(upsert(0, 100)).await.unwrap();
    c.upsert(upsert(600, 657)).await.unwrap();
    assert_eq!(c.count(count()).await.unwrap().into_inner().count, 657);
    let err = c.upsert(upsert(657, 658)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    server.stop().await.unwrap();
}
