//! Helpers for QueryControlService tests: a server whose model aliases
//! point at a [`FakeLlm`], a Session stream driver, and a checker of the
//! session invariants (issue #5, point 1).

#![allow(dead_code)]

use std::time::Duration;

use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use agentd::query::{ModelAliasSpec, ProviderKind};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::fake_llm::FakeLlm;
use super::{TestServer, test_config};

/// An alias served by the fake.
pub fn alias(
    fake: &FakeLlm,
    alias: &str,
    provider: ProviderKind,
    model_id: &str,
    fallbacks: &[&str],
) -> ModelAliasSpec {
    ModelAliasSpec {
        alias: alias.into(),
        provider,
        model_id: model_id.into(),
        base_url: Some(match provider {
            ProviderKind::Anthropic => fake.anthropic_url(),
            _ => fake.openai_url(),
        }),
        api_key_env: None,
        api_key_file: None,
        path: None,
        context_window: 8192,
        input_cost_per_token_usd: 1e-6,
        output_cost_per_token_usd: 2e-6,
        fallbacks: fallbacks.iter().map(|s| (*s).to_owned()).collect(),
        supports_tools: None,
    }
}

/// The aliases every query test uses.
pub fn aliases(fake: &FakeLlm, key_file: &std::path::Path) -> Vec<ModelAliasSpec> {
    use ProviderKind::{Anthropic, Openai};
    let mut an = alias(fake, "an", Anthropic, "echo", &[]);
    an.api_key_file = Some(key_file.to_owned());
    let mut an_slow = alias(fake, "an-slow", Anthropic, "slow", &[]);
    an_slow.api_key_file = Some(key_file.to_owned());
    let mut an_drop = alias(fake, "an-drop", Anthropic, "drop@15", &["oa"]);
    an_drop.api_key_file = Some(key_file.to_owned());
    let mut an_overload = alias(fake, "an-overload", Anthropic, "overload@10", &["oa"]);
    an_overload.api_key_file = Some(key_file.to_owned());
    let mut nokey = alias(fake, "nokey", Anthropic, "echo", &[]);
    nokey.api_key_env = Some("AGENTD_TEST_KEY_THAT_IS_NOT_SET".into());
    vec![
        alias(fake, "oa", Openai, "echo", &[]),
        alias(fake, "oa-2", Openai, "echo-2", &[]),
        alias(fake, "oa-slow", Openai, "slow", &[]),
        alias(fake, "oa-overload", Openai, "overload@20", &["an"]),
        alias(fake, "oa-down", Openai, "status@503", &["an"]),
        alias(fake, "oa-bad", Openai, "status@400", &[]),
        alias(fake, "mute", Openai, "mute", &[]),
        alias(fake, "all-fail", Openai, "overload@5", &["oa-down"]),
        an,
        an_slow,
        an_drop,
        an_overload,
        nokey,
    ]
}

/// A server with the fake's aliases, fast retries and a short first-token
/// timeout.
pub async fn start_server(fake: &FakeLlm) -> (TestServer, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (mut config, dir) = test_config();
    let key_file = keys.path().join("anthropic.key");
    std::fs::write(&key_file, "test-key-123\n").unwrap();
    config.query.models = Some(aliases(fake, &key_file));
    config.query.retry_backoff = Duration::from_millis(5);
    config.query.max_retries = 1;
    config.query.first_token_timeout = Duration::from_secs(5);
    config.query.cooldown = Duration::ZERO;
    config.validate().unwrap();
    (TestServer::start_with(config, dir, |s| s).await, keys)
}

/// A user message.
pub fn user(text: &str) -> Message {
    Message {
        role: Role::User as i32,
        content: text.into(),
        ..Default::default()
    }
}

/// A Start for `model` with the cache off (so every query generates).
pub fn start(model: &str) -> StartCommand {
    StartCommand {
        model: model.into(),
        messages: vec![user("count")],
        cache: Some(CachePolicy {
            mode: CacheMode::Off as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An open Session stream.
pub struct Session {
    pub commands: mpsc::Sender<SessionRequest>,
    pub events: tonic::Streaming<SessionResponse>,
    pub seen: Vec<SessionEvent>,
}

impl Session {
    /// Opens a session and sends `start`.
    pub async fn open(channel: Channel, start: StartCommand) -> Result<Session, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(SessionRequest {
            command: Some(Command::Start(start)),
        })
        .await
        .unwrap();
        let mut client = QueryControlServiceClient::new(channel);
        let events = client.session(tokio_stream_from(rx)).await?.into_inner();
        Ok(Session {
            commands: tx,
            events,
            seen: Vec::new(),
        })
    }

    /// Sends a command.
    pub async fn send(&self, command: Command) {
        self.commands
            .send(SessionRequest {
                command: Some(command),
            })
            .await
            .unwrap();
    }

    /// The next event (within 10 s), also kept in `seen`.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        let event = tokio::time::timeout(Duration::from_secs(10), self.events.message())
            .await
            .expect("an event within 10 s")
            .expect("stream ok")?
            .event
            .expect("event set");
        self.seen.push(event.clone());
        Some(event)
    }

    /// Reads until an event `until` matches; returns it.
    pub async fn until(&mut self, until: impl Fn(&Kind) -> bool) -> SessionEvent {
        loop {
            let e = self.next().await.expect("stream ended early");
            if until(e.kind.as_ref().unwrap()) {
                return e;
            }
        }
    }

    /// Closes the client's side of the stream (no more commands), as a
    /// client does on the final event: the server then ends the stream at
    /// once instead of after its grace period.
    pub fn close(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.commands, closed));
    }

    /// Closes the command side (see [`Session::close`]; the query goes on)
    /// and reads to the end of the stream.
    pub async fn finish(&mut self) -> Vec<SessionEvent> {
        self.close();
        while self.next().await.is_some() {}
        self.seen.clone()
    }

    /// The query id from the Started event.
    pub fn query_id(&self) -> String {
        self.seen[0].query_id.clone()
    }
}

/// A futures stream from a receiver (tonic takes any Stream).
pub fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The concatenated delta text of `events`.
pub fn text_of(events: &[SessionEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Delta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

/// Checks the invariants of point 1 over a whole Session (or Attach)
/// stream from its start; returns the final text.
pub fn check_invariants(events: &[SessionEvent]) -> String {
    let mut next_seq = 1;
    let mut paused = false;
    let mut model = String::new();
    let mut text = String::new();
    let mut ended = false;
    let mut calls = std::collections::HashSet::new();
    let mut answered = std::collections::HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert!(!ended, "event after the final one: {e:?}");
        assert_eq!(e.event_index, i as u64 + 1, "event indexes have no gaps");
        match e.kind.as_ref().expect("kind") {
            Kind::Started(s) => {
                assert_eq!(i, 0, "Started comes first");
                model = s.model.clone();
            }
            Kind::Delta(d) => {
                assert!(!paused, "delta {} arrived while paused", d.seq);
                assert_eq!(
                    d.seq, next_seq,
                    "deltas are numbered 1, 2, 3 with no gaps or repeats"
                );
                assert_eq!(d.model, model, "delta {} from the current model", d.seq);
                next_seq += 1;
                text.push_str(&d.text);
            }
            Kind::Paused(p) => {
                assert!(!paused, "paused twice");
                assert_eq!(p.seq, next_seq - 1, "Paused carries the last seq");
                paused = true;
            }
            Kind::Resumed(r) => {
                assert!(paused, "resumed while running");
                assert_eq!(r.seq, next_seq - 1);
                assert_eq!(r.model, model);
                paused = false;
            }
            Kind::ModelSwitched(m) => {
                assert_eq!(m.from_model, model, "switch from the current model");
                assert_eq!(m.seq, next_seq - 1, "switch recorded at the last seq");
                model = m.to_model.clone();
            }
            Kind::Completed(c) => {
                assert_eq!(
                    c.text, text,
                    "the final text is the concatenation of the deltas"
                );
                ended = true;
            }
            Kind::Terminated(t) => {
                assert_eq!(t.text, text);
                assert_eq!(t.seq, next_seq - 1);
                ended = true;
            }
            Kind::Failed(_) => ended = true,
            Kind::ToolCall(c) => {
                assert_eq!(c.seq, next_seq - 1, "a tool call follows the last delta");
                assert!(
                    calls.insert(c.call_id.clone()),
                    "tool call {} recorded twice",
                    c.call_id
                );
            }
            Kind::ToolResult(r) => {
                assert!(
                    calls.contains(&r.call_id),
                    "result for unknown call {}",
                    r.call_id
                );
                assert!(
                    answered.insert(r.call_id.clone()),
                    "tool call {} answered twice",
                    r.call_id
                );
            }
            _ => {}
        }
    }
    text
}

/// Every event of query `id` from delta `from_seq` on, through Attach, to
/// the query's end.
pub async fn attach_all(
    channel: Channel,
    id: impl Into<String>,
    from_seq: u64,
) -> Vec<SessionEvent> {
    let mut stream = client(channel)
        .attach(AttachRequest {
            query_id: id.into(),
            from_seq,
        })
        .await
        .expect("attach")
        .into_inner();
    let mut events = Vec::new();
    while let Some(m) = stream.message().await.expect("attach stream") {
        events.push(m.event.expect("event set"));
    }
    events
}

/// GetQuery of `id`.
pub async fn query_info(
    mut client: QueryControlServiceClient<Channel>,
    id: impl Into<String>,
    include_text: bool,
) -> QueryInfo {
    client
        .get_query(GetQueryRequest {
            query_id: id.into(),
            include_text,
        })
        .await
        .expect("GetQuery")
        .into_inner()
        .query
        .expect("query set")
}

/// The configured model aliases.
pub async fn list_models(channel: Channel) -> Vec<ModelAlias> {
    client(channel)
        .list_query_models(ListQueryModelsRequest {})
        .await
        .expect("ListQueryModels")
        .into_inner()
        .models
}

/// One page of ListQueries (`state` 0: any).
pub async fn list_queries(
    channel: Channel,
    state: i32,
    page_size: u32,
    page_token: String,
) -> Result<ListQueriesResponse, tonic::Status> {
    client(channel)
        .list_queries(ListQueriesRequest {
            state,
            page_size,
            page_token,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A query client.
pub fn client(channel: Channel) -> QueryControlServiceClient<Channel> {
    QueryControlServiceClient::new(channel)
}
