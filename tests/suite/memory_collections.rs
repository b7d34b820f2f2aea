//! MemoryService collection definitions through the gRPC API.

use crate::common::{TestServer, test_config, violated_fields};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;

fn create(name: &str, dimensions: u32) -> CreateCollectionRequest {
    CreateCollectionRequest {
        name: name.into(),
        dimensions,
        metric: Metric::Cosine as i32,
        ..Default::default()
    }
}

async fn client(server: &TestServer) -> MemoryServiceClient<Channel> {
    MemoryServiceClient::new(server.channel().await)
}

#[tokio::test]
async fn create_resolves_defaults_and_get_returns_them() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let created = c
        .create_collection(create("docs", 384))
        .await
        .unwrap()
        .into_inner();
    let created = created.collection.unwrap();
    let Some(index_spec::Kind::Hnsw(hnsw)) = created.index.unwrap().kind else {
        panic!("HNSW by default")
    };
    assert_eq!(
        (hnsw.m, hnsw.ef_construction, hnsw.ef_search),
        (16, 100, 100)
    );
    assert_eq!(
        created.quantization.unwrap().r#type,
        QuantizationType::None as i32
    );
    assert_eq!(created.points_count, 0);

    let got = c
        .get_collection(GetCollectionRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .collection
        .unwrap();
    assert_eq!(got.dimensions, 384);
    assert_eq!(got.metric, Metric::Cosine as i32);
    assert_eq!(got.created_at, created.created_at);

    let again = c.create_collection(create("docs", 384)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn quantized_and_ivf_collections_are_built_by_faiss() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let sq8 = CreateCollectionRequest {
        quantization: Some(Quantization {
            r#type: QuantizationType::Sq8 as i32,
            ..Default::default()
        }),
        ..create("sq8", 128)
    };
    c.create_collection(sq8).await.unwrap();
    let ivf_pq = CreateCollectionRequest {
        index: Some(IndexSpec {
            kind: Some(index_spec::Kind::Ivf(IvfIndex {
                nlist: 256,
                nprobe: 0,
            })),
        }),
        quantization: Some(Quantization {
            r#type: QuantizationType::Pq as i32,
            ..Default::default()
        }),
        ..create("ivfpq", 384)
    };
    let made = c
        .create_collection(ivf_pq)
        .await
        .unwrap()
        .into_inner()
        .collection
        .unwrap();
    let q = made.quantization.unwrap();
    assert_eq!((q.pq_subquantizers, q.pq_bits), (96, 8));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_definitions_name_every_bad_field() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let bad = CreateCollectionRequest {
        name: "no spaces allowed".into(),
        dimensions: 0,
        metric: Metric::Unspecified as i32,
        index: Some(IndexSpec {
            kind: Some(index_spec::Kind::Hnsw(HnswIndex {
                m: 1000,
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let err = c.create_collection(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        ["name", "metric", "dimensions", "index.hnsw.m"]
    );

    let unknown_model = CreateCollectionRequest {
        embedding_model: "no-such-model".into(),
        ..create("text", 0)
    };
    let err = c.create_collection(unknown_model).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["embedding_model", "dimensions"]);

    let listed = c
        .list_collections(ListCollectionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.collections.is_empty(), "nothing was written");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn text_collections_take_the_model_dimensions() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let text = CreateCollectionRequest {
        embedding_model: "hash".into(),
        ..create("notes", 0)
    };
    let made = c
        .create_collection(text)
        .await
        .unwrap()
        .into_inner()
        .collection
        .unwrap();
    assert_eq!(made.dimensions, 384, "the hash model's dimensions");
    assert_eq!(made.embedding_model, "hash");
    let mismatch = CreateCollectionRequest {
        embedding_model: "hash".into(),
        ..create("notes2", 128)
    };
    let err = c.create_collection(mismatch).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["dimensions"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_pages_delete_removes_and_restart_keeps() {
    let (config, dir) = test_config();
    let server = TestServer::start_with(config.clone(), dir, |s| s).await;
    let mut c = client(&server).await;
    for i in 0..5 {
        c.create_collection(create(&format!("c{i}"), 8))
            .await
            .unwrap();
    }
    let first = c
        .list_collections(ListCollectionsRequest {
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = c
        .list_collections(ListCollectionsRequest {
            page_size: 3,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = first
        .collections
        .iter()
        .chain(&second.collections)
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    assert!(second.next_page_token.is_empty());

    let deleted = c
        .delete_collection(DeleteCollectionRequest { name: "c2".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    let err = c
        .get_collection(GetCollectionRequest { name: "c2".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let dir = server.stop_keeping_data().await;
    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = client(&server).await;
    let names: Vec<String> = c
        .list_collections(ListCollectionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collections
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["c0", "c1", "c3", "c4"]);
    server.stop().await.unwrap();
}
