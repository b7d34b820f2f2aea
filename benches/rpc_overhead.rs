//! Round-trip cost of the gRPC stack itself: a health check over loopback
//! against an in-process server, the floor every agentd RPC pays.
//!
//! `cargo bench --bench rpc_overhead`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn health_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (client, stop) = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = agentd::config::Config {
            data_dir: dir.keep().join("data"),
            metrics_listen: None,
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(agentd::server::run(config, listener, async {
            let _ = rx.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        (HealthClient::new(channel), tx)
    });
    c.bench_function("grpc health check round trip (loopback)", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = client.clone();
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap()
            }
        });
    });
    let _ = stop.send(());
}

criterion_group!(benches, health_check);
criterion_main!(benches);
