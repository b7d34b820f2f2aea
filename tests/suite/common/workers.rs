//! A Work stream driven by hand, for tests of external workers: hello,
//! what the server sends (within a deadline), reports, and heartbeats that
//! can be stopped (as SIGSTOP would) or the whole stream dropped (as
//! SIGKILL would).

#![allow(dead_code)]

use std::time::Duration;

use agentd::pb::v1::agent_service_client::AgentServiceClient;
use agentd::pb::v1::work_request::Message;
use agentd::pb::v1::work_response::Directive;
use agentd::pb::v1::*;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

/// One worker connection.
pub struct TestWorker {
    tx: mpsc::UnboundedSender<WorkRequest>,
    rx: Streaming<WorkResponse>,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
    /// The agent it serves.
    pub agent_id: String,
    /// Its `registered` answer.
    pub registered: WorkerRegistered,
}

/// Opens a Work stream whose first message is `first` (normally a hello);
/// the server's refusal, if any.
pub async fn open(
    channel: Channel,
    first: WorkRequest,
) -> Result<(mpsc::UnboundedSender<WorkRequest>, Streaming<WorkResponse>), tonic::Status> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tx.send(first).unwrap();
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let response = AgentServiceClient::new(channel).work(stream).await?;
    Ok((tx, response.into_inner()))
}

/// A hello message.
pub fn hello(spec: &str, agent_id: &str, max: u32) -> WorkRequest {
    WorkRequest {
        message: Some(Message::Hello(WorkerHello {
            spec_name: spec.into(),
            agent_id: agent_id.into(),
            max_concurrent_tasks: max,
            ..Default::default()
        })),
    }
}

impl TestWorker {
    /// Connects as a new agent of `spec` (or reattaches as `agent_id`).
    pub async fn connect(channel: Channel, spec: &str, agent_id: &str) -> TestWorker {
        let (tx, mut rx) = open(channel, hello(spec, agent_id, 0))
            .await
            .expect("Work accepted");
        let first = next_of(&mut rx).await.expect("registered");
        let Some(Directive::Registered(registered)) = first.directive else {
            panic!("first directive is not registered: {first:?}");
        };
        TestWorker {
            tx,
            rx,
            heartbeats: None,
            agent_id: registered.agent_id.clone(),
            registered,
        }
    }

    /// Heartbeats every `every` in the background until stopped.
    pub fn heartbeat_every(&mut self, every: Duration) {
        let tx = self.tx.clone();
        self.heartbeats = Some(tokio::spawn(async move {
            loop {
                if tx.send(heartbeat(Vec::new())).is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }));
    }

    /// Stops the background heartbeats (the worker goes silent).
    pub fn stop_heartbeats(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }

    /// Sends one message.
    pub fn send(&self, message: Message) {
        self.tx
            .send(WorkRequest {
                message: Some(message),
            })
            .expect("stream open");
    }

    /// The next directive (within 10 s), or the stream's error.
    pub async fn next(&mut self) -> Result<Directive, tonic::Status> {
        let message = next_of(&mut self.rx).await?;
        Ok(message.directive.expect("directive set"))
    }

    /// The next assignment (skipping acks).
    pub async fn assignment(&mut self) -> TaskAssignment {
        loop {
            match self.next().await.expect("stream open") {
                Directive::Assign(a) => return a,
                Directive::Ack(_) => continue,
                other => panic!("expected an assignment, got {other:?}"),
            }
        }
    }

    /// The next ack (skipping nothing).
    pub async fn ack(&mut self) -> WorkAck {
        match self.next().await.expect("stream open") {
            Directive::Ack(a) => a,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Sends a result and reads its ack.
    pub async fn result(&mut self, task_id: &str, attempt: u32, text: &str) -> WorkAck {
        self.send(Message::Result(TaskResult {
            task_id: task_id.into(),
            output_text: text.into(),
            attempt,
            ..Default::default()
        }));
        self.ack().await
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop_heartbeats();
    }
}

/// A heartbeat carrying `checkpoints`.
pub fn heartbeat(checkpoints: Vec<TaskCheckpoint>) -> WorkRequest {
    WorkRequest {
        message: Some(Message::Heartbeat(WorkerHeartbeat { checkpoints })),
    }
}

async fn next_of(rx: &mut Streaming<WorkResponse>) -> Result<WorkResponse, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), rx.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(tonic::Status::cancelled("the stream ended")),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("nothing from the server within 10 s"),
    }
}
