//! OpenTelemetry traces: the real binary exports its spans over OTLP/gRPC
//! to a collector run here (the real `TraceService`), continuing the
//! caller's W3C `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentd::pb::v1 as pb;
use agentd::pb::v1::embedding_service_client::EmbeddingServiceClient;
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::Request;

use crate::common::binary::{Binary, ConfigFile};
use crate::common::fake_llm::FakeLlm;
use crate::common::points::{points_from, search, vectors};

/// Keeps every span it receives, with its resource's service.name.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traced<T>(message: T, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

// Multi-threaded: the collector must answer while the test waits for the
// server to exit (its last spans are flushed then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_exported_as_spans_with_their_engine_children_continuing_traceparent() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let fake = FakeLlm::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigFile::new()
        .hash_embeddings()
        .fake_model("fake", &fake.openai_url())
        .write(dir.path());
    let endpoint = format!("http://{otlp}");
    let log_path = dir.path().join("agentd.log");
    let (server, channel) = Binary::start_logging(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--otlp-endpoint",
            &endpoint,
        ],
        std::fs::File::create(&log_path).unwrap(),
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let mut memory = MemoryServiceClient::new(channel.clone());
    memory
        .create_collection(pb::CreateCollectionRequest {
            name: "docs".into(),
            dimensions: 4,
            metric: pb::Metric::L2 as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let v = vectors(5, 4, 5);
    memory
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: points_from(0, &v),
        })
        .await
        .unwrap();
    memory
        .search(traced(search("docs", &v[0], 2), &traceparent))
        .await
        .unwrap();
    EmbeddingServiceClient::new(channel.clone())
        .embed(pb::EmbedRequest {
            inputs: vec!["traced".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let start = pb::SessionRequest {
        command: Some(pb::session_request::Command::Start(
            crate::common::sessions::start("fake"),
        )),
    };
    let mut events = QueryControlServiceClient::new(channel.clone())
        .session(futures::stream::iter(vec![start]))
        .await
        .unwrap()
        .into_inner();
    while events.message().await.unwrap().is_some() {}

    // SIGTERM flushes the spans still batched; the client's connection
    // goes first, so shutdown waits for no call.
    drop((memory, events, channel));
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let spans = collector.spans.lock().unwrap().clone();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!spans.is_empty(), "no spans received; agentd's log:\n{log}");
    serving.abort();
    assert!(spans.iter().all(|(service, _)| service == "agentd"));
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let rpc = |method: &str| -> &Span {
        named("rpc")
            .into_iter()
            .find(|s| attribute(s, "method").as_deref() == Some(method))
            .unwrap_or_else(|| panic!("no rpc span for {method} in {spans:#?}"))
    };

    // The search continues the caller's trace, under the caller's span.
    let searched = rpc("/agentd.v1.MemoryService/Search");
    assert_eq!(hex(&searched.trace_id), trace_id);
    assert_eq!(hex(&searched.parent_span_id), caller_span);
    assert_eq!(
        attribute(searched, "resource").as_deref(),
        Some("collection:docs")
    );
    assert_eq!(attribute(searched, "code").as_deref(), Some("Ok"));
    let faiss = named("memory.search");
    assert_eq!(faiss.len(), 1);
    assert_eq!(faiss[0].parent_span_id, searched.span_id);
    assert_eq!(faiss[0].trace_id, searched.trace_id);

    // A call without traceparent starts its own trace; its children too.
    let embedded = rpc("/agentd.v1.EmbeddingService/Embed");
    assert_ne!(hex(&embedded.trace_id), trace_id);
    assert!(embedded.parent_span_id.is_empty());
    let batch = named("embedding.batch");
    assert!(batch.iter().any(|b| b.parent_span_id == embedded.span_id));
    assert!(attribute(batch[0], "compute_ms").is_some());

    // A query's model request is a grandchild of its Session call, with
    // its time to first token.
    let session = rpc("/agentd.v1.QueryControlService/Session");
    let query = named("query");
    assert_eq!(query.len(), 1);
    assert_eq!(query[0].parent_span_id, session.span_id);
    let request = named("model.request");
    assert!(!request.is_empty());
    assert_eq!(request[0].parent_span_id, query[0].span_id);
    assert_eq!(attribute(request[0], "model").as_deref(), Some("fake"));
    let first_token: f64 = attribute(request[0], "first_token_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_token >= 0.0);
}
