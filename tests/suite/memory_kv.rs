//! MemoryService key-value memory through the gRPC API: CRUD, TTL expiry,
//! compare-and-set, paging, validation, and durability across restarts.

use std::time::Duration;

use crate::common::{TestServer, test_config};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::*;
use tonic::transport::Channel;
use tonic_types::StatusExt;

fn put(namespace: &str, key: &str, value: &[u8]) -> PutRequest {
    PutRequest {
        namespace: namespace.into(),
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn get(namespace: &str, key: &str) -> GetRequest {
    GetRequest {
        namespace: namespace.into(),
        key: key.into(),
    }
}

async fn client(server: &TestServer) -> MemoryServiceClient<Channel> {
    MemoryServiceClient::new(server.channel().await)
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let mut request = put("notes", "user/42/name", "Ada".as_bytes());
    request.content_type = "text/plain".into();
    request.metadata.insert("source".into(), "chat".into());
    let stored = c.put(request).await.unwrap().into_inner().entry.unwrap();
    assert_eq!(stored.version, 1);
    assert!(stored.value.is_empty(), "Put answers without the value");
    assert!(stored.expires_at.is_none());

    let got = c
        .get(get("notes", "user/42/name"))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(got.value, b"Ada");
    assert_eq!(got.content_type, "text/plain");
    assert_eq!(got.metadata["source"], "chat");
    assert_eq!(got.created_at, got.updated_at);

    let again = c
        .put(put("notes", "user/42/name", b"Ada L."))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.entry.unwrap().version, 2);

    let deleted = c
        .delete(DeleteRequest {
            namespace: "notes".into(),
            key: "user/42/name".into(),
            if_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    let err = c.get(get("notes", "user/42/name")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn compare_and_set_conflicts_are_aborted() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let create = PutRequest {
        if_version: Some(0),
        ..put("n", "counter", b"1")
    };
    assert_eq!(
        c.put(create.clone())
            .await
            .unwrap()
            .into_inner()
            .entry
            .unwrap()
            .version,
        1
    );
    let err = c.put(create).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    let info = err.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "VERSION_CONFLICT");
    assert_eq!(info.metadata["actual_version"], "1");

    let update = PutRequest {
        if_version: Some(1),
        ..put("n", "counter", b"2")
    };
    assert_eq!(
        c.put(update.clone())
            .await
            .unwrap()
            .into_inner()
            .entry
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        c.put(update).await.unwrap_err().code(),
        tonic::Code::Aborted,
        "stale version"
    );
    let got = c
        .get(get("n", "counter"))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(got.value, b"2", "the refused write changed nothing");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let request = PutRequest {
        ttl: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..put("n", "short-lived", b"x")
    };
    let stored = c.put(request).await.unwrap().into_inner().entry.unwrap();
    assert!(stored.expires_at.is_some());
    assert!(c.get(get("n", "short-lived")).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        c.get(get("n", "short-lived")).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let listed = c
        .list(ListRequest {
            namespace: "n".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty(), "expired entries are not listed");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_pages_through_a_prefix_in_key_order() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    for i in (0..30).rev() {
        c.put(put("docs", &format!("page/{i:03}"), b"p"))
            .await
            .unwrap();
    }
    c.put(put("docs", "other", b"o")).await.unwrap();
    c.put(put("elsewhere", "page/999", b"x")).await.unwrap();
    let mut keys = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list(ListRequest {
                namespace: "docs".into(),
                prefix: "page/".into(),
                page_size: 7,
                page_token: token,
                include_values: pages == 0,
            })
            .await
            .unwrap()
            .into_inner();
        if pages == 0 {
            assert_eq!(page.entries[0].value, b"p", "values when asked");
        } else {
            assert!(page.entries.iter().all(|e| e.value.is_empty()));
        }
        pages += 1;
        keys.extend(page.entries.into_iter().map(|e| e.key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 5);
    let expected: Vec<String> = (0..30).map(|i| format!("page/{i:03}")).collect();
    assert_eq!(keys, expected);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_requests_name_the_field_and_write_nothing() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let err = c.put(put("has space", "", b"v")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["namespace", "key"]);

    let too_big = put("n", "big", &vec![7u8; 4 * 1024 * 1024 + 1]);
    let err = c.put(too_big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("4194304"), "{}", err.message());
    assert_eq!(
        c.get(get("n", "big")).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    let bad_token = ListRequest {
        namespace: "n".into(),
        page_token: "not-a-token".into(),
        ..Default::default()
    };
    assert_eq!(
        c.list(bad_token).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let (config, dir) = test_config();
    let data_dir = config.data_dir.clone();
    let server = TestServer::start_with(config.clone(), dir, |s| s).await;
    let mut c = client(&server).await;
    for i in 0..50 {
        c.put(put("durable", &format!("k{i}"), format!("v{i}").as_bytes()))
            .await
            .unwrap();
    }
    let dir = server.stop_keeping_data().await;

    let config = agentd::config::Config { data_dir, ..config };
    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut c = client(&server).await;
    for i in 0..50 {
        let got = c
            .get(get("durable", &format!("k{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.entry.unwrap().value, format!("v{i}").as_bytes());
    }
    server.stop().await.unwrap();
}
