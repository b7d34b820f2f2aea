//! A Session stream as the query benchmarks drive it: the Start sent, the
//! command side kept open for more, events read one by one.

#![allow(dead_code)] // each bench uses part of it

use std::time::Instant;

use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::{SessionRequest, SessionResponse, StartCommand};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// An open Session stream.
pub struct Open {
    pub commands: mpsc::Sender<SessionRequest>,
    pub events: tonic::Streaming<SessionResponse>,
}

/// Opens a Session on `channel` and sends `start`.
pub async fn open(channel: &Channel, start: StartCommand) -> Open {
    let (tx, mut rx) = mpsc::channel(8);
    tx.send(SessionRequest {
        command: Some(Command::Start(start)),
    })
    .await
    .unwrap();
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let events = QueryControlServiceClient::new(channel.clone())
        .session(stream)
        .await
        .expect("session")
        .into_inner();
    Open {
        commands: tx,
        events,
    }
}

impl Open {
    /// Closes the command side, as a client does once it has nothing more
    /// to send: the server ends the stream at once instead of after its
    /// one-second grace.
    pub fn close(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.commands, closed));
    }

    /// The next event's kind; None at the end of the stream.
    pub async fn next(&mut self) -> Option<Kind> {
        self.events.message().await.expect("stream ok")?.event?.kind
    }

    /// The next event's kind and when it arrived.
    pub async fn next_timed(&mut self) -> Option<(Kind, Instant)> {
        let kind = self.next().await?;
        Some((kind, Instant::now()))
    }

    /// Closes the command side and reads to the end; the last event.
    pub async fn finish(mut self) -> Kind {
        self.close();
        let mut last = None;
        while let Some(kind) = self.next().await {
            last = Some(kind);
        }
        last.expect("a final event")
    }
}
