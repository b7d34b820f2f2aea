//! Graceful shutdown: health turns NOT_SERVING, new connections and calls are
//! refused, calls in flight finish within the grace period, and what runs
//! longer is cut when the grace period ends.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::sleep::{SleepService, sleep};
use crate::common::{TestServer, connect, test_config};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn in_flight_call_completes_and_new_calls_are_refused() {
    let (mut config, dir) = test_config();
    config.shutdown_grace = Duration::from_secs(10);
    let mut server = TestServer::start_with(config, dir, |s| s.add_service(SleepService)).await;
    let channel = server.channel().await;

    // A health watcher on its own connection sees the status change.
    let mut watch = HealthClient::new(connect(server.addr).await.unwrap())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let in_flight = tokio::spawn(sleep(channel.clone(), Duration::from_millis(1500)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.begin_shutdown();

    let update = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("health update within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);

    // The listening socket closes right after health flips: new
    // connections are refused.
    let deadline = Instant::now() + Duration::from_secs(2);
    while connect(server.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "new connections still accepted 2 s into shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the old connection takes no new calls.
    let refused = sleep(channel.clone(), Duration::from_millis(1))
        .await
        .unwrap_err();
    // After GOAWAY the client's HTTP/2 layer cancels the new stream, or it
    // reconnects and finds the port closed.
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{refused:?}"
    );

    let completed = in_flight.await.unwrap().expect("in-flight call completes");
    assert_eq!(completed, Duration::from_millis(1500));
    drop(watch);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn run_returns_when_the_grace_period_ends() {
    let (mut config, dir) = test_config();
    config.shutdown_grace = Duration::from_millis(500);
    let mut server = TestServer::start_with(config, dir, |s| s.add_service(SleepService)).await;
    let long_call = tokio::spawn(sleep(server.channel().await, Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.begin_shutdown();
    let started = Instant::now();
    server.stop().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "run took {took:?} to return"
    );
    assert!(
        !long_call.is_finished(),
        "the long call cannot have completed normally"
    );
    long_call.abort();
}

#[tokio::test]
async fn sigterm_stops_the_binary_after_the_grace_period() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--shutdown-grace",
            "1s",
            "--metrics-listen",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("AGENTD_CONFIG")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agentd");

    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        match connect(addr).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("agentd did not start: {e}"),
        }
    };
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "agentd.v1.MemoryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let pid = i32::try_from(child.id()).unwrap();
    let rc = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let sent = Instant::now();

    let update = watch.message().await.unwrap().unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // The watch never ends on its own: the grace period cuts it.
    let end = watch.message().await;
    assert!(
        !matches!(end, Ok(Some(_))),
        "no further update expected: {end:?}"
    );

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "agentd still running 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "agentd exited with {status}");
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "exited before the grace period"
    );
}
