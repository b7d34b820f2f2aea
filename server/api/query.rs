//! `agentd.v1.QueryControlService`: validate, convert, call the query
//! engine, convert back.
//!
//! A Session stream is two halves: a task reads the client's commands and
//! hands them to the engine (a refused command becomes a
//! `command_rejected` event in the log, so the client sees it in order),
//! and the response is the query's log followed from its start. The query
//! belongs to the engine, not to the stream: when the client goes away the
//! query runs on (Attach finds it) unless `terminate_on_disconnect` was set.

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::ResponseStream;

/// How long a Session stream stays open after its final event for the
/// client to half-close its side.
const HALF_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
use super::query_convert::{self as convert, message_from, reason_from, start_from};
use crate::error::Error;
use crate::pb::v1::query_control_service_server::QueryControlService;
use crate::pb::v1::session_request::Command;
use crate::pb::v1::*;
use crate::query::QueryEngine;
use crate::query::events::{EventKind, QueryError};
use crate::query::types::Role;

/// The QueryControlService handlers.
#[derive(Debug, Clone)]
pub struct QueryApi {
    engine: QueryEngine,
}

impl QueryApi {
    /// Serves `engine`.
    pub fn new(engine: QueryEngine) -> Self {
        Self { engine }
    }
}

/// Runs a closure when dropped: how a response stream learns that its
/// client went away.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Applies one command of a Session stream to query `id`.
async fn apply(engine: &QueryEngine, id: &str, command: Option<Command>) -> Result<(), Error> {
    match command {
        None => Err(Error::invalid("command", "must be set")),
        Some(Command::Start(_)) => Err(Error::WrongState(format!(
            "this stream already started query {id}; open another stream for another query"
        ))),
        Some(Command::Pause(_)) => engine.pause(id).await.map(drop),
        Some(Command::Resume(r)) => {
            let model = (!r.model.is_empty()).then_some(r.model);
            engine.resume(id, model).await.map(drop)
        }
        Some(Command::SwitchModel(s)) => {
            if s.model.is_empty() {
                return Err(Error::invalid(
                    "switch_model.model",
                    "must name a model alias",
                ));
            }
            engine.switch_model(id, s.model).await.map(drop)
        }
        Some(Command::Inject(i)) => {
            let message = message_from(
                i.message.unwrap_or_default(),
                "inject.message",
                &[Role::User, Role::System],
            )?;
            engine.inject(id, message).await.map(drop)
        }
        Some(Command::Terminate(t)) => {
            let reason = reason_from(t.reason, "terminate.reason")?;
            engine.terminate(id, reason).await.map(drop)
        }
    }
}

fn required_model(model: String, field: &str) -> Result<String, Status> {
    if model.is_empty() {
        return Err(Error::invalid(field, "must name a model alias").into());
    }
    Ok(model)
}

#[tonic::async_trait]
impl QueryControlService for QueryApi {
    type SessionStream = ResponseStream<SessionResponse>;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Status::from(Error::invalid(
                "command",
                "a Session stream must start with a start command",
            ))
        })?;
        let Some(Command::Start(start)) = first.command else {
            return Err(Error::invalid(
                "command",
                "the first message of a Session stream must be start",
            )
            .into());
        };
        let terminate_on_disconnect = start.terminate_on_disconnect;
        let query = self.engine.start(start_from(start)?).await?;
        let id = query.id();

        let engine = self.engine.clone();
        let (commands_id, commands_query) = (id.clone(), query.clone());
        let (half_closed_tx, half_closed) = tokio::sync::oneshot::channel::<()>();
        let commands = tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                if let Err(e) = apply(&engine, &commands_id, message.command).await {
                    let error = QueryError::from(&e);
                    commands_query.push_unless_finished(EventKind::CommandRejected { error });
                }
            }
            let _ = half_closed_tx.send(());
        });
        let engine = self.engine.clone();
        let guard_id = id.clone();
        let guard = OnDrop(Some(move || {
            commands.abort();
            if terminate_on_disconnect {
                tokio::spawn(async move {
                    let _ = engine
                        .terminate(&guard_id, "client disconnected".to_owned())
                        .await;
                });
            }
        }));
        // After the final event, hold the stream open until the client
        // half-closes its side (bounded): ending a stream whose request side
        // is still open makes the server reset it (RST_STREAM NO_ERROR), and
        // Node's HTTP/2 client then sometimes fails the whole call with
        // "Premature close" although every event arrived.
        // The disconnect guard lives in this tail, which is dropped last
        // (or with the whole stream when the client goes away).
        let half_closed = futures::stream::once(async move {
            let _keep = guard;
            let _ = tokio::time::timeout(HALF_CLOSE_GRACE, half_closed).await;
        })
        .filter_map(|()| std::future::ready(None));
        let events = query
            .follow(0)
            .map(move |e| {
                Ok(SessionResponse {
                    event: Some(convert::event(&id, e)),
                })
            })
            .chain(half_closed);
        Ok(Response::new(Box::pin(events)))
    }

    type AttachStream = ResponseStream<AttachResponse>;

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let r = request.into_inner();
        let events = self.engine.attach(&r.query_id, r.from_seq).await?;
        let id = r.query_id;
        let events = events.map(move |e| {
            Ok(AttachResponse {
                event: Some(convert::event(&id, e)),
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn pause(
        &self,
        request: Request<PauseRequest>,
    ) -> Result<Response<PauseResponse>, Status> {
        let seq = self.engine.pause(&request.into_inner().query_id).await?;
        Ok(Response::new(PauseResponse { seq }))
    }

    async fn resume(
        &self,
        request: Request<ResumeRequest>,
    ) -> Result<Response<ResumeResponse>, Status> {
        let r = request.into_inner();
        let model = (!r.model.is_empty()).then_some(r.model);
        let model = self.engine.resume(&r.query_id, model).await?;
        Ok(Response::new(ResumeResponse { model }))
    }

    async fn switch_model(
        &self,
        request: Request<SwitchModelRequest>,
    ) -> Result<Response<SwitchModelResponse>, Status> {
        let r = request.into_inner();
        let model = required_model(r.model, "model")?;
        let (from_model, seq) = self.engine.switch_model(&r.query_id, model).await?;
        Ok(Response::new(SwitchModelResponse { from_model, seq }))
    }

    async fn terminate(
        &self,
        request: Request<TerminateRequest>,
    ) -> Result<Response<TerminateResponse>, Status> {
        let r = request.into_inner();
        let reason = reason_from(r.reason, "reason")?;
        let seq = self.engine.terminate(&r.query_id, reason).await?;
        Ok(Response::new(TerminateResponse { seq }))
    }

    async fn get_query(
        &self,
        request: Request<GetQueryRequest>,
    ) -> Result<Response<GetQueryResponse>, Status> {
        let r = request.into_inner();
        let (info, text) = self.engine.get(&r.query_id).await?;
        let text = r.include_text.then_some(text);
        Ok(Response::new(GetQueryResponse {
            query: Some(convert::info(info, text)),
        }))
    }

    async fn list_queries(
        &self,
        request: Request<ListQueriesRequest>,
    ) -> Result<Response<ListQueriesResponse>, Status> {
        let r = request.into_inner();
        let state = convert::state_filter(r.state)?;
        let max = crate::query::engine::MAX_PAGE_SIZE;
        let page_size = match r.page_size as usize {
            0 => 100,
            n if n > max => {
                return Err(
                    Error::invalid("page_size", format!("must be at most {max}, got {n}")).into(),
                );
            }
            n => n,
        };
        let (queries, next) = self.engine.list(state, page_size, &r.page_token).await?;
        Ok(Response::new(ListQueriesResponse {
            queries: queries
                .into_iter()
                .map(|i| convert::info(i, None))
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_query_stats(
        &self,
        _: Request<GetQueryStatsRequest>,
    ) -> Result<Response<GetQueryStatsResponse>, Status> {
        let s = self.engine.stats();
        Ok(Response::new(GetQueryStatsResponse {
            running: s.running,
            paused: s.paused,
            started: s.started,
            exact_cache_hits: s.exact_hits,
            exact_cache_misses: s.exact_misses,
            semantic_cache_hits: s.semantic_hits,
            semantic_cache_misses: s.semantic_misses,
            cache_hit_rate: s.hit_rate(),
        }))
    }

    async fn list_query_models(
        &self,
        _: Request<ListQueryModelsRequest>,
    ) -> Result<Response<ListQueryModelsResponse>, Status> {
        Ok(Response::new(ListQueryModelsResponse {
            models: self
                .engine
                .models()
                .into_iter()
                .map(convert::model)
                .collect(),
        }))
    }
}
