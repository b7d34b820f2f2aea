//! RPCs whose engine is not built yet answer UNIMPLEMENTED naming the engine,
//! with a NOT_IMPLEMENTED ErrorInfo, never a fake success.

use crate::common::TestServer;
use agentd::pb::v1::*;
use tonic_types::StatusExt;

fn assert_not_built(status: tonic::Status, engine: &str, method: &str) {
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains(engine), "{}", status.message());
    assert!(status.message().contains(method), "{}", status.message());
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "NOT_IMPLEMENTED");
    assert_eq!(info.domain, "agentd.dev");
    assert_eq!(
        info.metadata.get("engine").map(String::as_str),
        Some(engine)
    );
}

#[tokio::test]
async fn every_service_names_its_missing_engine() {
    let server = TestServer::start().await;
    let channel = server.channel().await;

    // The agents engine serves specs, agents, tasks, workers and events;
    // swarms are still to come.
    let mut agents = agent_service_client::AgentServiceClient::new(channel.clone());
    let err = agents
        .create_swarm(CreateSwarmRequest::default())
        .await
        .unwrap_err();
    assert_not_built(err, "agents engine", "agentd.v1.AgentService/CreateSwarm");
    let err = agents
        .list_swarms(ListSwarmsRequest::default())
        .await
        .unwrap_err();
    assert_not_built(err, "agents engine", "agentd.v1.AgentService/ListSwarms");

    server.stop().await.unwrap();
}
