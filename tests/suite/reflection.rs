//! Server reflection, v1 and v1alpha: listing services and describing them
//! with no .proto files on the client side.

use crate::common::TestServer;
use futures::StreamExt;
use prost::Message;

const EXPECTED: [&str; 6] = [
    "agentd.v1.AgentService",
    "agentd.v1.EmbeddingService",
    "agentd.v1.MemoryService",
    "agentd.v1.QueryControlService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

#[tokio::test]
async fn v1_lists_every_service_and_describes_them() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "agentd.v1.QueryControlService".into(),
            )),
        },
    ];
    let mut responses = client
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in EXPECTED {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .find(|f| f.name() == "agentd/v1/query.proto")
        .expect("query.proto is served");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "QueryControlService")
        .unwrap();
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for m in [
        "Session",
        "Attach",
        "Pause",
        "Resume",
        "SwitchModel",
        "Terminate",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn v1alpha_lists_every_service() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in &EXPECTED[..5] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await.unwrap();
}
