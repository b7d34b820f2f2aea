//! Each RPC runs in a span that names its method, a request id, the
//! resource it is about and its final status code, and its end is logged:
//! checked on the real binary's JSON log.

use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::{GetRequest, PutRequest};
use serde_json::Value;

use crate::common::binary::Binary;

/// The "rpc finished" lines of a JSON log: the span of each.
fn finished_rpcs(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["message"] == "rpc finished")
        .map(|v| v["span"].clone())
        .collect()
}

#[tokio::test]
async fn each_rpc_is_logged_with_its_method_resource_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("agentd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let args = [
        "--disable",
        "embedding,query,agents",
        "--log-format",
        "json",
        "--log",
        "agentd=debug",
    ];
    let (binary, channel) = Binary::start_logging(&data, &args, log).await;
    let mut memory = MemoryServiceClient::new(channel);
    memory
        .put(PutRequest {
            namespace: "notes".into(),
            key: "k".into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let missing = memory
        .get(GetRequest {
            namespace: "notes".into(),
            key: "absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // Stopping blocks: on another thread, so that this runtime can close
    // the client's connection meanwhile (the server waits for it).
    drop(memory);
    tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let rpcs = finished_rpcs(&log);
    let put = rpcs
        .iter()
        .find(|s| s["method"] == "/agentd.v1.MemoryService/Put")
        .unwrap_or_else(|| panic!("no Put in the log:\n{log}"));
    assert_eq!(put["resource"], "namespace:notes", "{put}");
    assert_eq!(put["code"], "Ok", "{put}");
    assert!(
        put["request_id"].as_str().is_some_and(|id| id.len() == 26),
        "a ULID request id: {put}"
    );
    let get = rpcs
        .iter()
        .find(|s| s["method"] == "/agentd.v1.MemoryService/Get")
        .unwrap_or_else(|| panic!("no Get in the log:\n{log}"));
    assert_eq!(get["code"], "NotFound", "{get}");
    assert_ne!(put["request_id"], get["request_id"]);
}
