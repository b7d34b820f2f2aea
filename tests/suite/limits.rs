//! Message size limit and compression, through the real gRPC stack.

use crate::common::{TestServer, test_config};
use agentd::pb::v1::*;
use tonic::codec::CompressionEncoding;

async fn small_limit_server() -> TestServer {
    let (mut config, dir) = test_config();
    config.max_message_bytes = 64 * 1024;
    TestServer::start_with(config, dir, |s| s).await
}

fn embed_request(bytes: usize) -> EmbedRequest {
    EmbedRequest {
        inputs: vec!["x".repeat(bytes)],
        ..Default::default()
    }
}

#[tokio::test]
async fn oversize_unary_request_is_resource_exhausted() {
    let server = small_limit_server().await;
    let mut client = embedding_service_client::EmbeddingServiceClient::new(server.channel().await);
    let err = client.embed(embed_request(100 * 1024)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    assert!(
        err.message().contains("65536"),
        "the limit is named: {}",
        err.message()
    );

    // Just under the limit is served.
    let answer = client.embed(embed_request(60 * 1024)).await.unwrap();
    assert_eq!(answer.into_inner().embeddings.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversize_server_streaming_request_is_resource_exhausted() {
    let server = small_limit_server().await;
    let mut client =
        query_control_service_client::QueryControlServiceClient::new(server.channel().await);
    let err = client
        .attach(AttachRequest {
            query_id: "q".repeat(100 * 1024),
            from_seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn gzip_and_zstd_requests_are_decoded() {
    let server = TestServer::start().await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client =
            embedding_service_client::EmbeddingServiceClient::new(server.channel().await)
                .send_compressed(encoding)
                .accept_compressed(encoding);
        let answer = client.embed(embed_request(10)).await.unwrap();
        assert_eq!(
            answer
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok()),
            Some(if encoding == CompressionEncoding::Gzip {
                "gzip"
            } else {
                "zstd"
            }),
            "the answer is compressed as asked"
        );
        assert_eq!(answer.into_inner().embeddings.len(), 1, "{encoding:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_limit_applies_to_the_decompressed_size() {
    let (mut config, dir) = test_config();
    config.max_message_bytes = 64 * 1024;
    let server = TestServer::start_with(config, dir, |s| s).await;
    let mut client = embedding_service_client::EmbeddingServiceClient::new(server.channel().await)
        .send_compressed(CompressionEncoding::Gzip);
    // 1 MiB of one letter compresses to about 1 KiB on the wire.
    let err = client.embed(embed_request(1024 * 1024)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    server.stop().await.unwrap();
}
