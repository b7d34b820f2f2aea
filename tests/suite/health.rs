//! grpc.health.v1: the whole server and each service by its full name.

use crate::common::{TestServer, test_config};
use agentd::config::{Config, ServiceKind};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 4] = [
    "agentd.v1.EmbeddingService",
    "agentd.v1.MemoryService",
    "agentd.v1.QueryControlService",
    "agentd.v1.AgentService",
];

async fn status_of(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn whole_server_and_every_built_service_are_serving() {
    let server = TestServer::start().await;
    let mut client = HealthClient::new(server.channel().await);
    assert_eq!(
        status_of(&mut client, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    for service in SERVICES {
        assert_eq!(
            status_of(&mut client, service).await.unwrap(),
            ServingStatus::Serving as i32,
            "{service}"
        );
    }
    let unknown = status_of(&mut client, "agentd.v1.NoSuchService")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_disabled_service_is_neither_served_nor_reported() {
    let (config, dir) = test_config();
    let config = Config {
        services: {
            let mut s = config.services;
            s.memory = false;
            s
        },
        ..config
    };
    assert!(!config.services.enabled(ServiceKind::Memory));
    let server = TestServer::start_with(config, dir, |s| s).await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let err = status_of(&mut health, "agentd.v1.MemoryService")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        status_of(&mut health, "agentd.v1.QueryControlService")
            .await
            .unwrap(),
        ServingStatus::Serving as i32
    );
    let mut memory = agentd::pb::v1::memory_service_client::MemoryServiceClient::new(channel);
    let err = memory
        .get(agentd::pb::v1::GetRequest::default())
        .await
        .unwrap_err();
    // No route at all: tonic answers UNIMPLEMENTED without our engine message.
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        !err.message().contains("memory engine"),
        "{}",
        err.message()
    );
    server.stop().await.unwrap();
}
